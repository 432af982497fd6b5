"""Temporal aggregators: per-frame features ``[B, T, D]`` -> one video vector ``[B, D']``.

The YouTube-8M split: an aggregator pools frames, a separate classifier scores the pooled vector.
Every aggregator takes ``mask`` ([B, T] bool, True = real frame) and ignores padded frames
entirely: their values never reach the output, whatever they hold. To add one, subclass
:class:`Aggregator`, set ``out_features``, and register it with ``@register_aggregator("name")``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import register_aggregator


def zero_padding(x: Tensor, mask: Tensor | None) -> Tensor:
    """``x`` [B, T, ...] with padded frames set to zero (so even NaN padding cannot leak)."""
    if mask is None:
        return x
    keep = mask.bool().reshape(mask.shape + (1,) * (x.dim() - mask.dim()))
    return torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_mean(x: Tensor, mask: Tensor | None, dim: int = 1) -> Tensor:
    """Mean of ``x`` [B, T, ...] over the valid frames of ``mask`` [B, T]; zero where none is valid."""
    if mask is None:
        return x.mean(dim)
    weights = mask.to(x.dtype).reshape(mask.shape + (1,) * (x.dim() - mask.dim()))
    total = zero_padding(x, mask).sum(dim)
    return total / weights.sum(dim).clamp_min(1.0)


class Aggregator(nn.Module):
    """Base class: ``forward(x [B, T, in_features], mask [B, T] | None) -> [B, out_features]``."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        raise NotImplementedError


@register_aggregator("mean")
class MeanAggregator(Aggregator):
    """TSN's segmental consensus: the average of the frames' features."""

    def __init__(self, in_features: int):
        super().__init__(in_features, in_features)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return masked_mean(x, mask, dim=1)


@register_aggregator("max")
class MaxAggregator(Aggregator):
    """Element-wise maximum over frames; zero for a video with no valid frame."""

    def __init__(self, in_features: int):
        super().__init__(in_features, in_features)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:
            return x.amax(1)
        keep = mask.bool().unsqueeze(-1)
        pooled = torch.where(keep, x, torch.full((), float("-inf"), dtype=x.dtype, device=x.device)).amax(1)
        return torch.where(keep.any(1), pooled, torch.zeros((), dtype=x.dtype, device=x.device))


class ContextGating(nn.Module):
    """Squeeze-and-excitation style gating (NeXtVLAD's SE context gating): ``x * sigmoid(g(x))``."""

    def __init__(self, features: int, reduction: int = 8):
        super().__init__()
        hidden = max(1, features // reduction)
        self.squeeze = nn.Linear(features, hidden)
        self.excite = nn.Linear(hidden, features)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.excite(F.relu(self.squeeze(x))))


@register_aggregator("nextvlad")
class NeXtVLAD(Aggregator):
    """NeXtVLAD (Lin et al., ECCV workshops 2018), then reduction FC + BN + SE context gating.

    Each frame is expanded by ``expansion`` (lambda) and split into ``groups`` (G) lower-dimensional
    descriptors of size ``expansion * in_features / groups``. Each descriptor is softly assigned to
    ``clusters`` (K) centres and weighted by a sigmoid attention of its group; the weighted
    residuals to the centres are summed over frames and groups, L2-normalised per cluster
    (intra-normalisation), then over the whole vector, and reduced to ``hidden_size``.

    The assignment has a bias and no batch norm over frames (unlike the paper), so padded frames
    cannot move batch statistics: a padded video gives exactly the same output in training too.
    The batch norm after the reduction needs more than one video per batch in training.
    """

    def __init__(
        self,
        in_features: int,
        *,
        expansion: int = 2,
        groups: int = 8,
        clusters: int = 64,
        hidden_size: int = 1024,
        gating_reduction: int = 8,
        dropout: float = 0.0,
    ):
        super().__init__(in_features, hidden_size)
        expanded = expansion * in_features
        if expanded % groups:
            raise ValueError(f"expansion * in_features ({expanded}) must be divisible by groups ({groups})")
        self.groups = groups
        self.clusters = clusters
        self.group_features = expanded // groups
        self.expand = nn.Linear(in_features, expanded)
        self.attention = nn.Linear(expanded, groups)
        self.assignment = nn.Linear(expanded, groups * clusters)
        self.centres = nn.Parameter(torch.randn(clusters, self.group_features) / math.sqrt(clusters))
        self.dropout = nn.Dropout(dropout)
        self.reduce = nn.Linear(clusters * self.group_features, hidden_size)
        self.norm = nn.BatchNorm1d(hidden_size)
        self.gating = ContextGating(hidden_size, gating_reduction)

    @property
    def vlad_features(self) -> int:
        """Size of the VLAD descriptor before the reduction FC: K * lambda * D / G."""
        return self.clusters * self.group_features

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        batch, frames, _ = x.shape
        expanded = self.expand(zero_padding(x, mask))
        descriptors = expanded.view(batch, frames, self.groups, self.group_features)
        attention = torch.sigmoid(self.attention(expanded))
        assignment = self.assignment(expanded).view(batch, frames, self.groups, self.clusters).softmax(-1)
        weights = zero_padding(assignment * attention.unsqueeze(-1), mask)
        vlad = torch.einsum("btgk,btgd->bkd", weights, descriptors)
        vlad = vlad - weights.sum((1, 2)).unsqueeze(-1) * self.centres
        vlad = F.normalize(vlad, dim=-1)
        vlad = F.normalize(vlad.flatten(1), dim=-1)
        return self.gating(self.norm(self.reduce(self.dropout(vlad))))
