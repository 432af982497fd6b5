"""Classifying videos with a trained run: ``Classifier.load(run).predict(path_or_bytes)``.

The classifier reads frames with the run's own FrameSpec (the frame cache's decode-and-resize
path), centre-crops them as evaluation did, and applies the run's decision policy to decide how
many labels to return. Each prediction carries its per-stage timings.

The model runs on a backend (``shortvid.infer.backends``): ``torch`` (the run's PyTorch model, on
``device``) or ``onnx`` (ONNX Runtime on the run's exported ``model.onnx``; docs/onnx.md), chosen by
``resolve_backend`` (``auto``, the default: ONNX Runtime on the CPU, PyTorch on a GPU). Both take the
same prepared batch and give the same logits; decoding, preprocessing and the decision policy are shared.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.labels import LabelMap
from ..decode import Clip, DecodeLimits, Source, read_frames
from ..models import ServableModel
from ..models.scores import probabilities
from ..policy import DecisionPolicy
from ..run import Preprocess, RunDir
from .backends import AUTO, Backend, TorchBackend, resolve_backend


@dataclass(frozen=True)
class Label:
    id: int
    name: str
    score: float


@dataclass(frozen=True)
class Prediction:
    """The labels decided for one video, the top scores, and where the time went (ms)."""

    labels: tuple[Label, ...]
    top: tuple[Label, ...]  # the five best-scored classes
    timings: dict[str, float]  # decode, preprocess, model, total
    frames: tuple[float, ...] = field(default=())  # times of the frames the model saw
    keyframes: int = 0  # keyframes the video has

    @property
    def ids(self) -> list[int]:
        return [label.id for label in self.labels]

    def to_dict(self) -> dict:
        return {
            "labels": [vars(label) | {"score": round(label.score, 5)} for label in self.labels],
            "top5": [vars(label) | {"score": round(label.score, 5)} for label in self.top],
            "timings_ms": {k: round(v, 2) for k, v in self.timings.items()},
            "frames": [round(t, 3) for t in self.frames],
            "keyframes": self.keyframes,
        }


class Classifier:
    """A trained run, ready to classify videos one at a time."""

    def __init__(self, backend: Backend, labels: LabelMap, preprocess: Preprocess, policy: DecisionPolicy,
                 limits: DecodeLimits | None = None):
        self.backend = backend  # what runs the model (``resolve_backend``)
        self.limits = limits or DecodeLimits()  # the largest frames decoded (untrusted uploads)
        self.labels = labels
        self.preprocess = preprocess
        self.policy = policy
        self.device = self.backend.device  # where frames are prepared
        self.transform = preprocess.transform()
        # Set by ``load``: where the model came from, and how to load it again.
        self.run: str | None = None
        self.load_options: dict = {}

    @property
    def model(self) -> ServableModel | None:
        """The PyTorch model (None on the onnx backend)."""
        return self.backend.model if isinstance(self.backend, TorchBackend) else None

    @classmethod
    def load(cls, run_dir: str | os.PathLike, device: str = "auto", checkpoint: str = "best",
             adaptive: bool = False, backend: str | None = AUTO, precision: str | None = "fp32",
             limits: DecodeLimits | None = None, spin: bool = False) -> "Classifier":
        """The run's classifier. ``adaptive``: a video with fewer keyframes than the run's frame count is
        classified from those keyframes alone (the seed's adaptive I-frame model, with one TSN for every
        count).

        ``backend`` (``auto``, ``torch``, ``onnx``), ``precision`` (``fp32``; ``bf16`` on torch; ``int8``,
        ``int8-dynamic`` on onnx), ``checkpoint`` and ``spin``: which backend runs the model, on which
        file, made or found by ``resolve_backend`` (``None``: from the environment); another pair is a
        ``BackendError``, a ``ValueError``. ``self.backend.name`` says which was chosen.

        ``limits``: the largest frames decoded (``DecodeLimits()`` by default; docs/security.md)."""
        run = RunDir(run_dir)
        chosen = resolve_backend(run_dir, backend, precision, device, checkpoint=checkpoint, spin=spin)
        preprocess = run.preprocess()
        if adaptive:
            preprocess = dataclasses.replace(preprocess, frames=dataclasses.replace(preprocess.frames, fill="none"))
        policy = run.policy()
        policy = DecisionPolicy.from_dict(policy) if policy else DecisionPolicy()
        classifier = cls(chosen, run.label_map(), preprocess, policy, limits)
        classifier.run = str(run_dir)
        classifier.load_options = {"device": device, "checkpoint": checkpoint, "adaptive": adaptive,
                                   "backend": backend, "precision": precision, "limits": limits, "spin": spin}
        return classifier

    def reloaded(self, run_dir: str | os.PathLike | None = None) -> "Classifier":
        """The classifier that this one's run (or ``run_dir``) gives now, loaded with the same options:
        a service swaps it in for a retrained model (``POST /admin/reload``)."""
        if run_dir is None and self.run is None:
            raise ValueError("this classifier was not loaded from a run: name the run to load")
        return type(self).load(run_dir if run_dir is not None else self.run, **self.load_options)

    def read(self, source: Source, timeout: float | None = 10.0, limits: DecodeLimits | None = None) -> Clip:
        """Decode ``source`` as this run's model expects, within ``limits`` (default: ``self.limits``);
        raises ``DecodeError``."""
        return read_frames(source, self.preprocess.frames, timeout=timeout, limits=limits or self.limits)

    @torch.inference_mode()
    def scores(self, clip: Clip) -> tuple[np.ndarray, dict[str, float]]:
        """Class scores [C] for decoded frames, with preprocess and model times (ms)."""
        started = time.perf_counter()
        # Move the uint8 frames (4x smaller than floats) first, then crop and normalise on the device.
        frames = self.transform(torch.from_numpy(clip.frames).to(self.device), "test").unsqueeze(0)
        prepared = time.perf_counter()
        logits = self.backend(frames)
        scores = probabilities(logits, self.preprocess.scores)[0].float().cpu().numpy()
        done = time.perf_counter()
        return scores, {"preprocess": (prepared - started) * 1000, "model": (done - prepared) * 1000}

    @torch.inference_mode()
    def scores_many(self, clips: list[Clip]) -> tuple[np.ndarray, dict[str, float]]:
        """Class scores [N, C] for several decoded videos in one model call (dynamic batching).

        Videos with fewer frames than the longest (adaptive reading) are padded and masked, so each
        gets exactly the scores ``scores`` would give it alone.
        """
        started = time.perf_counter()
        videos = [self.transform(torch.from_numpy(clip.frames).to(self.device), "test") for clip in clips]
        longest = max(len(video) for video in videos)
        mask = torch.zeros(len(clips), longest, dtype=torch.bool, device=self.device)
        if self.device.type == "cpu":  # stacked in NumPy: torch's copies would wake its thread pool
            stacked = np.zeros((len(videos), longest) + tuple(videos[0].shape[1:]), np.float32)
            for row, video in enumerate(videos):
                stacked[row, :len(video)] = video.numpy()
            batch = torch.from_numpy(stacked)
        else:
            batch = torch.zeros((len(videos), longest) + videos[0].shape[1:], device=self.device)
            for row, video in enumerate(videos):
                batch[row, :len(video)] = video
        for row, video in enumerate(videos):
            mask[row, :len(video)] = True
        prepared = time.perf_counter()
        logits = self.backend(batch, None if bool(mask.all()) else mask)
        scores = probabilities(logits, self.preprocess.scores).float().cpu().numpy()
        done = time.perf_counter()
        return scores, {"preprocess": (prepared - started) * 1000, "model": (done - prepared) * 1000}

    def decide(self, scores: np.ndarray) -> tuple[tuple[Label, ...], tuple[Label, ...]]:
        chosen = self.policy.apply_one(scores)

        def label(i: int) -> Label:
            return Label(int(i), self.labels.name(int(i)), float(scores[i]))

        return tuple(label(i) for i in chosen), tuple(label(i) for i in np.argsort(-scores)[:5])

    def predict(self, source: Source, timeout: float | None = 10.0) -> Prediction:
        """Labels for one video (path, bytes or binary file); raises ``DecodeError`` for a bad file."""
        started = time.perf_counter()
        clip = self.read(source, timeout)
        decoded = time.perf_counter()
        scores, timings = self.scores(clip)
        labels, top = self.decide(scores)
        timings = {"decode": (decoded - started) * 1000, **timings, "total": (time.perf_counter() - started) * 1000}
        return Prediction(labels, top, timings, clip.times, clip.info.keyframes)
