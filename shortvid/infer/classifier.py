"""Classifying videos with a trained run: ``Classifier.load(run).predict(path_or_bytes)``.

The classifier reads frames with the run's own FrameSpec (the frame cache's decode-and-resize
path), centre-crops them as evaluation did, and applies the run's decision policy to decide how
many labels to return. Each prediction carries its per-stage timings. A run whose model sees motion
or hears (``model.inputs``) gets its motion frames (the FrameSpec's) and its sound (the run's
AudioSpec) from the same open file, prepared as training prepared them (``prepare``).

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
from ..decode import Clip, DecodeLimits, Source, log_mel, read_frames
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
    sound: str | None = None  # a model that hears: what the video's sound was (Sound.status: ok, none, silent, broken)

    @classmethod
    def of(cls, clip: Clip, labels: tuple[Label, ...], top: tuple[Label, ...],
           timings: dict[str, float]) -> "Prediction":
        """The prediction for decoded video ``clip``: its frames' times, keyframe count and sound."""
        return cls(labels, top, timings, clip.times, clip.info.keyframes,
                   None if clip.sound is None else clip.sound.status)

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
        } | ({} if self.sound is None else {"sound": self.sound})


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
        self.inputs: tuple[str, ...] = tuple(getattr(backend, "inputs", ()))  # the model's inputs besides frames
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
        """Decode ``source`` as this run's model expects (its frames, motion frames and sound), within
        ``limits`` (default: ``self.limits``); raises ``DecodeError`` (never for the sound: ``Clip.sound``)."""
        return read_frames(source, self.preprocess.frames, timeout=timeout, limits=limits or self.limits,
                           audio=self.preprocess.audio)

    def prepare(self, clips: list[Clip]) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        """The model's inputs for decoded videos: frames ``[N, T, 3, S, S]`` (padded to the longest), the frame
        mask (None when no video is padded) and the other inputs the model takes (``self.inputs``): motion
        frames through the same centre crop as their keyframes, log-mel features of the sound and whether
        it is real sound (docs/motion-and-sound.md, "The contract between the layers")."""
        videos = [self.transform(torch.from_numpy(clip.frames).to(self.device), "test") for clip in clips]
        longest = max(len(video) for video in videos)
        batch = _padded(videos, longest, self.device)
        extra = {}
        if "motion" in self.inputs:
            moving = []
            for clip in clips:
                if clip.motion is None:
                    raise ValueError(f"{clip.info.source}: the model takes motion frames; read it with motion "
                                     f"{self.preprocess.frames.motion} (Classifier.read)")
                count, following = clip.motion.shape[:2]
                flat = torch.from_numpy(clip.motion.reshape(count * following, *clip.motion.shape[2:]))
                moving.append(self.transform(flat.to(self.device), "test").view(count, following, *videos[0].shape[1:]))
            extra["motion"] = _padded(moving, longest, self.device)
        if "audio" in self.inputs:
            sounds = [clip.sound for clip in clips]
            if any(sound is None for sound in sounds):
                raise ValueError("the model hears: read the videos with the run's AudioSpec (Classifier.read)")
            features = np.stack([log_mel(sound.samples, sound.sample_rate, self.preprocess.mels) for sound in sounds])
            extra["audio"] = torch.from_numpy(features).to(self.device)
            extra["audio_mask"] = torch.tensor([sound.status == "ok" for sound in sounds], device=self.device)
        mask = None
        if any(len(video) < longest for video in videos):
            mask = torch.zeros(len(clips), longest, dtype=torch.bool, device=self.device)
            for row, video in enumerate(videos):
                mask[row, :len(video)] = True
        return batch, mask, extra

    @torch.inference_mode()
    def scores(self, clip: Clip) -> tuple[np.ndarray, dict[str, float]]:
        """Class scores [C] for decoded frames, with preprocess and model times (ms)."""
        started = time.perf_counter()
        frames, _, extra = self.prepare([clip])
        prepared = time.perf_counter()
        logits = self.backend(frames, **extra)
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
        batch, mask, extra = self.prepare(clips)
        prepared = time.perf_counter()
        logits = self.backend(batch, mask, **extra)
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
        return Prediction.of(clip, labels, top, timings)


def _padded(videos: list[torch.Tensor], longest: int, device: torch.device) -> torch.Tensor:
    """``videos`` (each ``[t, ...]``, ``t <= longest``) stacked into ``[N, longest, ...]``, zeros after each
    video's own; on the CPU stacked in NumPy: torch's copies would wake its thread pool (BENCHMARKS.md,
    "What makes the single stream fast")."""
    if len(videos) == 1 and len(videos[0]) == longest:
        return videos[0].unsqueeze(0)
    shape = (len(videos), longest, *videos[0].shape[1:])
    if device.type == "cpu":
        stacked = np.zeros(shape, np.float32)
        for row, video in enumerate(videos):
            stacked[row, :len(video)] = video.numpy()
        return torch.from_numpy(stacked)
    batch = torch.zeros(shape, device=device)
    for row, video in enumerate(videos):
        batch[row, :len(video)] = video
    return batch
