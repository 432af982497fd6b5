"""Evaluating a run the way the competition did: every video through the serving path, timed.

Each video is decoded, preprocessed and classified by ``Classifier`` exactly as in serving
(``classify_split``), so the accuracy and the per-stage times are the ones users will get. A video that
fails to decode, or that the model fails on, scores 0 (the competition's rule) and is listed in the
report with its typed error.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np

from ..data.annotations import load_dataset
from ..decode import DecodeLimits
from ..files import atomic_write
from ..infer.batch import classify_split
from ..infer.classifier import Classifier
from ..metrics import by_slice, evaluation_report, jaccard, timing_summary, video_kind


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
    backend: str | None = "auto",
    precision: str | None = "fp32",
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
    sounds = [""] * len(samples)  # Sound.status of each decoded video of a run that hears
    for i, video in enumerate(classify_split(classifier, samples, progress=progress, desc="evaluate")):
        targets[i, list(video.sample.labels)] = 1
        if video.error is not None:
            predicted.append(())
            failures.append(video.error.to_dict())
            continue
        frame_counts.append(len(video.clip.frames))
        keyframes[i] = video.clip.info.keyframes
        sounds[i] = video.clip.sound.status if video.clip.sound is not None else ""
        scores[i] = video.scores
        labels, _ = classifier.decide(video.scores)
        predicted.append(tuple(label.id for label in labels))
        for stage, ms in video.timings.items():
            stages[stage].append(ms)
        if video.clip.sound is not None:  # the sound's share of "decode"
            stages.setdefault("decode_audio", []).append(video.clip.sound.decode_ms)
    report = evaluation_report(scores, targets, predicted, classifier.labels.names)
    per_video = jaccard(predicted, targets)
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
        "by_keyframes": _by_keyframes(keyframes, per_video),
    })
    decoded = keyframes > 0
    kinds = classifier.labels.class_kinds
    if kinds:  # what tells the classes apart: the modality each video's classes need
        report["by_kind"] = by_slice([video_kind(s.labels, kinds) for s in samples], per_video)
    if any(sounds):
        report["by_sound"] = by_slice([s for s, ok in zip(sounds, decoded, strict=True) if ok], per_video[decoded])
    target = Path(out) if out else Path(run_dir) / "metrics.json"
    atomic_write(target, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report


def _by_keyframes(keyframes: np.ndarray, per_video: np.ndarray) -> dict:
    """Videos and mean Jaccard by how many keyframes the video has (decoded videos only), in count order."""
    decoded = keyframes > 0
    slices = by_slice([str(n) for n in keyframes[decoded]], per_video[decoded])
    return {key: slices[key] for key in sorted(slices, key=int)}
