"""Registered TSN models: the seed's ResNets, a MobileNetV3 student, NeXtVLAD and a tiny test net.

Each builder only sets defaults; every argument of :func:`build_tsn` can be overridden through
``create_model(name, **overrides)``.
"""

from __future__ import annotations

from typing import Any

from .backbones import create_backbone, feature_dim
from .modalities import AudioEncoder, MotionEncoder
from .registry import create_aggregator, create_classifier, create_fusion, register_model
from .video import VideoClassifier


def build_tsn(
    *,
    num_classes: int,
    backbone: str = "resnet50",
    pretrained: bool = False,
    checkpoint_path: str | None = None,
    aggregator: str = "mean",
    aggregator_args: dict[str, Any] | None = None,
    classifier: str = "linear",
    classifier_args: dict[str, Any] | None = None,
    dropout: float = 0.0,
    imagenet_head: bool = False,
    backbone_args: dict[str, Any] | None = None,
    motion: int = 0,
    motion_args: dict[str, Any] | None = None,
    audio: bool = False,
    audio_args: dict[str, Any] | None = None,
    fusion: str = "concat",
    fusion_args: dict[str, Any] | None = None,
    stream_heads: bool = False,
) -> VideoClassifier:
    """Assemble a :class:`VideoClassifier` from registered parts.

    ``dropout`` is the classifier's input dropout (``classifier_args`` may override it);
    ``backbone_args`` go to ``timm.create_model`` (e.g. ``drop_path_rate``).

    ``motion``: motion frames a keyframe the model sees (0: none), through a ``MotionEncoder(motion,
    **motion_args)`` (``backbone``, ``scale``, ``keyframe``, ``pretrained``, ``backbone_args``); ``audio``: the
    model hears, through an ``AudioEncoder(**audio_args)`` (``mels``, ``backbone``, ``checkpoint_path``: a saved
    encoder's weights, as ``shortvid pretrain --method avc`` writes them, ...). With either, the modality fusion
    ``fusion`` (``list_fusions()``; ``fusion_args``, e.g. ``dropout``: modality dropout) feeds the classifier;
    ``stream_heads`` adds a classifier on each modality's embedding for training (``VideoClassifier``).
    The encoders take ImageNet weights from timm's hub when ``pretrained`` and no ``checkpoint_path`` is given
    (a local checkpoint is for the frame backbone, and then nothing is downloaded), unless their args say
    ``pretrained`` themselves.
    With ``motion=0`` and ``audio=False`` nothing is added: the model is the keyframes-only TSN.
    """
    net, head = create_backbone(backbone, pretrained=pretrained, checkpoint_path=checkpoint_path,
                                imagenet_head=imagenet_head, **(backbone_args or {}))
    pool = create_aggregator(aggregator, feature_dim(net), **(aggregator_args or {}))
    encoder_weights = {"pretrained": pretrained and checkpoint_path is None}
    mover = MotionEncoder(motion, **{**encoder_weights, **(motion_args or {})}) if motion else None
    hearer = AudioEncoder(**{**encoder_weights, **(audio_args or {})}) if audio else None
    fuser, width = None, pool.out_features
    if mover is not None or hearer is not None:
        dims = {"visual": pool.out_features}
        dims.update({name: encoder.out_features for name, encoder in (("motion", mover), ("audio", hearer))
                     if encoder is not None})
        fuser = create_fusion(fusion, dims, **(fusion_args or {}))
        width = fuser.out_features
    scorer = create_classifier(classifier, width, num_classes, **{"dropout": dropout, **(classifier_args or {})})
    return VideoClassifier(net, pool, scorer, head, motion_encoder=mover, audio_encoder=hearer, fusion=fuser,
                           stream_heads=stream_heads and fuser is not None)


def _with_defaults(defaults: dict[str, Any], overrides: dict[str, Any]) -> VideoClassifier:
    return build_tsn(**{**defaults, **overrides})


@register_model
def tsn(**kwargs: Any) -> VideoClassifier:
    """TSN over any timm backbone (``backbone=``; ResNet50 by default), mean consensus, linear head."""
    return _with_defaults({}, kwargs)


@register_model
def tsn_resnet34(**kwargs: Any) -> VideoClassifier:
    """The seed's ResNet34 student."""
    return _with_defaults({"backbone": "resnet34"}, kwargs)


@register_model
def tsn_resnet50(**kwargs: Any) -> VideoClassifier:
    """The seed's main model and ResNet50 student/teacher."""
    return _with_defaults({"backbone": "resnet50"}, kwargs)


@register_model
def tsn_resnet101(**kwargs: Any) -> VideoClassifier:
    """The seed's ResNet101 teacher."""
    return _with_defaults({"backbone": "resnet101"}, kwargs)


@register_model
def tsn_mobilenetv3(**kwargs: Any) -> VideoClassifier:
    """A CPU-fast student: MobileNetV3-Large 1.0 (5.5 M parameters, 1280-d features)."""
    return _with_defaults({"backbone": "mobilenetv3_large_100"}, kwargs)


@register_model
def tsn_mobilenetv3_small(**kwargs: Any) -> VideoClassifier:
    """The fastest student: MobileNetV3-Small 1.0 (2.5 M parameters, 1024-d features)."""
    return _with_defaults({"backbone": "mobilenetv3_small_100"}, kwargs)


@register_model
def tsn_nextvlad_resnet50(**kwargs: Any) -> VideoClassifier:
    """TSN features from ResNet50 pooled by NeXtVLAD (the slides' "TSN + NeXtVLAD")."""
    return _with_defaults({"backbone": "resnet50", "aggregator": "nextvlad"}, kwargs)


@register_model
def tsn_tiny(**kwargs: Any) -> VideoClassifier:
    """For tests and CPU demos: timm's ``test_resnet`` (0.47 M parameters, 96-d features), a
    ResNet like the seed's, so loading and distillation run the same code as the real nets."""
    return _with_defaults({"backbone": "test_resnet"}, kwargs)
