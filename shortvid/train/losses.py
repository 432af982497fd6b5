"""Losses: classification (BCE or CE) and the two distillation terms of issue 4.

The seed's distillation compares the teacher's and the student's 1000-way ImageNet heads (kept as
auxiliary outputs by `create_model(..., imagenet_head=True)`): the squared difference of the
L2-normalised outputs, summed over the 1000 outputs. For backbones without an ImageNet head,
Hinton-style distillation on the class logits is offered instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import ConfigError


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    """``bce``: multi-label binary cross-entropy (the seed's); ``ce``: softmax cross-entropy on the
    label set spread evenly (a multi-label video's labels share the target mass)."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, targets)
    if kind == "ce":
        return F.cross_entropy(logits, targets / targets.sum(dim=1, keepdim=True).clamp_min(1))
    raise ConfigError("optim.loss", f"unknown loss {kind!r} (bce, ce)")


def imagenet_distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The seed's term: sum over outputs of (N(teacher) - N(student))^2, N the L2 normalisation,
    averaged over the batch. ``student`` and ``teacher`` are ImageNet-head outputs [B, 1000]; the
    teacher gets no gradient."""
    difference = F.normalize(teacher.detach().float(), dim=1) - F.normalize(student.float(), dim=1)
    return difference.pow(2).sum(dim=1).mean()


def logit_distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 4.0,
                            kind: str = "bce") -> torch.Tensor:
    """Hinton et al.'s soft targets at ``temperature``, scaled by T^2 so gradients keep their size.

    ``bce``: per-class sigmoid soft targets (multi-label); ``ce``: KL divergence between softmaxes.
    """
    t = temperature
    if kind == "bce":
        soft = torch.sigmoid(teacher.detach().float() / t)
        return F.binary_cross_entropy_with_logits(student.float() / t, soft) * t * t
    log_student = F.log_softmax(student.float() / t, dim=1)
    log_teacher = F.log_softmax(teacher.detach().float() / t, dim=1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean") * t * t
