"""Per-group specialists fused with the general model (the seed's per-group models).

A specialist is trained on one label group's classes only (``shortvid train --group NAME``), so it
can tell confusable classes apart but cannot say whether a video belongs to its group at all. The
general model says that. For class ``j`` of group ``g`` with specialist probabilities ``q`` and
general probabilities ``p``, the fused score is, by rule:

    gate       c_g * q_j                      the specialist decides within the group
    mean       (p_j + c_g * q_j) / 2          both models vote
    geometric  sqrt(p_j * c_g * q_j)          both must agree

where ``c_g`` is the general model's confidence that the video is in group ``g``: the probability
that at least one of its classes applies, ``1 - prod(1 - p_i)``, for sigmoid scores, and the sum of
its classes' probabilities for softmax scores. Classes outside every specialist's group keep ``p_j``.
``shortvid fuse`` measures every rule on validation data and keeps the best.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .contract import ServableModel
from .inputs import given, inputs_of, member_inputs, ordered, shared_sizes
from .registry import create_model, register_model
from .scores import probabilities

FUSION_RULES = ("gate", "mean", "geometric")


def group_confidence(general: Tensor, class_ids: Tensor, kind: str) -> Tensor:
    """``[B]``: how likely the general model finds it that a video carries one of ``class_ids``."""
    members = general.index_select(-1, class_ids)
    if kind == "softmax":
        return members.sum(-1).clamp(max=1.0)
    return 1.0 - torch.prod(1.0 - members, dim=-1)


def fuse_scores(general: Tensor, specialists: list[tuple[Tensor, Tensor]], general_kind: str, rule: str) -> Tensor:
    """Fused probabilities ``[B, C]`` from the general model's ``[B, C]`` and each specialist's
    ``(probabilities [B, K], class ids [K] in the general model's numbering)``."""
    if rule not in FUSION_RULES:
        raise ValueError(f"unknown fusion rule {rule!r} ({', '.join(FUSION_RULES)})")
    fused = general
    for scores, class_ids in specialists:
        gated = group_confidence(general, class_ids, general_kind).unsqueeze(-1) * scores
        own = general.index_select(-1, class_ids)
        if rule == "gate":
            combined = gated
        elif rule == "mean":
            combined = (own + gated) / 2
        else:
            combined = torch.sqrt((own * gated).clamp_min(0.0))
        # scatter, not an indexed assignment: it leaves the inputs alone and exports to ONNX
        fused = fused.scatter(-1, class_ids.expand_as(combined), combined)
    return fused


class FusedClassifier(nn.Module):
    """The general model and its group specialists as one model: ``forward`` gives the log-odds of
    the fused probabilities, so a run serving it reads its scores with a sigmoid like any other.
    A ``ServableModel``, not a ``VideoClassifier``: it has no backbone or heads of its own.

    Inputs come normalised for the general model; each specialist gets them re-normalised for its
    own backbone (the motion frames too). All members see the same frames at the same input size.
    ``inputs`` is the union of the members' (``models.inputs``); each member is given the ones it takes.
    """

    def __init__(self, general: ServableModel, general_scores: str, specialists: list[ServableModel],
                 specialist_scores: list[str], class_ids: list[list[int]], rule: str = "gate",
                 renormalise: list[tuple[list[float], list[float]]] | None = None):
        super().__init__()
        if not (len(specialists) == len(specialist_scores) == len(class_ids)):
            raise ValueError("one score kind and one class list per specialist")
        for ids, specialist in zip(class_ids, specialists, strict=True):
            if len(ids) != specialist.num_classes:
                raise ValueError(f"a specialist of {specialist.num_classes} classes was given {len(ids)} class ids")
        flat = [i for ids in class_ids for i in ids]
        if len(flat) != len(set(flat)) or any(not 0 <= i < general.num_classes for i in flat):
            raise ValueError("specialists' classes must be distinct classes of the general model")
        if rule not in FUSION_RULES:
            raise ValueError(f"unknown fusion rule {rule!r} ({', '.join(FUSION_RULES)})")
        self.general = general
        self.specialists = nn.ModuleList(specialists)
        self.general_scores = general_scores
        self.specialist_scores = list(specialist_scores)
        self.rule = rule
        self.num_classes = general.num_classes
        self.imagenet_head = None
        self.inputs = ordered(name for member in (general, *specialists) for name in inputs_of(member))
        self.motion_frames, self.mels = shared_sizes((general, *specialists))
        self.config: dict[str, Any] = {}
        for index, ids in enumerate(class_ids):
            self.register_buffer(f"class_ids_{index}", torch.tensor(ids, dtype=torch.long), persistent=False)
            scale, shift = renormalise[index] if renormalise else ([1.0] * 3, [0.0] * 3)
            self.register_buffer(f"scale_{index}", torch.tensor(scale).view(1, 1, -1, 1, 1), persistent=False)
            self.register_buffer(f"shift_{index}", torch.tensor(shift).view(1, 1, -1, 1, 1), persistent=False)

    @property
    def data_config(self) -> dict[str, Any]:
        return self.general.data_config

    def class_ids(self, index: int) -> Tensor:
        return getattr(self, f"class_ids_{index}")

    def parts(self, frames: Tensor, mask: Tensor | None = None, **extra: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The general model's probabilities ``[B, C]`` and each specialist's ``[B, K]``; ``extra``: the
        inputs besides frames (``inputs``)."""
        general = probabilities(self.general(frames, mask, **member_inputs(self.general, extra)).float(),
                                self.general_scores)
        own = []
        for index, (specialist, kind) in enumerate(zip(self.specialists, self.specialist_scores, strict=True)):
            scale, shift = getattr(self, f"scale_{index}"), getattr(self, f"shift_{index}")
            inputs = frames * scale + shift
            theirs = member_inputs(specialist, extra)
            if "motion" in theirs:  # [B, T, M, 3, S, S]: one more axis before the channels
                theirs["motion"] = theirs["motion"] * scale.unsqueeze(1) + shift.unsqueeze(1)
            own.append(probabilities(specialist(inputs, mask, **theirs).float(), kind))
        return general, own

    def fuse(self, general: Tensor, own: list[Tensor], rule: str | None = None) -> Tensor:
        pairs = [(scores, self.class_ids(index)) for index, scores in enumerate(own)]
        return fuse_scores(general, pairs, self.general_scores, rule or self.rule)

    def forward(self, frames: Tensor, mask: Tensor | None = None, *, motion: Tensor | None = None,
                audio: Tensor | None = None, audio_mask: Tensor | None = None) -> Tensor:
        extra = given(motion=motion, audio=audio, audio_mask=audio_mask)
        return torch.logit(self.fuse(*self.parts(frames, mask, **extra)), eps=1e-6)

    def forward_all(self, frames: Tensor, mask: Tensor | None = None, *, motion: Tensor | None = None,
                    audio: Tensor | None = None, audio_mask: Tensor | None = None) -> dict[str, Tensor]:
        return {"logits": self.forward(frames, mask, motion=motion, audio=audio, audio_mask=audio_mask)}


def renormalisation(mean: list[float], std: list[float], member_mean: list[float],
                    member_std: list[float]) -> tuple[list[float], list[float]]:
    """Scale and shift turning inputs normalised by (mean, std) into inputs normalised by the member's."""
    scale = [s / ms for s, ms in zip(std, member_std, strict=True)]
    shift = [(m - mm) / ms for m, mm, ms in zip(mean, member_mean, member_std, strict=True)]
    return scale, shift


@register_model("fused")
def fused(*, num_classes: int, general: dict, specialists: list[dict], rule: str = "gate",
          pretrained: bool = False, checkpoint_path: str | None = None) -> FusedClassifier:
    """A fused predictor made by ``shortvid fuse``: ``general`` is ``{"model": config, "scores": kind}``,
    each specialist ``{"model": config, "scores": kind, "classes": [ids], "scale": [...], "shift": [...]}``
    with ``config`` a member's ``model.config``. Weights come from the fused run's checkpoint."""
    if pretrained or checkpoint_path:
        raise ValueError("a fused model takes its weights from its run, not from pretrained backbones")

    def build(config: dict) -> ServableModel:
        config = dict(config)
        return create_model(config.pop("name"), **config)

    main = build(general["model"])
    if main.num_classes != num_classes:
        raise ValueError(f"the general model has {main.num_classes} classes, not {num_classes}")
    return FusedClassifier(
        main, general["scores"], [build(member["model"]) for member in specialists],
        [member["scores"] for member in specialists], [list(member["classes"]) for member in specialists], rule,
        [(member["scale"], member["shift"]) for member in specialists],
    )
