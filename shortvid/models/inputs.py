"""The inputs a video model takes besides its frames (docs/motion-and-sound.md, "The contract between the layers").

A model names them in ``model.inputs`` (canonical order, ``INPUT_NAMES``); a keyframes-only model has none,
and so has a model without an ``inputs`` attribute (a third-party one). ``model_inputs`` picks them from a
batch dict (a dataset's collated items, a prepared serving batch), so no caller chooses by hand which
tensors a model needs:

    logits = model(batch["frames"], batch.get("mask"), **model_inputs(model, batch, device))

| name | shape, type | what |
| --- | --- | --- |
| ``motion`` | float32 ``[B, T, M, 3, S, S]`` | the ``M`` frames shown after each keyframe, normalised like the frames |
| ``audio`` | float32 ``[B, mels, n_frames]`` | log-mel features of the sound |
| ``audio_mask`` | bool ``[B]`` | True where the video has real sound |
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

INPUT_NAMES = ("motion", "audio", "audio_mask")
DEFAULT_MELS = 64  # the contract's log-mel bands


def inputs_of(model: object) -> tuple[str, ...]:
    """``model.inputs``, or ``()`` for a model without the attribute."""
    return tuple(getattr(model, "inputs", ()))


def ordered(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` without repeats, in the canonical order of ``INPUT_NAMES`` (a composite's inputs: the union of
    its members'); an unknown name is a ``ValueError``."""
    names = set(names)
    unknown = names - set(INPUT_NAMES)
    if unknown:
        raise ValueError(f"unknown model inputs {', '.join(sorted(unknown))} (known: {', '.join(INPUT_NAMES)})")
    return tuple(name for name in INPUT_NAMES if name in names)


def model_inputs(model: object, batch: Mapping[str, Tensor], device: torch.device | str | None = None,
                 non_blocking: bool = False) -> dict[str, Tensor]:
    """The keyword arguments ``model(frames, mask, **extra)`` needs from ``batch``, on ``device``. A model
    without an ``inputs`` attribute takes none. A missing input is a ``ValueError`` naming it."""
    names = inputs_of(model)
    missing = [name for name in names if name not in batch]
    if missing:
        raise ValueError(f"the model takes {', '.join(names)} besides frames; the batch has no "
                         f"{', '.join(missing)} (read the videos with the run's motion frames and sound)")
    return {name: batch[name] if device is None else batch[name].to(device, non_blocking=non_blocking)
            for name in names}


def member_inputs(member: object, extra: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The part of ``extra`` that composite ``member`` takes (``member.inputs``): what a composite passes each
    of its members. A missing one is left out, for the member to refuse with its own error."""
    return {name: extra[name] for name in inputs_of(member) if name in extra}


def given(**inputs: Tensor | None) -> dict[str, Tensor]:
    """The inputs of ``inputs`` that are not ``None``: a composite's ``forward`` keyword arguments as one dict."""
    return {name: value for name, value in inputs.items() if value is not None}


def shared_sizes(members: Iterable[object]) -> tuple[int, int]:
    """``(motion_frames, mels)`` of a composite's ``members``, which share their inputs: the motion frames of
    the members that see motion (0 when none does) and the mel bands of those that hear (64 when none does).
    Members that disagree are a ``ValueError``: one input cannot have two shapes."""
    sizes = []
    for attribute, name, default in (("motion_frames", "motion", 0), ("mels", "audio", DEFAULT_MELS)):
        values = {int(getattr(member, attribute)) for member in members if name in inputs_of(member)}
        if len(values) > 1:
            raise ValueError(f"members take {name} of different sizes ({attribute}: {sorted(values)})")
        sizes.append(values.pop() if values else default)
    return sizes[0], sizes[1]
