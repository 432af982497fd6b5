"""Temporal aggregators: per-frame features ``[B, T, D]`` -> one video vector ``[B, D']``.

The YouTube-8M split: an aggregator pools frames, a separate classifier scores the pooled vector.
Every aggregator takes ``mask`` ([B, T] bool, True = real frame) and ignores padded frames
entirely: their values never reach the output, whatever they hold. To add one, subclass
:class:`Aggregator`, set ``out_features``, and register it with ``@register_aggregator("name")``.

YouTube-8M's heads: ``netvlad``, ``netfv``, ``dbof``, ``lstm``, ``bigru`` and ``nextvlad``; its
"logistic" model (logistic regression on mean-pooled features) is ``mean`` + the ``linear`` classifier.
The frame count T is dynamic: one model serves videos of any length.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

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


def masked_max(x: Tensor, mask: Tensor | None) -> Tensor:
    """Element-wise maximum of ``x`` [B, T, D] over the valid frames of ``mask``; zero where none is valid."""
    if mask is None:
        return x.amax(1)
    keep = mask.bool().unsqueeze(-1)
    pooled = torch.where(keep, x, torch.full((), float("-inf"), dtype=x.dtype, device=x.device)).amax(1)
    return torch.where(keep.any(1), pooled, torch.zeros((), dtype=x.dtype, device=x.device))


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
        return masked_max(x, mask)


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


def _intra_l2(descriptor: Tensor) -> Tensor:
    """VLAD normalisation of ``descriptor`` [B, K, D]: L2 per cluster, then over the flattened vector."""
    return F.normalize(F.normalize(descriptor, dim=-1).flatten(1), dim=-1)


class _ClusterAggregator(Aggregator):
    """NetVLAD/NetFV's shared parts: soft assignment of frames to ``clusters`` learnable centres, and
    an optional FC to ``hidden_size`` and optional context gating on the pooled descriptor.

    The assignment has a bias and no batch norm over frames (unlike YT-8M's Willow code), so padded
    frames cannot move batch statistics, as in :class:`NeXtVLAD`.
    """

    def __init__(self, in_features: int, descriptor: int, clusters: int, hidden_size: int | None, gating: bool):
        out = descriptor if hidden_size is None else hidden_size
        super().__init__(in_features, out)
        self.clusters = clusters
        self.assignment = nn.Linear(in_features, clusters)
        self.centres = nn.Parameter(torch.randn(clusters, in_features) / math.sqrt(in_features))
        self.project = nn.Identity() if hidden_size is None else nn.Linear(descriptor, hidden_size)
        self.gating = ContextGating(out) if gating else nn.Identity()

    def assign(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Frames with padding zeroed, and their soft assignments [B, T, K] (zero on padded frames)."""
        x = zero_padding(x, mask)
        return x, zero_padding(self.assignment(x).softmax(-1), mask)

    def head(self, descriptor: Tensor) -> Tensor:
        return self.gating(self.project(descriptor))


@register_aggregator("netvlad")
class NetVLAD(_ClusterAggregator):
    """NetVLAD (Arandjelović et al., CVPR 2016; YT-8M's Willow head): per cluster, the sum of the
    frames' residuals to its centre weighted by soft assignment; intra-normalised then L2-normalised.

    Output: ``clusters * in_features`` (32 clusters: a rich, order-free descriptor at 32x the input
    size), or ``hidden_size`` with the optional projection; ``gating`` adds context gating.
    """

    def __init__(self, in_features: int, *, clusters: int = 32, hidden_size: int | None = None, gating: bool = False):
        super().__init__(in_features, clusters * in_features, clusters, hidden_size, gating)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x, weights = self.assign(x, mask)
        vlad = torch.einsum("btk,btd->bkd", weights, x) - weights.sum(1).unsqueeze(-1) * self.centres
        return self.head(_intra_l2(vlad))


@register_aggregator("netfv")
class NetFV(_ClusterAggregator):
    """NetFisherVector (YT-8M's Willow head): per cluster, the assignment-weighted first and second
    order statistics of the frames' residuals scaled by learnable per-cluster deviations, each
    intra-normalised and L2-normalised, concatenated.

    Output: ``2 * clusters * in_features`` (16 clusters: the same size as NetVLAD's 32), or
    ``hidden_size`` with the optional projection; ``gating`` adds context gating.
    """

    def __init__(self, in_features: int, *, clusters: int = 16, hidden_size: int | None = None, gating: bool = False):
        super().__init__(in_features, 2 * clusters * in_features, clusters, hidden_size, gating)
        self.log_scales = nn.Parameter(torch.zeros(clusters, in_features))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x, weights = self.assign(x, mask)
        residuals = (x.unsqueeze(2) - self.centres) / self.log_scales.exp()  # [B, T, K, D]
        first = torch.einsum("btk,btkd->bkd", weights, residuals)
        second = torch.einsum("btk,btkd->bkd", weights, residuals.square() - 1)
        return self.head(torch.cat([_intra_l2(first), _intra_l2(second)], 1))


@register_aggregator("dbof")
class DeepBagOfFrames(Aggregator):
    """Deep Bag of Frames (YT-8M): each frame projected up to ``clusters`` units (FC + BN + ReLU),
    pooled over frames (``pool``: ``"max"`` or ``"mean"``), then a ``hidden_size`` FC + BN + ReLU.

    The frame batch norm sees only the valid frames, so padding cannot move its statistics. In
    training both batch norms need more than one value (valid frames, videos) per batch.
    """

    def __init__(self, in_features: int, *, clusters: int = 1024, hidden_size: int = 512, pool: str = "max"):
        if pool not in ("max", "mean"):
            raise ValueError(f"pool must be 'max' or 'mean', not {pool!r}")
        super().__init__(in_features, hidden_size)
        self.pool = pool
        self.clusters = clusters
        self.frame_fc = nn.Linear(in_features, clusters, bias=False)
        self.frame_norm = nn.BatchNorm1d(clusters)
        self.hidden = nn.Linear(clusters, hidden_size, bias=False)
        self.hidden_norm = nn.BatchNorm1d(hidden_size)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        batch, frames = x.shape[:2]
        valid = x.new_ones(batch, frames, dtype=torch.bool) if mask is None else mask.bool()
        if bool(valid.any()):
            projected = F.relu(self.frame_norm(self.frame_fc(x[valid])))
            per_frame = projected.new_zeros(batch, frames, self.clusters).index_put((valid,), projected)
        else:
            per_frame = x.new_zeros(batch, frames, self.clusters)
        pooled = masked_max(per_frame, valid) if self.pool == "max" else masked_mean(per_frame, valid)
        return F.relu(self.hidden_norm(self.hidden(pooled)))


def final_states(rnn: nn.RNNBase, x: Tensor, mask: Tensor | None) -> Tensor:
    """The last layer's final hidden states [directions, B, H] of ``rnn`` run over each video's valid
    frames only, in order (packed, so padding is never seen); zero for a video with no valid frame."""
    batch, frames = x.shape[:2]
    valid = x.new_ones(batch, frames, dtype=torch.bool) if mask is None else mask.bool()
    order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)  # valid frames first, in order
    x = zero_padding(x, valid).gather(1, order.unsqueeze(-1).expand_as(x))
    lengths = valid.sum(1)
    packed = pack_padded_sequence(x, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False)
    _, state = rnn(packed)
    hidden = state[0] if isinstance(state, tuple) else state  # an LSTM returns (h, c)
    hidden = hidden.view(rnn.num_layers, -1, batch, rnn.hidden_size)[-1]
    zero = torch.zeros((), dtype=hidden.dtype, device=hidden.device)
    return torch.where((lengths > 0).view(1, batch, 1), hidden, zero)


@register_aggregator("lstm")
class LSTMAggregator(Aggregator):
    """YT-8M's LSTM model: an LSTM over the valid frames, the video vector its hidden state after
    the last one (order-aware; 512 units, one layer: small enough for 3-8 frames)."""

    def __init__(self, in_features: int, *, hidden_size: int = 512, num_layers: int = 1, dropout: float = 0.0):
        super().__init__(in_features, hidden_size)
        self.rnn = nn.LSTM(in_features, hidden_size, num_layers, batch_first=True, dropout=dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return final_states(self.rnn, x, mask)[0]


@register_aggregator("bigru")
class BiGRUAggregator(Aggregator):
    """A bidirectional GRU over the valid frames: the forward state after the last valid frame and
    the backward state after the first, concatenated (order-aware; output ``2 * hidden_size``)."""

    def __init__(self, in_features: int, *, hidden_size: int = 512, num_layers: int = 1, dropout: float = 0.0):
        super().__init__(in_features, 2 * hidden_size)
        self.rnn = nn.GRU(in_features, hidden_size, num_layers, batch_first=True, dropout=dropout, bidirectional=True)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        forward, backward = final_states(self.rnn, x, mask)
        return torch.cat([forward, backward], -1)
