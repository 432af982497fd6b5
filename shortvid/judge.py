"""Compatibility with the AI Challenger 2018 short-video evaluation kit.

The kit does ``from infer.infer import ServerApi``, builds ``ServerApi(gpu_id)`` (model loading,
not timed) and calls ``handle(video_path)`` per video, expecting a list of integer label ids; an
exception or an empty list scores 0. ``shortvid.judge.ServerApi`` is exactly that (copy or import it
as ``infer/infer.py``), serving the run named by ``SHORTVID_RUN`` (default ``runs/final``) on the
backend named by ``SHORTVID_BACKEND`` (``auto``, the default: ONNX Runtime on the CPU, exported on first
use, PyTorch on a GPU or where ONNX Runtime cannot run, see ``shortvid.infer.resolve_backend``; or
``torch``, ``onnx``) at the precision named by ``SHORTVID_PRECISION`` (``fp32``, the default; ``bf16``
on torch; ``int8``, ``int8-dynamic`` on onnx); the resolver reads both. The report's ``backend`` is the
one that ran.

``judge(...)`` reproduces the kit's protocol for ``shortvid judge``: 10 serial passes over the
videos, the fastest and slowest pass dropped, mean seconds per video over the rest; accuracy is the
mean Jaccard against a tag file; the gates were 120 ms per video and 0.80 accuracy.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from .data.annotations import read_aichallenger
from .decode import DecodeLimits
from .errors import DatasetError, DecodeError
from .infer.classifier import Classifier
from .metrics import mean_jaccard, predicted_matrix

DEFAULT_RUN = "runs/final"
TIME_GATE_MS = 120.0
ACCURACY_GATE = 0.80


class ServerApi:
    """The kit's interface: ``ServerApi(gpu_id).handle(video_path) -> list[int]``. ``backend`` and
    ``precision`` left ``None`` come from the environment (the module docstring); ``limits``: the largest
    frames decoded (``DecodeLimits()`` by default)."""

    def __init__(self, gpu_id: int = 0, run_dir: str | None = None, backend: str | None = None,
                 precision: str | None = None, limits: DecodeLimits | None = None):
        run = run_dir or os.environ.get("SHORTVID_RUN", DEFAULT_RUN)
        device = f"cuda:{gpu_id}" if torch.cuda.is_available() else "cpu"
        # One video at a time, back to back: the case ONNX Runtime's spinning threads serve best.
        self.classifier = Classifier.load(run, device=device, backend=backend, precision=precision, limits=limits,
                                          spin=True)
        self.errors: list[str] = []

    def handle(self, video_path: str) -> list[int]:
        """Label ids for one video; ``[]`` (which scores 0) for a video that cannot be decoded."""
        try:
            return self.classifier.predict(video_path).ids
        except DecodeError as error:
            self.errors.append(str(error))
            return []


def read_video_list(path: str | os.PathLike) -> list[Path]:
    """Videos from a list file (one path per line, relative to the file's folder) or a folder."""
    source = Path(path)
    if source.is_dir():
        return sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
    if not source.is_file():
        raise DatasetError(str(source), "no such video list or folder")
    lines = [line.strip() for line in source.read_text().splitlines() if line.strip()]
    return [p if p.is_absolute() else source.parent / p for p in map(Path, lines)]


def judge(run_dir: str | os.PathLike, videos: str | os.PathLike, tags: str | os.PathLike, *,
          passes: int = 10, gpu_id: int = 0, backend: str | None = None, precision: str | None = None,
          limits: DecodeLimits | None = None) -> dict:
    """The kit's timing and accuracy for a run (see the module docstring), through ``ServerApi(gpu_id, run_dir,
    backend, precision, limits)``."""
    if passes < 3:
        raise ValueError("the kit's protocol needs at least 3 passes (it drops the fastest and the slowest)")
    paths = read_video_list(videos)
    if not paths:
        raise DatasetError(str(videos), "no videos listed")
    truth = {Path(s.name).name: s.labels for s in read_aichallenger(tags, videos_dir=paths[0].parent,
                                                                     check_files=False, on_error="skip")}
    api = ServerApi(gpu_id, run_dir=str(run_dir), backend=backend, precision=precision, limits=limits)
    pass_seconds = []
    answers: dict[str, list[int]] = {}
    for _ in range(passes):
        started = time.perf_counter()
        for path in paths:
            answers[path.name] = api.handle(str(path))
        pass_seconds.append((time.perf_counter() - started) / len(paths))
    kept = sorted(pass_seconds)[1:-1]
    ms_per_video = 1000 * sum(kept) / len(kept)
    scored = [name for name in answers if name in truth]
    true_sets = predicted_matrix([truth[n] for n in scored], len(api.classifier.labels))
    accuracy = mean_jaccard([answers[n] for n in scored], true_sets)
    return {
        "videos": len(paths),
        "scored": len(scored),
        "passes": passes,
        "ms_per_video": round(ms_per_video, 2),
        "pass_ms": [round(1000 * s, 2) for s in pass_seconds],
        "accuracy": round(accuracy, 4),
        "errors": len(set(api.errors)),
        "time_gate_ms": TIME_GATE_MS,
        "accuracy_gate": ACCURACY_GATE,
        "passes_gates": ms_per_video <= TIME_GATE_MS and accuracy >= ACCURACY_GATE,
        "device": str(api.classifier.device),
        "backend": api.classifier.backend.name,
        "precision": api.classifier.backend.precision,
    }
