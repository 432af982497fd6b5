"""Frame transforms: uint8 frames [T, H, W, 3] in, normalised float [T, 3, S, S] out.

One random draw per video, applied to all its frames alike (TSN's practice: the segments of a
video share a crop). Training: random resized crop, horizontal flip, colour jitter. Evaluation and
serving: centre crop. Built on torchvision's v2 transforms, which take a [T, C, H, W] batch and use
the same parameters for every frame in it; on the CPU the centre crop and normalisation run in
NumPy instead (``centre_crop``): the same floats, without waking torch's thread pool, which cost
the serving path milliseconds per video after an idle gap (BENCHMARKS.md, "What makes the single
stream fast").
"""

from __future__ import annotations

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
