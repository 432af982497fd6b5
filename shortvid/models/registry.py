"""Name registries for models, aggregators, classifiers and modality fusions, and the factories over them.

timm's pattern: small builders register themselves under a name with a decorator, and one factory
per kind builds by name. Adding an aggregator is one registered class; nothing else changes.
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable, Generic, TypeVar

from torch import nn

if TYPE_CHECKING:
    from .aggregators import Aggregator
    from .classifiers import ClassifierHead
    from .contract import ServableModel
    from .modalities import ModalityFusion

T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    """A name -> builder map that refuses duplicates and suggests close names for typos."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name_or_obj: str | T | None = None) -> Any:
        """Decorator: ``@reg.register`` (uses ``__name__``) or ``@reg.register("name")``."""
        if callable(name_or_obj):
            return self._add(name_or_obj.__name__, name_or_obj)

        def decorator(obj: T) -> T:
            return self._add(name_or_obj or obj.__name__, obj)

        return decorator

    def _add(self, name: str, obj: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj
        return obj

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._entries, n=3)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            raise ValueError(
                f"unknown {self.kind} {name!r}{hint}; registered: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


MODELS: Registry[Callable[..., "ServableModel"]] = Registry("model")
AGGREGATORS: Registry[Callable[..., "Aggregator"]] = Registry("aggregator")
CLASSIFIERS: Registry[Callable[..., "ClassifierHead"]] = Registry("classifier")
FUSIONS: Registry[Callable[..., "ModalityFusion"]] = Registry("modality fusion")

register_model = MODELS.register
register_aggregator = AGGREGATORS.register
register_classifier = CLASSIFIERS.register
register_fusion = FUSIONS.register


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return MODELS.names()


def list_aggregators() -> list[str]:
    """Registered aggregator names, sorted."""
    return AGGREGATORS.names()


def list_classifiers() -> list[str]:
    """Registered classifier names, sorted."""
    return CLASSIFIERS.names()


def list_fusions() -> list[str]:
    """Registered modality fusion names, sorted."""
    return FUSIONS.names()


def create_aggregator(name: str, in_features: int, **kwargs: Any) -> "Aggregator":
    """Build a temporal aggregator: ``[B, T, in_features]`` (+ mask) -> ``[B, out_features]``."""
    return AGGREGATORS.get(name)(in_features, **kwargs)


def create_classifier(name: str, in_features: int, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build a video-level classifier: ``[B, in_features]`` -> logits ``[B, num_classes]``."""
    return CLASSIFIERS.get(name)(in_features, num_classes, **kwargs)


def create_fusion(name: str, dims: Mapping[str, int], **kwargs: Any) -> "ModalityFusion":
    """Build a modality fusion: ``{modality: [B, dims[modality]]}`` -> ``[B, out_features]`` (``models.modalities``)."""
    return FUSIONS.get(name)(dict(dims), **kwargs)


def create_model(
    name: str,
    *,
    num_classes: int,
    pretrained: bool = False,
    checkpoint_path: str | os.PathLike | None = None,
    **overrides: Any,
) -> "ServableModel":
    """Build a registered video model: a ``ServableModel`` (``models.contract``), whatever its class.

    ``pretrained=True`` loads the backbone's ImageNet weights from timm's hub; ``checkpoint_path``
    loads them from a local timm/torchvision state dict instead (and then nothing is downloaded).
    ``overrides`` replace the builder's defaults (TSN models: ``backbone=``, ``aggregator=``,
    ``classifier=``, ``dropout=``, ``imagenet_head=``, ``aggregator_args=``, ``classifier_args=``,
    ``backbone_args=``, ``motion=``, ``audio=``, ``fusion=`` and their ``*_args``; the composites ``fused``
    and ``by_frame_count``: their members' configs).

    The result's ``config`` holds name, class count and overrides, but not the weight source:
    ``create_model(**model.config)`` rebuilds the architecture, ready for ``load_state_dict``.
    """
    model = MODELS.get(name)(
        num_classes=num_classes,
        pretrained=pretrained,
        checkpoint_path=None if checkpoint_path is None else os.fspath(checkpoint_path),
        **overrides,
    )
    model.config = {"name": name, "num_classes": num_classes, **architecture(overrides)}
    return model


def architecture(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of builder ``overrides`` without the weight sources inside them (an encoder's
    ``checkpoint_path`` in ``audio_args``): what rebuilds the architecture, whose weights a run's checkpoint
    brings, so a run still loads once the pretrained file has gone."""
    return {key: {k: v for k, v in value.items() if k != "checkpoint_path"}
            if key.endswith("_args") and isinstance(value, Mapping) else value
            for key, value in copy.deepcopy(dict(overrides)).items()}
