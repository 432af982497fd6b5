"""Frame transforms: uint8 frames [T, H, W, 3] in, normalised float [T, 3, S, S] out.

One random draw per video, applied to all its frames alike (TSN's practice: the segments of a
video share a crop). Training: random resized crop, horizontal flip, colour jitter. Evaluation and
serving: centre crop. Built on torchvision's v2 transforms, which take a [T, C, H, W] batch and use
the same parameters for every frame in it; on the CPU the centre crop and normalisation run in
NumPy instead (``centre_crop``): the same floats, without waking torch's thread pool, which cost
the serving path milliseconds per video after an idle gap (BENCHMARKS.md, "What makes the single
stream fast").

Motion frames (``[T, M, H, W, 3]``, the frames shown after each keyframe) go through the same call as their
keyframes (``transform_with_motion``): joined to them along the frame axis, transformed once, split back,
so one crop, flip and jitter covers them all and they line up with their keyframes pixel for pixel.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VideoTransform:
    """Callable as the datasets' ``transform(frames, mode)`` hook; ``mode`` picks train or test."""

    def __init__(self, size: int = 224, *, augment: bool = True, scale: tuple[float, float] = (0.4, 1.0),
                 flip: bool = True, jitter: float = 0.2, mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD):
        self.size = size
        self.scale = (1.0 / (255.0 * np.asarray(std, np.float32)))[:, None, None].astype(np.float32)
        self.shift = (-np.asarray(mean, np.float32) / np.asarray(std, np.float32))[:, None, None].astype(np.float32)
        normalise = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
        self.test = v2.Compose([v2.CenterCrop(size)] + normalise)
        if not augment:
            self.train = self.test
            return
        steps = [v2.RandomResizedCrop(size, scale=scale, antialias=True)]
        if flip:
            steps.append(v2.RandomHorizontalFlip())
        if jitter:
            steps.append(v2.ColorJitter(jitter, jitter, jitter))
        self.train = v2.Compose(steps + normalise)

    def __call__(self, frames: torch.Tensor, mode: str = "test") -> torch.Tensor:
        """``frames`` uint8 [T, H, W, 3] (as the datasets and the decoder give them)."""
        if (mode != "train" and frames.device.type == "cpu" and frames.dtype == torch.uint8
                and min(frames.shape[1:3]) >= self.size):
            return torch.from_numpy(self.centre_crop(frames.numpy()))
        chw = frames.permute(0, 3, 1, 2)
        return (self.train if mode == "train" else self.test)(chw).contiguous()

    def with_motion(self, frames: torch.Tensor, motion: torch.Tensor,
                    mode: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
        """``frames`` uint8 [T, H, W, 3] and their motion frames uint8 [T, M, H, W, 3] through one call, with
        the same random crop, flip and jitter: float [T, 3, S, S] and [T, M, 3, S, S]."""
        return transform_with_motion(self, frames, motion, mode)

    def centre_crop(self, frames: np.ndarray) -> np.ndarray:
        """The evaluation transform in NumPy: uint8 [T, H, W, 3] (H, W >= size) to float32
        [T, 3, size, size], cropped where ``v2.CenterCrop`` crops and normalised as ``v2.Normalize``."""
        height, width = frames.shape[1:3]
        top, left = int(round((height - self.size) / 2.0)), int(round((width - self.size) / 2.0))
        crop = frames[:, top:top + self.size, left:left + self.size].transpose(0, 3, 1, 2)
        out = np.empty(crop.shape, np.float32)
        np.multiply(crop, self.scale, out=out, casting="unsafe")
        out += self.shift
        return out


def transform_with_motion(transform: Callable[[torch.Tensor, str], Any], frames: torch.Tensor, motion: torch.Tensor,
                          mode: str = "test") -> tuple[Any, Any]:
    """``transform(frames, mode)`` applied to ``frames`` [T, ...] and ``motion`` [T, M, ...] in one call, so
    one random draw covers both: the frames and the motion frames joined along the first axis, transformed,
    split back into ``T`` and ``[T, M]`` leading axes. Works for any transform that maps the frames of a
    video one to one with shared parameters (the datasets' ``transform`` hook), ``VideoTransform`` and its
    NumPy centre crop included."""
    count, held = motion.shape[:2]
    if motion.shape[0] != frames.shape[0] or motion.shape[2:] != frames.shape[1:]:
        raise ValueError(f"motion frames {tuple(motion.shape)} do not follow frames {tuple(frames.shape)}: "
                         "want [T, M, *frame shape]")
    out = transform(torch.cat([frames, motion.reshape(count * held, *motion.shape[2:])]), mode)
    return out[:count], out[count:].reshape(count, held, *out.shape[1:])
