"""Classifying videos with a trained run: ``Classifier.load(run).predict(path_or_bytes)``.

The classifier reads frames with the run's own FrameSpec (the frame cache's decode-and-resize
path), centre-crops them as evaluation did, and applies the run's decision policy to decide how
many labels to return. Each prediction carries its per-stage timings.

The model runs on a backend: ``torch`` (the run's PyTorch model, on ``device``) or ``onnx`` (ONNX
Runtime on the run's exported ``model.onnx``; docs/onnx.md). Both take the same prepared batch and
give the same logits; decoding, preprocessing and the decision policy are shared. ``auto`` (the
default) picks ONNX Runtime on the CPU, exporting on first use, and PyTorch on a GPU, for bf16, and
where ONNX Runtime cannot run the run (no onnxruntime, a run that does not export), the last with a
warning naming the cause.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..backends import AUTO, auto_candidates, check_precision
from ..data.labels import LabelMap
from ..decode import Clip, DecodeLimits
from ..decode.reader import Source
from ..export import INPUT_NAME, OUTPUT_NAME, ExportError
from ..extras import MissingExtraError, require
from ..machine import resolve_device
from ..models import ServableModel
from ..models.adaptive import grouped_logits
from ..models.scores import probabilities
from ..policy import DecisionPolicy
from ..run import Preprocess, RunDir

log = logging.getLogger(__name__)


class TorchBackend:
    """Logits from a prepared batch with the run's PyTorch model."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: str = "fp32"):
        check_precision("torch", precision)
        self.model = model
        self.device = device  # where prepared batches must be
        # bf16: autocast on the model's device (convolutions and matmuls in bf16, the ops autocast
        # keeps in fp32 in fp32, logits returned as fp32); on the CPU it was faster than casting the
        # model to bf16 and as close to fp32 (docs/onnx.md).
        self.precision = precision

    def __call__(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.precision == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                return self.model(frames, mask).float()
        return self.model(frames, mask)


class OnnxBackend:
    """Logits from a prepared batch with ONNX Runtime, on an exported run (``shortvid export``).

    The graph takes no mask, so a padded batch is split by each video's valid-frame count and each
    group runs unpadded (its valid frames, in order): the logits the masked PyTorch model gives.
    """

    name = "onnx"

    def __init__(self, path: str | os.PathLike, device: torch.device, precision: str = "fp32", spin: bool = False):
        require("onnx", "the onnx backend")
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            index = device.index if device.index is not None else 0
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        # ORT's pool threads spin by default, between operators and after each run: the fastest for
        # one video at a time back to back, but the spinning holds the cores that decode threads and
        # other requests need (BENCHMARKS.md, issue 14): off unless the caller runs one at a time.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.spin = spin
        self.path = Path(path)
        self.precision = precision  # fp32, int8 (static) or int8-dynamic: which file `path` is
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as error:  # onnxruntime's errors derive from Exception only
            cause = f"ONNX Runtime cannot load {self.path.name}: {type(error).__name__}: {error}"
            raise ExportError(str(path), cause) from error
        self.providers = tuple(self.session.get_providers())
        self.input, self.output = INPUT_NAME, OUTPUT_NAME
        self.device = torch.device("cpu")  # preprocessing stays on the CPU; ORT is fed numpy

    def run(self, frames: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(frames.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run([self.output], {self.input: array})[0])

    def __call__(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None or bool(mask.all()):
            return self.run(frames)
        mask = mask.bool().cpu()
        counts = mask.sum(1)
        if bool((counts == 0).any()):
            raise ValueError("a video with no valid frame cannot be classified")
        return grouped_logits(counts.tolist(),
                              lambda _, rows: self.run(torch.stack([frames[row][mask[row]] for row in rows.tolist()])))


def _onnx_backend(run_dir: str | os.PathLike, checkpoint: str, precision: str, device: torch.device,
                  spin: bool = False) -> OnnxBackend:
    """ONNX Runtime on the run's file of ``precision``, (re)made first when missing or stale."""
    from ..quantize import ensure_onnx

    require("onnx", "the onnx backend")  # before exporting, which needs it too
    return OnnxBackend(ensure_onnx(run_dir, checkpoint, precision), device, precision, spin)


def _auto_onnx(run_dir: str | os.PathLike, checkpoint: str, precision: str, device: torch.device,
               spin: bool = False) -> OnnxBackend | None:
    """What ``auto`` means for this run, device and precision (see ``Classifier.load``): the ONNX
    Runtime backend, or ``None`` for torch. Where both backends run ``precision``, a run ONNX Runtime
    cannot serve falls back to torch, with the cause logged."""
    candidates = auto_candidates(precision)
    if candidates == ("torch",) or (device.type != "cpu" and "torch" in candidates):
        return None  # bf16; on a GPU, PyTorch with CUDA (docs/onnx.md, "Picking the backend")
    if candidates == ("onnx",):
        return _onnx_backend(run_dir, checkpoint, precision, device, spin)  # int8: raises as backend="onnx" does
    try:
        return _onnx_backend(run_dir, checkpoint, precision, device, spin)
    except (MissingExtraError, ExportError) as error:
        log.warning("shortvid: %s: ONNX Runtime not used, running the PyTorch model: %s", run_dir, error.cause)
        return None


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

    def __init__(self, model: ServableModel | None, labels: LabelMap, preprocess: Preprocess,
                 policy: DecisionPolicy, device: torch.device, backend: TorchBackend | OnnxBackend | None = None,
                 limits: DecodeLimits | None = None):
        self.model = model  # the PyTorch model (None on the onnx backend)
        self.limits = limits or DecodeLimits()  # the largest frames decoded (untrusted uploads)
        self.backend = backend or TorchBackend(model, device)
        self.labels = labels
        self.preprocess = preprocess
        self.policy = policy
        self.device = self.backend.device  # where frames are prepared
        self.transform = preprocess.transform()
        # Set by ``load``: where the model came from, and how to load it again.
        self.run: str | None = None
        self.load_options: dict = {}

    @classmethod
    def load(cls, run_dir: str | os.PathLike, device: str = "auto", checkpoint: str = "best",
             adaptive: bool = False, backend: str = AUTO, precision: str = "fp32",
             limits: DecodeLimits | None = None, spin: bool = False) -> "Classifier":
        """``adaptive``: a video with fewer keyframes than the run's frame count is classified from
        those keyframes alone (the seed's adaptive I-frame model, with one TSN for every count).

        ``backend``: ``onnx``: ONNX Runtime on RUN/model.onnx (model-last.onnx for
        ``checkpoint="last"``), exported first when missing or older than the checkpoint (into the
        user's cache when the run's folder is read-only, ``shortvid.quantize.cache_folder``); CUDA
        when ``device`` is a GPU and onnxruntime has it, else the CPU. ``torch``: the PyTorch model.
        ``auto`` (default): onnx on the CPU, torch on a GPU and for bf16, onnx for int8; where onnx
        was picked and cannot run (onnxruntime missing, a run that does not export), torch, with a
        warning naming the cause. ``self.backend.name`` says which was chosen.

        ``precision``: ``fp32`` (default); on torch also ``bf16`` (autocast); on onnx also ``int8``
        (RUN/model.int8-static.onnx, calibrated on training frames) and ``int8-dynamic``
        (RUN/model.int8-dynamic.onnx), made first when missing or older than the checkpoint
        (``shortvid.quantize``, docs/onnx.md). Other pairs are a ``ValueError``.

        ``limits``: the largest frames decoded (``DecodeLimits()`` by default; docs/security.md).

        ``spin``: let ONNX Runtime's threads spin between operators and runs, for a caller that
        classifies one video at a time back to back (the competition's protocol, ``shortvid predict``
        without ``--batch-size``, ``evaluate_run``): 11.2 against 14.7 ms per video there. Off by
        default: where decode threads or other requests share the cores (the service, ``classify_many``)
        spinning took their time, 0.83-0.90x the throughput (BENCHMARKS.md)."""
        check_precision(backend, precision)
        run = RunDir(run_dir)
        torch_device = resolve_device(device)
        policy = run.policy()
        preprocess = run.preprocess()
        if adaptive:
            preprocess = dataclasses.replace(preprocess, frames=dataclasses.replace(preprocess.frames, fill="none"))
        policy = DecisionPolicy.from_dict(policy) if policy else DecisionPolicy()
        onnx = None
        if backend == "onnx":
            onnx = _onnx_backend(run_dir, checkpoint, precision, torch_device, spin)
        elif backend == AUTO:
            onnx = _auto_onnx(run_dir, checkpoint, precision, torch_device, spin)
        if onnx is not None:
            classifier = cls(None, run.label_map(), preprocess, policy, torch_device, onnx, limits)
        else:
            model = run.load_model(checkpoint, torch_device)
            classifier = cls(model, run.label_map(), preprocess, policy, torch_device,
                             TorchBackend(model, torch_device, precision), limits)
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
        return self.preprocess.frames.read(source, mode="test", timeout=timeout, limits=limits or self.limits)

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
        label = lambda i: Label(int(i), self.labels.name(int(i)), float(scores[i]))  # noqa: E731
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
