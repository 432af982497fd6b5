"""Class scores from logits, in one vocabulary: ``sigmoid`` (multi-label: every class its own
probability; a model trained with the BCE loss, the seed's) or ``softmax`` (single-label; trained with
cross-entropy). A run records its kind (``preprocess.json``); training, serving and fusion all turn
logits into scores here."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

ScoreKind = Literal["sigmoid", "softmax"]
SCORE_KINDS: tuple[ScoreKind, ...] = ("sigmoid", "softmax")
_KIND_OF_LOSS: dict[str, ScoreKind] = {"bce": "sigmoid", "ce": "softmax"}


def score_kind(loss: str) -> ScoreKind:
    """The scores a model trained with ``loss`` (``bce`` or ``ce``) gives."""
    if loss not in _KIND_OF_LOSS:
        raise ValueError(f"unknown loss {loss!r} ({', '.join(_KIND_OF_LOSS)})")
    return _KIND_OF_LOSS[loss]


def probabilities(logits: Tensor, kind: ScoreKind) -> Tensor:
    """Class probabilities from logits ``[..., C]``."""
    if kind == "sigmoid":
        return torch.sigmoid(logits)
    if kind == "softmax":
        return torch.softmax(logits, dim=-1)
    raise ValueError(f"unknown score kind {kind!r} ({', '.join(SCORE_KINDS)})")
