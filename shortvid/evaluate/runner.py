"""Evaluating a run the way the competition did: every video through the serving path, timed.

Each video is decoded, preprocessed and classified by ``Classifier`` exactly as in serving, so the
accuracy and the per-stage times are the ones users will get. A video that fails to decode scores 0
(the competition's rule) and is listed in the report.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..data.annotations import load_dataset
from ..decode import DecodeLimits
from ..errors import DecodeError, InferenceError
from ..files import atomic_write
from ..metrics import evaluation_report, jaccard, timing_summary
from ..serve.classifier import Classifier


def evaluate_run(
    run_dir: str | os.PathLike,
    dataset: str | os.PathLike,
    split: str = "val",
    *,
    device: str = "auto",
    limit: int | None = None,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    adaptive: bool = False,
    backend: str = "auto",
    precision: str = "fp32",
    limits: DecodeLimits | None = None,
) -> dict:
    """Metrics of ``run_dir`` on ``dataset``'s ``split``; written to ``out`` (default RUN/metrics.json).
    ``backend``: ``auto`` (onnx where it can run, else torch), ``torch`` or ``onnx`` (ONNX Runtime);
    ``precision``: ``fp32``, ``bf16`` (torch), ``int8`` or ``int8-dynamic`` (onnx), and ``limits``, the
    largest frames decoded; see ``Classifier.load``. The report names the backend and precision that ran."""
    classifier = Classifier.load(run_dir, device=device, adaptive=adaptive, backend=backend, precision=precision,
                                 limits=limits, spin=True)  # one video at a time
    annotations = load_dataset(dataset, split, labels=classifier.labels, on_error="skip")
    samples = annotations.samples[:limit] if limit else annotations.samples
    num_classes = len(classifier.labels)
    scores = np.zeros((len(samples), num_classes), dtype=np.float32)
    targets = np.zeros((len(samples), num_classes), dtype=np.int8)
    predicted: list[tuple[int, ...]] = []
    stages: dict[str, list[float]] = {"decode": [], "preprocess": [], "model": [], "total": []}
    failures = []
    frame_counts: list[int] = []
    keyframes = np.zeros(len(samples), dtype=np.int64)  # 0: not decoded
    for i, sample in enumerate(tqdm(samples, desc="evaluate", unit="video", disable=not progress)):
        targets[i, list(sample.labels)] = 1
        try:
            clip = classifier.read(sample.path)
            video_scores, timings = classifier.scores(clip)
        except DecodeError as error:
            predicted.append(())
            failures.append(error.to_dict())
            continue
        except Exception as error:  # noqa: BLE001 - a video that breaks the model fails alone
            predicted.append(())
            failures.append(InferenceError(str(sample.path), f"the model failed: {type(error).__name__}: {error}").to_dict())
            continue
        frame_counts.append(len(clip.frames))
        keyframes[i] = clip.info.keyframes
        scores[i] = video_scores
        labels, _ = classifier.decide(video_scores)
        predicted.append(tuple(label.id for label in labels))
        timings = {"decode": clip.decode_ms, **timings}
        timings["total"] = sum(timings.values())
        for stage, ms in timings.items():
            stages[stage].append(ms)
    report = evaluation_report(scores, targets, predicted, classifier.labels.names)
    report.update({
        "run": str(run_dir),
        "dataset": str(dataset),
        "split": split,
        "policy": classifier.policy.to_dict(),
        "failed": len(failures),
        "failures": failures[:100],
        "timing_ms": {stage: timing_summary(ms) for stage, ms in stages.items() if ms},
        "device": str(classifier.device),
        "adaptive": adaptive,
        "backend": classifier.backend.name,
        "precision": classifier.backend.precision,
        "frames_per_video": {str(n): c for n, c in sorted(Counter(frame_counts).items())},
        "by_keyframes": _by_keyframes(keyframes, jaccard(predicted, targets)),
    })
    target = Path(out) if out else Path(run_dir) / "metrics.json"
    atomic_write(target, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report


def _by_keyframes(keyframes: np.ndarray, per_video: np.ndarray) -> dict:
    """Videos and mean Jaccard by how many keyframes the video has (decoded videos only)."""
    return {str(n): {"videos": int((keyframes == n).sum()), "mean_jaccard": float(per_video[keyframes == n].mean())}
            for n in sorted(set(keyframes.tolist()) - {0})}
