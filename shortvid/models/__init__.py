"""Video models: timm backbones per frame, temporal aggregators, video-level classifiers.

    model = create_model("tsn_resnet50", num_classes=63, pretrained=True, imagenet_head=True)
    logits = model(frames, mask)              # frames [B, T, 3, H, W], mask [B, T] bool
    model = create_model("tsn_tiny", num_classes=5, motion=2, audio=True, fusion="gate")
    logits = model(frames, mask, **model_inputs(model, batch))   # + motion, audio, audio_mask (model.inputs)
    same = create_model(**model.config)       # same architecture; then load_state_dict

Every registered model is a ``ServableModel`` (``contract``): what serving, export and the run
directory rely on. ``VideoClassifier`` (the TSN models) has more; the composites do not.
"""

from .adaptive import FrameCountSwitch
from .aggregators import Aggregator, masked_mean
from .backbones import CheckpointError
from .classifiers import ClassifierHead
from .contract import ServableModel
from .fusion import FUSION_RULES, FusedClassifier
from .inputs import INPUT_NAMES, model_inputs
from .modalities import AudioEncoder, ModalityFusion, MotionEncoder
from .registry import (
    create_aggregator,
    create_classifier,
    create_fusion,
    create_model,
    list_aggregators,
    list_classifiers,
    list_fusions,
    list_models,
    register_aggregator,
    register_classifier,
    register_fusion,
    register_model,
)
from .tsn import build_tsn
from .video import VideoClassifier

__all__ = [
    "INPUT_NAMES",
    "Aggregator",
    "AudioEncoder",
    "CheckpointError",
    "ClassifierHead",
    "FUSION_RULES",
    "FrameCountSwitch",
    "FusedClassifier",
    "ModalityFusion",
    "MotionEncoder",
    "ServableModel",
    "VideoClassifier",
    "build_tsn",
    "create_aggregator",
    "create_classifier",
    "create_fusion",
    "create_model",
    "list_aggregators",
    "list_classifiers",
    "list_fusions",
    "list_models",
    "masked_mean",
    "model_inputs",
    "register_aggregator",
    "register_classifier",
    "register_fusion",
    "register_model",
]
