"""Classifying many videos: a labelled split one at a time, or any sources in pipelined batches.

``classify_split(classifier, samples)`` classifies a split's videos in order, one at a time, as the
competition timed them: evaluation, the bad-case analysis, hard-set mining and fusion all use it.
``classify_many(classifier, sources)`` keeps a window of decodes running in a thread pool (PyAV
releases the GIL while FFmpeg decodes and scales) and, on the calling thread, runs the model on
batches of decoded videos with ``Classifier.scores_many``. Both give one result per video, in input
order, under one failure policy: a video that fails to decode is reported with its typed error
(``DecodeError``), one the model fails on with an ``InferenceError``, and the others go on.

The model runs on the caller's thread on purpose: on the machines we measured, a PyTorch CPU model
called from a secondary thread ran slower than from the main thread (docs/benchmark-history.md).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from ..data.annotations import Sample
from ..decode import Clip, Source
from ..errors import DecodeError, InferenceError, ShortvidError, UnexpectedDecodeError
from .classifier import Classifier, Prediction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What happened to one source: a prediction, or the error that stopped it."""

    source: Source
    prediction: Prediction | None = None
    error: ShortvidError | None = None

    def to_dict(self) -> dict:
        if self.error is not None:
            return {"path": _name(self.source), "error": self.error.to_dict()}
        return {"path": _name(self.source), **self.prediction.to_dict()}


@dataclass
class PipelineStats:
    """Where a ``classify_many`` call spent its time. Stage sums are in ms over all videos; ``wait``
    is time the model thread sat idle waiting for a decode (what the pipeline failed to hide)."""

    videos: int = 0
    failed: int = 0
    batches: int = 0
    wall_s: float = 0.0
    stage_ms: dict[str, float] = field(default_factory=lambda: {"decode": 0.0, "wait": 0.0, "preprocess": 0.0,
                                                                  "model": 0.0})

    @property
    def videos_per_s(self) -> float:
        return self.videos / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict:
        per_video = {stage: round(ms / self.videos, 2) if self.videos else 0.0 for stage, ms in self.stage_ms.items()}
        return {
            "videos": self.videos,
            "failed": self.failed,
            "batches": self.batches,
            "mean_batch": round((self.videos - self.failed) / self.batches, 2) if self.batches else 0.0,
            "wall_s": round(self.wall_s, 3),
            "videos_per_s": round(self.videos_per_s, 2),
            "ms_per_video": per_video,
        }


def _name(source: Source) -> str:
    """How a source is named in results and errors: its path, or what a file object calls itself."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return str(getattr(source, "name", "<bytes>"))


def _read(classifier: Classifier, source: Source, timeout: float | None) -> tuple[Clip | ShortvidError, float]:
    started = time.perf_counter()
    try:
        result: Clip | ShortvidError = classifier.read(source, timeout)
    except DecodeError as error:
        result = error
    except Exception as error:  # noqa: BLE001 - one unexpected failure must not end a batch of thousands
        result = UnexpectedDecodeError(_name(source), f"{type(error).__name__}: {error}")
    return result, (time.perf_counter() - started) * 1000


@dataclass(frozen=True)
class Classified:
    """One labelled video of ``classify_split``: its scores and the clip they came from, or the typed
    error that stopped it."""

    sample: Sample
    clip: Clip | None = None  # the frames the model saw; None when decoding failed
    scores: np.ndarray | None = None  # what ``score`` gave (``Classifier.scores``: [C]); None on an error
    timings: dict[str, float] = field(default_factory=dict)  # decode, preprocess, model, total (ms)
    error: ShortvidError | None = None  # DecodeError: the video; InferenceError: the model on it


Scorer = Callable[[Clip], tuple[np.ndarray, dict[str, float]]]


def classify_split(classifier: Classifier, samples: Iterable[Sample], *, score: Scorer | None = None,
                   timeout: float | None = 10.0, progress: bool = False,
                   desc: str = "classify") -> Iterator[Classified]:
    """Classify labelled videos (a split's ``Annotations.samples``) in order, one at a time: a ``Classified``
    each. Each is decoded by ``classifier.read`` (its run's FrameSpec, its decode limits, ``timeout``
    seconds) and scored by ``score`` (default ``classifier.scores``: class scores and the preprocess and
    model times; fusion passes its members' scores). A video that fails to decode comes back with its
    ``DecodeError``, one the model fails on with an ``InferenceError``; the rest go on. ``progress``: a
    progress bar named ``desc``."""
    from tqdm import tqdm

    score = score or classifier.scores
    for sample in tqdm(samples, desc=desc, unit="video", disable=not progress):
        clip, _ = _read(classifier, sample.path, timeout)
        if not isinstance(clip, Clip):
            yield Classified(sample, error=clip)
            continue
        try:
            scores, timings = score(clip)
        except Exception as error:  # noqa: BLE001 - a video that breaks the model fails alone
            yield Classified(sample, clip, error=_model_failed(sample.path, error))
            continue
        timings = {"decode": clip.decode_ms, **timings}
        timings["total"] = sum(timings.values())
        yield Classified(sample, clip, scores, timings)


def _model_failed(source: Source, error: Exception) -> InferenceError:
    return InferenceError(_name(source), f"the model failed: {type(error).__name__}: {error}")


def classify_many(
    classifier: Classifier,
    sources: Iterable[Source],
    *,
    batch_size: int = 8,
    workers: int | None = None,
    timeout: float | None = 10.0,
    stats: PipelineStats | None = None,
) -> Iterator[Outcome]:
    """Classify ``sources`` (paths, bytes or files) in input order, ``batch_size`` videos per model
    call, with ``workers`` decode threads (default: the CPU count, at most 4) running ahead.

    ``stats``, when given, is filled in as results are produced (per-stage sums, videos/s).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    workers = workers or min(4, os.cpu_count() or 1)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    stats = stats if stats is not None else PipelineStats()
    started = time.perf_counter()
    pending: deque[tuple[Source, Future]] = deque()
    remaining = iter(sources)
    ahead = batch_size + max(batch_size, 2 * workers)  # the batch being modelled, and the next
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shortvid-decode") as pool:
        try:
            while True:
                for source in remaining:
                    pending.append((source, pool.submit(_read, classifier, source, timeout)))
                    if len(pending) >= ahead:
                        break
                if not pending:
                    break
                batch = [pending.popleft() for _ in range(min(batch_size, len(pending)))]
                yield from _classify_batch(classifier, batch, stats)
                stats.wall_s = time.perf_counter() - started
        finally:
            for _, future in pending:
                future.cancel()


def _classify_batch(classifier: Classifier, batch: list[tuple[Source, Future]], stats: PipelineStats) -> list[Outcome]:
    waited = time.perf_counter()
    decoded = [(source, *future.result()) for source, future in batch]
    stats.stage_ms["wait"] += (time.perf_counter() - waited) * 1000
    outcomes = [None if isinstance(clip, Clip) else Outcome(source, error=clip) for source, clip, _ in decoded]
    # The k-th decoded clip is decoded[clip_at[k]].
    clip_at = [i for i, (_, clip, _) in enumerate(decoded) if isinstance(clip, Clip)]
    for result in score_clips(classifier, [decoded[i][1] for i in clip_at]):
        if isinstance(result, ClipFailure):
            source = decoded[clip_at[result.position]][0]
            outcomes[clip_at[result.position]] = Outcome(source, error=_model_failed(source, result.error))
            continue
        stats.batches += 1
        share = {stage: ms / len(result.positions) for stage, ms in result.timings.items()}
        for row, position in enumerate(result.positions):
            source, clip, decode_ms = decoded[clip_at[position]]
            labels, top = classifier.decide(result.scores[row])
            per_video = {"decode": decode_ms, **share}
            per_video["total"] = sum(per_video.values())
            outcomes[clip_at[position]] = Outcome(source, Prediction.of(clip, labels, top, per_video))
        for stage, ms in result.timings.items():
            stats.stage_ms[stage] += ms
    stats.videos += len(decoded)
    stats.failed += sum(outcome.error is not None for outcome in outcomes)
    stats.stage_ms["decode"] += sum(decode_ms for _, _, decode_ms in decoded)
    return outcomes


@dataclass(frozen=True)
class ModelCall:
    """One ``scores_many`` call that succeeded: the clips it scored, a row of scores each, its cost."""

    positions: tuple[int, ...]  # of the clips scored, in the list given to ``score_clips``
    scores: np.ndarray  # [len(positions), C], row i for the clip at positions[i]
    timings: dict[str, float]  # the call's preprocess and model ms
    started: float  # perf_counter when the call began
    seconds: float  # the call's wall time


@dataclass(frozen=True)
class ClipFailure:
    """A clip the model failed on when scored alone."""

    position: int  # in the list given to ``score_clips``
    error: Exception


def score_clips(classifier: Classifier, clips: Sequence[Clip]) -> Iterator[ModelCall | ClipFailure]:
    """Score ``clips`` in one model call; if that fails, one by one, so a clip that breaks the model
    fails alone. Yields each call that succeeded and each clip that failed alone, as they happen;
    every clip is in exactly one of them. The one fallback of ``classify_many`` and the service."""
    if not clips:
        return
    together = _model_call(classifier, clips, tuple(range(len(clips))))
    if isinstance(together, ModelCall):
        yield together
        return
    if len(clips) > 1:
        log.warning("a batch of %d clips failed; scoring them one by one", len(clips), exc_info=together)
    for position in range(len(clips)):
        alone = together if len(clips) == 1 else _model_call(classifier, clips, (position,))
        yield alone if isinstance(alone, ModelCall) else ClipFailure(position, alone)


def _model_call(classifier: Classifier, clips: Sequence[Clip], positions: tuple[int, ...]) -> ModelCall | Exception:
    started = time.perf_counter()
    try:
        scores, timings = classifier.scores_many([clips[position] for position in positions])
    except Exception as error:  # noqa: BLE001 - one bad clip must not end a run of thousands
        return error
    return ModelCall(positions, scores, timings, started, time.perf_counter() - started)


__all__ = ["Classified", "ClipFailure", "ModelCall", "Outcome", "PipelineStats", "Scorer", "classify_many",
           "classify_split", "score_clips"]
