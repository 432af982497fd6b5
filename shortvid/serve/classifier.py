"""Classifying videos with a trained run: ``Classifier.load(run).predict(path_or_bytes)``.

The classifier reads frames with the run's own FrameSpec (the frame cache's decode-and-resize
path), centre-crops them as evaluation did, and applies the run's decision policy to decide how
many labels to return. Each prediction carries its per-stage timings.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.labels import LabelMap
from ..decode import Clip
from ..decode.reader import Source
from ..evaluate.policy import DecisionPolicy
from ..models import VideoClassifier
from ..train.run import Preprocess, RunDir
from ..train.trainer import resolve_device


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

    def __init__(self, model: VideoClassifier, labels: LabelMap, preprocess: Preprocess,
                 policy: DecisionPolicy, device: torch.device):
        self.model = model
        self.labels = labels
        self.preprocess = preprocess
        self.policy = policy
        self.device = device
        self.transform = preprocess.transform()

    @classmethod
    def load(cls, run_dir: str | os.PathLike, device: str = "auto", checkpoint: str = "best",
             adaptive: bool = False) -> "Classifier":
        """``adaptive``: a video with fewer keyframes than the run's frame count is classified from
        those keyframes alone (the seed's adaptive I-frame model, with one TSN for every count)."""
        run = RunDir(run_dir)
        torch_device = resolve_device(device)
        policy = run.policy()
        preprocess = run.preprocess()
        if adaptive:
            preprocess = dataclasses.replace(preprocess, frames=dataclasses.replace(preprocess.frames, fill="none"))
        return cls(run.load_model(checkpoint, torch_device), run.label_map(), preprocess,
                   DecisionPolicy.from_dict(policy) if policy else DecisionPolicy(), torch_device)

    def read(self, source: Source, timeout: float | None = 10.0) -> Clip:
        """Decode ``source`` as this run's model expects (raises ``DecodeError``)."""
        return self.preprocess.frames.read(source, mode="test", timeout=timeout)

    @torch.inference_mode()
    def scores(self, clip: Clip) -> tuple[np.ndarray, dict[str, float]]:
        """Class scores [C] for decoded frames, with preprocess and model times (ms)."""
        started = time.perf_counter()
        # Move the uint8 frames (4x smaller than floats) first, then crop and normalise on the device.
        frames = self.transform(torch.from_numpy(clip.frames).to(self.device), "test").unsqueeze(0)
        prepared = time.perf_counter()
        logits = self.model(frames)
        probabilities = torch.sigmoid(logits) if self.preprocess.scores == "sigmoid" else torch.softmax(logits, 1)
        scores = probabilities[0].float().cpu().numpy()
        done = time.perf_counter()
        return scores, {"preprocess": (prepared - started) * 1000, "model": (done - prepared) * 1000}

    @torch.inference_mode()
    def scores_many(self, clips: list[Clip]) -> tuple[np.ndarray, dict[str, float]]:
        """Class scores [N, C] for several decoded videos in one model call (dynamic batching).

        Videos with fewer frames than the longest (adaptive reading) are padded and masked, so each
        gets exactly the scores ``scores`` would give it alone.
        """
        started = time.perf_counter()
        longest = max(len(clip.frames) for clip in clips)
        frames, mask = [], torch.zeros(len(clips), longest, dtype=torch.bool, device=self.device)
        for row, clip in enumerate(clips):
            video = self.transform(torch.from_numpy(clip.frames).to(self.device), "test")
            mask[row, :len(video)] = True
            if len(video) < longest:
                video = torch.cat([video, video.new_zeros((longest - len(video),) + video.shape[1:])])
            frames.append(video)
        batch = torch.stack(frames)
        prepared = time.perf_counter()
        logits = self.model(batch, None if bool(mask.all()) else mask)
        probabilities = torch.sigmoid(logits) if self.preprocess.scores == "sigmoid" else torch.softmax(logits, 1)
        scores = probabilities.float().cpu().numpy()
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
