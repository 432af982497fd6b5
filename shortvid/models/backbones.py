"""Per-frame backbones: timm image models with their ImageNet classifier split off.

A backbone is built whole (with its 1000-way classifier), given its weights, then its classifier
is detached: the backbone returns pooled features (like ``num_classes=0``) and the classifier
becomes the optional ImageNet head that distillation uses. So the head always carries the
checkpoint's weights when the checkpoint has them, whichever way they were loaded.
"""

from __future__ import annotations

import logging
from typing import Any

import timm
import torch
from torch import nn

from ..errors import ShortvidError

log = logging.getLogger(__name__)


class CheckpointError(ShortvidError):
    """A backbone checkpoint could not be read or does not fit the backbone."""


def feature_dim(backbone: nn.Module) -> int:
    """Size of the pooled features a classifier-less timm model returns.

    timm's ``head_hidden_size`` when set: MobileNetV3's pooled features pass through a conv head,
    so they are wider than ``num_features``.
    """
    return int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)


def _classifier_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the model's classifier (e.g. ``fc.weight``, ``fc.bias``)."""
    head = model.get_classifier()
    prefix = next(name for name, module in model.named_modules() if module is head)
    return {f"{prefix}.{key}" for key in head.state_dict()}


def load_backbone_checkpoint(model: nn.Module, path: str) -> bool:
    """Load a timm- or torchvision-layout state dict into a whole timm model (classifier included).

    Accepts a plain state dict or one wrapped as ``{"state_dict"|"model"|"state_dict_ema": ...}``,
    with or without ``module.`` prefixes, and with or without the classifier. Every backbone
    weight must be present and match. Returns whether the classifier was loaded. A classifier of
    another class count (a backbone pretrained on K classes with ``shortvid pretrain``) is kept: the
    model's classifier is resized to K first, so that K-way head is what distillation uses.
    """
    try:
        state = timm.models.load_state_dict(path, use_ema=True, device="cpu")
    except FileNotFoundError:
        raise CheckpointError(path, "no such checkpoint file") from None
    except Exception as exc:
        raise CheckpointError(path, f"cannot read checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(path, "not a state dict of tensors")

    classifier = _classifier_keys(model)
    expected = model.state_dict()
    for key in classifier & state.keys():
        if state[key].shape != expected[key].shape:
            classes = int(state[key].shape[0])
            log.info("%s: a %d-way classifier: the head takes its %d classes", path, classes, classes)
            model.reset_classifier(classes)
            classifier = _classifier_keys(model)
            break
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(path, f"weights do not fit {type(model).__name__}: {exc}") from exc

    missing = {k for k in result.missing_keys if not k.endswith("num_batches_tracked")} - classifier
    if missing or result.unexpected_keys:
        raise CheckpointError(path, (
            f"keys do not match the backbone: {len(missing)} missing (e.g. {sorted(missing)[:3]}), "
            f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:3]})"))
    return not (classifier & set(result.missing_keys))


def create_backbone(
    name: str,
    *,
    pretrained: bool = False,
    checkpoint_path: str | None = None,
    imagenet_head: bool = False,
    **timm_kwargs: Any,
) -> tuple[nn.Module, nn.Module | None]:
    """Build timm model ``name`` as a feature extractor; return it and, if asked, its ImageNet head.

    Weights: ``checkpoint_path`` (a local state dict; takes precedence), else timm's hub when
    ``pretrained``, else random. ``timm_kwargs`` go to ``timm.create_model`` (e.g.
    ``drop_path_rate``); the class count is not one of them, the head keeps the checkpoint's.
    """
    if "num_classes" in timm_kwargs:
        raise ValueError("backbone num_classes is fixed: the backbone keeps its ImageNet classifier as the head")
    from_hub = pretrained and checkpoint_path is None
    model = timm.create_model(name, pretrained=from_hub, **timm_kwargs)
    head_loaded = from_hub
    if checkpoint_path is not None:
        head_loaded = load_backbone_checkpoint(model, checkpoint_path)
    head = model.get_classifier() if imagenet_head else None
    if imagenet_head and not head_loaded and (pretrained or checkpoint_path is not None):
        log.warning("%s: the weights hold no ImageNet classifier; the ImageNet head starts fresh",
                    checkpoint_path or name)
    model.reset_classifier(0)
    return model, head
