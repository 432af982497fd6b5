"""The video classifier: a per-frame backbone, a temporal aggregator and a video-level classifier."""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import Tensor, nn

from .aggregators import Aggregator, masked_mean
from .backbones import feature_dim
from .classifiers import ClassifierHead


class VideoClassifier(nn.Module):
    """TSN-style model: ``frames [B, T, 3, H, W]`` -> backbone per frame -> aggregator -> logits.

    ``mask`` [B, T] (bool, True = real frame) marks the valid frames of padded videos. Given to
    ``forward``/``forward_features``, padded frames are not even run through the backbone, so
    they neither cost time nor move batch-norm statistics; their features come out as zeros.
    ``imagenet_head`` is the backbone's original 1000-way classifier, kept for distillation.
    ``config`` is set by ``create_model``: ``create_model(**config)`` rebuilds this architecture.
    """

    def __init__(
        self,
        backbone: nn.Module,
        aggregator: Aggregator,
        classifier: ClassifierHead,
        imagenet_head: nn.Module | None = None,
    ):
        super().__init__()
        self.num_features = feature_dim(backbone)
        if aggregator.in_features != self.num_features:
            raise ValueError(f"aggregator takes {aggregator.in_features} features, backbone gives {self.num_features}")
        if classifier.in_features != aggregator.out_features:
            raise ValueError(f"classifier takes {classifier.in_features} features, "
                             f"aggregator gives {aggregator.out_features}")
        self.backbone = backbone.to(memory_format=torch.channels_last)
        self.aggregator = aggregator
        self.classifier = classifier
        self.imagenet_head = imagenet_head
        self.num_classes = classifier.num_classes
        self.config: dict[str, Any] = {}

    @property
    def data_config(self) -> dict[str, Any]:
        """The backbone's preprocessing per timm: input_size, interpolation, mean, std, crop_pct."""
        return timm.data.resolve_model_data_config(self.backbone)

    def forward_features(self, frames: Tensor, mask: Tensor | None = None) -> Tensor:
        """Per-frame features ``[B, T, D]`` from one backbone pass over the valid frames."""
        batch, frames_per_video = frames.shape[:2]
        flat = frames.flatten(0, 1)
        valid = None if mask is None else mask.bool().flatten()
        if valid is not None and bool(valid.all()):
            valid = None
        if valid is not None:
            flat = flat[valid]
        if flat.shape[0] == 0:
            return frames.new_zeros(batch, frames_per_video, self.num_features)
        features = self.backbone(flat.contiguous(memory_format=torch.channels_last))
        if valid is not None:
            features = features.new_zeros(valid.shape[0], features.shape[1]).index_put((valid,), features)
        return features.view(batch, frames_per_video, -1)

    def forward_head(self, features: Tensor, mask: Tensor | None = None, pre_logits: bool = False) -> Tensor:
        """Logits ``[B, C]`` from frame features ``[B, T, D]``; the video vector if ``pre_logits``."""
        video = self.aggregator(features, mask)
        return video if pre_logits else self.classifier(video)

    def forward(self, frames: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.forward_head(self.forward_features(frames, mask), mask)

    def forward_all(self, frames: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        """Everything training needs from one pass: ``logits`` [B, C], ``features`` [B, T, D] and,
        with the ImageNet head kept, ``imagenet`` [B, 1000]: its logits averaged over valid frames."""
        features = self.forward_features(frames, mask)
        out = {"logits": self.forward_head(features, mask), "features": features}
        if self.imagenet_head is not None:
            out["imagenet"] = masked_mean(self.imagenet_head(features), mask, dim=1)
        return out

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the class head with a fresh one for ``num_classes`` classes (same kind, same device)."""
        reference = next(self.classifier.parameters())
        self.classifier.reset_classifier(num_classes)
        self.classifier.to(device=reference.device, dtype=reference.dtype)
        self.num_classes = num_classes
        self.config["num_classes"] = num_classes
