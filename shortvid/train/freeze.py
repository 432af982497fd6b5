"""Freezing the first stages of a backbone, for the seed's hard-set fine-tuning (step 1: train the
high-level layers while shallow features, which converge easily, stay fixed).

Generic over timm backbones: their ``group_matcher`` names the stem and the stages, so "stage"
means the same thing for a ResNet (layer1..4) and a MobileNet (blocks.N).
"""

from __future__ import annotations

from timm.models import group_modules
from timm.utils.model import freeze, unfreeze

from ..models import VideoClassifier


def stage_modules(model: VideoClassifier, stages: int) -> list[str]:
    """Names (under ``model``) of the backbone's stem and first ``stages`` stages."""
    backbone = model.backbone
    groups = group_modules(backbone, backbone.group_matcher(coarse=True))
    return [f"backbone.{name}" for index in sorted(groups)[: stages + 1] for name in groups[index]]


def freeze_stages(model: VideoClassifier, stages: int = 2) -> list[str]:
    """Stop gradients and batch-norm statistics in the stem and the first ``stages`` stages.

    Batch norms there become timm's ``FrozenBatchNorm2d``, so ``model.train()`` cannot move their
    statistics. Returns the frozen module names.
    """
    names = stage_modules(model, stages)
    freeze(model, names)
    return names


def unfreeze_all(model: VideoClassifier, names: list[str]) -> None:
    """Step 2 of the seed's recipe: train the whole network again."""
    unfreeze(model, names)
