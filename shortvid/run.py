"""The run directory: everything a trained model needs to be resumed, evaluated and served.

    RUN/config.yaml          the resolved training config
    RUN/labels.csv           the label map (ids, names, groups)
    RUN/preprocess.json      how frames (and motion frames, and sound) are read and fed: FrameSpec, AudioSpec,
                             mel bands, input size, score function
    RUN/metrics.jsonl        one line per epoch
    RUN/policy.json          the decision policy tuned on validation (how many labels to return)
    RUN/checkpoints/last.pt  model + optimiser state, epoch and step: `--resume` continues from it
    RUN/checkpoints/best.pt  the model of the best validation epoch
    RUN/metrics.json         written by `shortvid evaluate`
    RUN/teacher_features.*   the teacher's cached frame features (`distill.cache=true`)
    RUN/fusion.json          a fused run's validation report (`shortvid fuse`)

Every file is published atomically (``shortvid.files``), so a kill never leaves a torn one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from .data.labels import LabelMap
from .data.transforms import IMAGENET_MEAN, IMAGENET_STD, VideoTransform
from .decode import AudioSpec, FrameSpec
from .errors import ShortvidError
from .files import atomic_path, atomic_write
from .models import ServableModel, create_model


class RunError(ShortvidError):
    """A run directory is missing or incomplete."""


@dataclass(frozen=True)
class Preprocess:
    """How a run's model reads a video: the decoder's FrameSpec (with its motion frames), then a centre crop
    of ``input_size``; for a model that hears, the ``AudioSpec`` of its sound and the mel bands of its
    log-mel features. A run made before sound has ``audio`` None and its file is unchanged."""

    frames: FrameSpec
    input_size: int
    scores: str  # "sigmoid" (multi-label BCE) or "softmax" (CE)
    mean: tuple[float, ...] = IMAGENET_MEAN  # the backbone's input normalisation
    std: tuple[float, ...] = IMAGENET_STD
    audio: AudioSpec | None = None  # the sound the model hears; None: none
    mels: int = 64  # log-mel bands of the audio features

    def to_dict(self) -> dict:
        out = {"frames": self.frames.to_dict(), "input_size": self.input_size, "scores": self.scores,
               "mean": list(self.mean), "std": list(self.std)}
        if self.audio is not None:
            out.update(audio=self.audio.to_dict(), mels=self.mels)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocess":
        audio = data.get("audio")
        return cls(FrameSpec.from_dict(data["frames"]), int(data["input_size"]), data["scores"],
                   tuple(data.get("mean", IMAGENET_MEAN)), tuple(data.get("std", IMAGENET_STD)),
                   None if audio is None else AudioSpec.from_dict(audio), int(data.get("mels", 64)))

    def transform(self) -> VideoTransform:
        """The evaluation transform (centre crop, normalisation) this run's model was trained with."""
        return VideoTransform(self.input_size, augment=False, mean=self.mean, std=self.std)


class RunDir:
    """Paths and readers/writers of one run directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.checkpoints = self.root / "checkpoints"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics_log(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    def require(self, path: Path, what: str) -> Path:
        if not path.exists():
            raise RunError(str(self.root), f"no {what} ({path.name}); is this a training run directory?")
        return path

    def label_map(self) -> LabelMap:
        return LabelMap.from_csv(self.require(self.root / "labels.csv", "label map"))

    def preprocess(self) -> Preprocess:
        path = self.require(self.root / "preprocess.json", "preprocessing settings")
        return Preprocess.from_dict(json.loads(path.read_text()))

    def write_preprocess(self, preprocess: Preprocess) -> None:
        atomic_write(self.root / "preprocess.json", json.dumps(preprocess.to_dict(), indent=2) + "\n")

    def training_data(self) -> dict:
        """The ``data`` section of the run's training config (empty for a run not trained here)."""
        if not self.config.exists():
            return {}
        return dict((yaml.safe_load(self.config.read_text()) or {}).get("data") or {})

    def policy(self) -> dict | None:
        path = self.root / "policy.json"
        return json.loads(path.read_text()) if path.exists() else None

    def write_policy(self, policy: dict) -> None:
        atomic_write(self.root / "policy.json", json.dumps(policy, indent=2) + "\n")

    def append_metrics(self, record: dict) -> None:
        with open(self.metrics_log, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict]:
        if not self.metrics_log.exists():
            return []
        records = []
        for line in self.metrics_log.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # torn by a kill
        return records

    def keep_metrics_before(self, epoch: int) -> None:
        """On resume: forget epochs the checkpoint does not contain, so none is logged twice."""
        kept = [r for r in self.read_metrics() if r.get("epoch", -1) < epoch]
        atomic_write(self.metrics_log, "".join(json.dumps(r) + "\n" for r in kept))

    def write_inference(self, model: ServableModel, labels: LabelMap, preprocess: Preprocess,
                        policy: dict | None = None) -> None:
        """A run that serves ``model`` without having been trained here (benchmarks, imported or fused models)."""
        self.root.mkdir(parents=True, exist_ok=True)
        labels.to_csv(self.root / "labels.csv")
        self.write_preprocess(preprocess)
        if policy is not None:
            self.write_policy(policy)
        self.save_checkpoint({"model_config": model.config, "model": model.state_dict()}, self.best)

    def checkpoint_path(self, checkpoint: str = "best") -> Path:
        """The file ``load_model(checkpoint)`` reads: best.pt, or last.pt when there is no best (or asked)."""
        return self.best if checkpoint == "best" and self.best.exists() else self.last

    def fingerprint(self, checkpoint: str = "best") -> str:
        """sha256 over the files that decide what the run answers (labels, preprocessing, policy,
        weights): two runs with the same fingerprint give the same answers. Identifies the model a
        service serves (``GET /v1/model``)."""
        digest = hashlib.sha256()
        for path in (self.root / "labels.csv", self.root / "preprocess.json", self.root / "policy.json",
                     self.require(self.checkpoint_path(checkpoint), "checkpoint")):
            digest.update(path.name.encode() + b"\0")
            if path.exists():
                with open(path, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
            digest.update(b"\0")
        return digest.hexdigest()

    def load_model(self, checkpoint: str = "best", device: torch.device | str = "cpu") -> ServableModel:
        """The run's model with the weights of its ``best`` (or ``last``) checkpoint, in eval mode: any
        registered model, rebuilt from the checkpoint's ``model_config`` (``models.contract``)."""
        state = self.load_checkpoint(self.checkpoint_path(checkpoint), map_location=device)
        config = dict(state["model_config"])
        name = config.pop("name")
        for weights_source in ("pretrained", "checkpoint_path"):  # the checkpoint brings the weights
            config.pop(weights_source, None)
        model = create_model(name, **config)
        load_weights(model, state["model"])
        return model.to(device).eval()

    def save_checkpoint(self, state: dict, path: Path) -> None:
        with atomic_path(path) as temporary:
            torch.save(state, temporary)

    def publish_best(self) -> None:
        """``best.pt``: a copy of ``last.pt`` (the epoch just saved was the best so far)."""
        with atomic_path(self.best) as temporary:
            shutil.copyfile(self.last, temporary)

    def load_checkpoint(self, path: Path | None = None, map_location: str | torch.device = "cpu") -> dict:
        path = path or (self.best if self.best.exists() else self.last)
        self.require(path, "checkpoint")
        return torch.load(path, map_location=map_location, weights_only=False)


def _fit_imagenet_head(model: torch.nn.Module, state_dict: dict) -> None:
    """Resize a linear ImageNet head to the saved one: a backbone pretrained on K classes (``shortvid
    pretrain``) keeps a K-way head, while a model rebuilt without its checkpoint file has timm's 1000."""
    head, weight = getattr(model, "imagenet_head", None), state_dict.get("imagenet_head.weight")
    if isinstance(head, torch.nn.Linear) and weight is not None and weight.shape != head.weight.shape:
        model.imagenet_head = torch.nn.Linear(weight.shape[1], weight.shape[0],
                                              bias="imagenet_head.bias" in state_dict).to(head.weight.device)


def load_weights(model: torch.nn.Module, state_dict: dict, *, reset_class_head: bool = False) -> None:
    """``load_state_dict``, strict but for batch-norm step counters: a model saved with frozen stages
    (timm's FrozenBatchNorm2d keeps no ``num_batches_tracked``) loads into an unfrozen one.

    ``reset_class_head``: a class head (``classifier.*``) of another shape is left as the model has
    it, freshly initialised: a run started from another run's weights on other classes (the seed's
    specialists start from the general model)."""
    _fit_imagenet_head(model, state_dict)
    if reset_class_head:
        own = model.state_dict()
        state_dict = {key: value for key, value in state_dict.items()
                      if not (key.startswith("classifier.") and key in own and own[key].shape != value.shape)}
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:  # shapes that differ: another architecture, or a head of other classes
        raise RunError("checkpoint", f"weights do not fit the model: {error}") from None
    if reset_class_head:
        missing = [key for key in missing if not key.startswith("classifier.")]
    missing = [key for key in missing if not key.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise RunError("checkpoint",
                       f"weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")

