"""Pretraining backbones on a large source, the way ImageNet pretraining works: ``shortvid pretrain``.

Supervised (``pretrain_supervised``): a timm backbone with a K-way class head, trained on single
frames of a labelled source corpus (any format ``load_dataset`` reads; many classes; weak labels
welcome). It is the ordinary trainer on a one-segment TSN (mean pooling of one frame, a linear head:
an image classifier fed one random keyframe of each video per epoch), so seeding, resume,
torchrun and the run directory come as they are. The result is exported as ``RUN/backbone.pth``: a
timm state dict of the whole image model, K-way head included (keys as ``timm.create_model(name,
num_classes=K).state_dict()``), which ``model.checkpoint_path`` loads into any shortvid model; with
``model.imagenet_head=true`` that K-way head is the head distillation goes through.

Self-supervised: ``shortvid.train.simclr`` (SimCLR on pairs of keyframes of the same video) and
``shortvid.train.avc`` (audio-visual correspondence: a video's frames against its sound; it also writes
``audio_encoder.pth``) write the same kind of ``backbone.pth``, without a head. ``shortvid pretrain
--method supervised|simclr|avc`` picks one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from timm.models import get_pretrained_cfg_value

from ..files import atomic_path, atomic_write
from ..models import create_model
from ..models.aggregators import MeanAggregator
from ..models.classifiers import LinearClassifier
from ..run import RunDir
from .config import ConfigError, TrainConfig
from .ranks import Ranks
from .trainer import train

BACKBONE_FILE = "backbone.pth"


def pretrain_supervised(config: TrainConfig, *, resume: bool = False) -> dict:
    """Train ``config`` as a one-frame image classifier and export ``RUN/backbone.pth``; returns what
    ``pretrain.json`` records (the backbone, its classes, the file, the last epoch's metrics)."""
    backbone = _image_model_name(config)
    config.data.k = 1
    record = train(config, resume=resume)
    if not Ranks.from_environment().main:  # under torchrun, rank 0 alone exports
        return record
    path = export_backbone(config.out)
    summary = {"method": "supervised", "backbone": backbone, "classes": len(RunDir(config.out).label_map()),
               "checkpoint": str(path), "last_epoch": record}
    atomic_write(Path(config.out) / "pretrain.json", json.dumps(summary, indent=2) + "\n")
    return summary


def export_backbone(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """A TSN run's best model (mean pooling, linear head) as a timm state dict of its backbone, the
    run's class head as the timm classifier (``RUN/backbone.pth``)."""
    run = RunDir(run_dir)
    model = run.load_model("best", "cpu")
    _require_image_model(model, str(run_dir))
    linear = model.classifier.fc
    name = model.backbone.pretrained_cfg["architecture"]
    state = dict(model.backbone.state_dict())
    head = get_pretrained_cfg_value(name, "classifier")  # timm's name for the class head: "fc", "classifier"...
    state[f"{head}.weight"] = linear.weight.detach().clone()
    state[f"{head}.bias"] = linear.bias.detach().clone()
    target = Path(out) if out else run.root / BACKBONE_FILE
    with atomic_path(target) as temporary:
        torch.save(state, temporary)
    return target


def _image_model_name(config: TrainConfig) -> str:
    """The timm name of the backbone ``config`` trains, once checked that it exports as an image model."""
    model = create_model(config.model.name, num_classes=2, **config.model.args)
    _require_image_model(model, "model")
    return model.backbone.pretrained_cfg["architecture"]


def _require_image_model(model: torch.nn.Module, where: str) -> None:
    """One frame through a TSN with mean pooling and a linear head is the backbone's image classifier."""
    if not (isinstance(getattr(model, "aggregator", None), MeanAggregator)
            and isinstance(getattr(model, "classifier", None), LinearClassifier)
            and hasattr(getattr(model, "backbone", None), "pretrained_cfg")):
        raise ConfigError(where, "pretraining exports a timm image model: a TSN (model.name=tsn, "
                                 "model.args.backbone=NAME) with mean pooling and a linear head")


__all__ = ["BACKBONE_FILE", "export_backbone", "pretrain_supervised"]
