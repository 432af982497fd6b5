"""The seed's adaptive I-frame model with separately trained members: one model per frame count.

A video with fewer keyframes than the largest model takes is classified by the model trained on
that many frames, so no non-key frame is ever decoded. (The other way is one TSN fed however many
keyframes there are: ``Classifier.load(run, adaptive=True)``; the ablation measures both.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .contract import ServableModel
from .inputs import given, inputs_of, member_inputs, ordered, shared_sizes
from .registry import create_model, register_model


def grouped_logits(keys: Sequence[int], run: Callable[[int, Tensor], Tensor]) -> Tensor:
    """Logits ``[len(keys), C]``: ``run(key, rows)`` once per distinct key on the rows (an index tensor)
    that carry it, each result put back in its rows. Videos of different frame counts are classified
    this way, each group unpadded: by ``FrameCountSwitch`` (a member per count) and by the ONNX Runtime
    backend (a graph without a mask)."""
    keys = torch.as_tensor(list(keys))
    logits = None
    for key in sorted(set(keys.tolist())):
        rows = (keys == key).nonzero().flatten()
        out = run(key, rows)
        if logits is None:
            logits = out.new_zeros(len(keys), out.shape[1])
        logits[rows.to(out.device)] = out
    return logits


class FrameCountSwitch(nn.Module):
    """Members keyed by frame count; a video with ``n`` valid frames goes to the member with the largest
    count not above ``n`` (the smallest member when ``n`` is below every count). A ``ServableModel``,
    not a ``VideoClassifier``: it has no backbone or heads of its own. ``inputs`` is the union of the
    members' (``models.inputs``); each member is given its videos' rows of the ones it takes."""

    def __init__(self, members: dict[int, ServableModel]):
        super().__init__()
        if not members:
            raise ValueError("no member models")
        counts = sorted(int(count) for count in members)
        if len({members[c].num_classes for c in counts}) != 1:
            raise ValueError("member models must share their classes")
        self.counts = counts
        self.members = nn.ModuleDict({str(c): members[c] for c in counts})
        self.num_classes = members[counts[0]].num_classes
        self.imagenet_head = None
        self.inputs = ordered(name for member in members.values() for name in inputs_of(member))
        self.motion_frames, self.mels = shared_sizes(members.values())
        self.config: dict[str, Any] = {}

    @property
    def data_config(self) -> dict[str, Any]:
        return self.members[str(self.counts[-1])].data_config

    def member_for(self, frames: int) -> int:
        """The frame count of the member that classifies a video with ``frames`` valid frames."""
        fitting = [count for count in self.counts if count <= frames]
        return fitting[-1] if fitting else self.counts[0]

    def forward(self, frames: Tensor, mask: Tensor | None = None, *, motion: Tensor | None = None,
                audio: Tensor | None = None, audio_mask: Tensor | None = None) -> Tensor:
        batch, length = frames.shape[:2]
        valid = [length] * batch if mask is None else mask.bool().sum(1).tolist()
        extra = given(motion=motion, audio=audio, audio_mask=audio_mask)

        def member(count: int, rows: Tensor) -> Tensor:
            model = self.members[str(count)]
            theirs = {name: value[rows.to(value.device)] for name, value in member_inputs(model, extra).items()}
            rows = rows.to(frames.device)
            return model(frames[rows], None if mask is None else mask[rows], **theirs)

        return grouped_logits([self.member_for(int(n)) for n in valid], member)

    def forward_all(self, frames: Tensor, mask: Tensor | None = None, *, motion: Tensor | None = None,
                    audio: Tensor | None = None, audio_mask: Tensor | None = None) -> dict[str, Tensor]:
        return {"logits": self.forward(frames, mask, motion=motion, audio=audio, audio_mask=audio_mask)}


@register_model("by_frame_count")
def by_frame_count(*, num_classes: int, members: dict[str, dict], pretrained: bool = False,
                   checkpoint_path: str | None = None) -> FrameCountSwitch:
    """A ``FrameCountSwitch`` made by ``shortvid adaptive``: ``members`` maps a frame count to a member's
    ``model.config``. Weights come from the run's checkpoint."""
    if pretrained or checkpoint_path:
        raise ValueError("an adaptive model takes its weights from its run, not from pretrained backbones")
    built = {}
    for count, config in members.items():
        config = dict(config)
        built[int(count)] = create_model(config.pop("name"), **config)
    model = FrameCountSwitch(built)
    if model.num_classes != num_classes:
        raise ValueError(f"members have {model.num_classes} classes, not {num_classes}")
    return model
