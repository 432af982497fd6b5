"""What the self-supervised pretraining methods share: SimCLR (``simclr``) and audio-visual correspondence
(``avc``) both learn from the unlabelled videos of a frame cache with an NT-Xent (InfoNCE) loss over in-batch
negatives, augment keyframes the same way, and export the backbone the same way.

- configs: ``SimCLRDataConfig`` (the cache and the batches), ``SimCLRAugmentConfig`` (SimCLR's
  augmentation), ``SimCLROptimConfig`` (optimiser, schedule, temperature); AVC extends the first and the
  last with its own fields;
- ``nt_xent_loss``: SimCLR's NT-Xent, and (``within=False``) its cross-modal form, where each embedding of
  one side is told apart only among the other side's (CLIP's symmetric loss, AVID's cross-modal
  discrimination);
- ``SimCLRAugment`` (one augmented view of a keyframe), ``distinct_frames`` (the cached frames of distinct
  timestamps), ``pretraining_videos`` (which videos of the cache), ``projection_head`` (SimCLR's g);
- ``save_backbone``: ``RUN/backbone.pth``, the backbone's state dict with timm's classifier-less keys.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ..data.annotations import load_dataset
from ..data.cache import CachedClip, FrameCache
from ..data.transforms import VideoTransform
from ..files import atomic_path
from .pretrain import BACKBONE_FILE

log = logging.getLogger("shortvid.train.contrastive")


# -- configuration ---------------------------------------------------------------------------------

@dataclass
class SimCLRDataConfig:
    cache: str = ""  # a frame cache made by `shortvid extract` (required)
    dataset: str | None = None  # None: every video of the cache; else the videos of `splits` (labels ignored)
    splits: list[str] = field(default_factory=lambda: ["train"])
    input_size: int = 224  # the square crop each view is resized to
    batch_size: int = 64  # videos per batch: 2 x batch_size views, 2 x (batch_size - 1) negatives each
    workers: int = 2


@dataclass
class SimCLRAugmentConfig:
    """SimCLR's augmentation (appendix A); the defaults are the paper's ImageNet values."""

    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # area fraction of the frame
    flip: float = 0.5
    color_strength: float = 1.0  # s: jitter 0.8s brightness/contrast/saturation, 0.2s hue (CIFAR: 0.5)
    color_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5  # 0 turns blur off (the paper's CIFAR setting)
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])  # px at 224, scaled to input_size


@dataclass
class SimCLROptimConfig:
    name: str = "adamw"  # adamw | sgd (with momentum); the paper's LARS is for batches of thousands
    lr: float = 1e-3
    weight_decay: float = 1e-6  # the paper's
    momentum: float = 0.9  # sgd only
    epochs: int = 100  # the paper's default length
    warmup_epochs: float = 10.0  # linear warm-up, then cosine decay to zero (the paper's 10 of 100)
    temperature: float = 0.5  # tau of NT-Xent (see simclr's docstring for why 0.5)
    amp: bool = True  # mixed precision on CUDA; ignored on the CPU
    grad_clip: float | None = None


# -- the loss ----------------------------------------------------------------------------------------

def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float, *, within: bool = True) -> torch.Tensor:
    """NT-Xent (SimCLR eq. 1), averaged over the 2N embeddings: ``z1[i]`` and ``z2[i]`` [N, d] are the
    projections of the two views of example i. For each embedding, a softmax cross-entropy over its
    cosine similarities / ``temperature`` with the 2N - 1 others, its partner the target.

    ``within=False``: each embedding is compared with the other side's N only (``z1[i]`` with every
    ``z2[j]``, ``z2[i]`` with every ``z1[j]``): the cross-modal InfoNCE of two modalities, the mean of
    its two directions, where two embeddings of one modality are never negatives of each other."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = z1.shape[0]
    logits = z @ z.T / temperature
    if within:
        logits.fill_diagonal_(float("-inf"))  # k != i in the denominator
    else:
        side = torch.arange(2 * n, device=z.device) // n
        logits = logits.masked_fill(side[:, None] == side[None, :], float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, targets)


# -- the views ---------------------------------------------------------------------------------------

def distinct_frames(times: Sequence[float]) -> list[int]:
    """Indices of the cached frames of distinct timestamps, the first of each, in order (a cache filled
    by repeating keyframes holds the same keyframe more than once)."""
    first_at: dict[float, int] = {}
    for index, at in enumerate(times):
        first_at.setdefault(float(at), index)
    return sorted(first_at.values())


class SimCLRAugment:
    """One view: uint8 frame [3, H, W] in, normalised float [3, S, S] out (SimCLR's appendix A,
    blur scaled to the crop; normalised like every shortvid model input, by ``VideoTransform``)."""

    def __init__(self, size: int, config: SimCLRAugmentConfig | None = None, *,
                 mean: Sequence[float], std: Sequence[float]):
        config = config or SimCLRAugmentConfig()
        s = config.color_strength
        steps: list = [v2.RandomResizedCrop(size, scale=tuple(config.crop_scale), ratio=(3 / 4, 4 / 3), antialias=True),
                       v2.RandomHorizontalFlip(config.flip)]
        if s > 0 and config.color_p > 0:
            jitter = v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, min(0.2 * s, 0.5))
            steps.append(v2.RandomApply([jitter], p=config.color_p))
        if config.grayscale_p > 0:
            steps.append(v2.RandomGrayscale(config.grayscale_p))
        self.blur_kernel = max(3, int(0.1 * size) // 2 * 2 + 1)  # 10% of the side, odd (23 at 224, as the paper's code)
        self.blur_sigma = tuple(float(x) * size / 224 for x in config.blur_sigma)
        if config.blur_p > 0:
            steps.append(v2.RandomApply([v2.GaussianBlur(self.blur_kernel, self.blur_sigma)], p=config.blur_p))
        self.augment = v2.Compose(steps)
        self.normalise = VideoTransform(size, augment=False, mean=tuple(mean), std=tuple(std))

    def __call__(self, frame: torch.Tensor) -> torch.Tensor:
        view = self.augment(frame)  # uint8 [3, S, S]
        return self.normalise(view.permute(1, 2, 0)[None], "test")[0]  # centre crop of S: the identity


class ClipSource(Protocol):
    """What the pretraining datasets read: ``FrameCache`` (or anything with its ``read``)."""

    def read(self, name: str) -> CachedClip: ...


class SeededVideos(Dataset):
    """Base of the pretraining datasets: the videos ``names`` of ``cache``, an example's random draws seeded
    from (``seed``, epoch, index) so they repeat across runs, workers and resumes (``set_epoch``)."""

    def __init__(self, cache: ClipSource, names: Sequence[str], augment: SimCLRAugment, seed: int = 0):
        self.cache = cache
        self.names = list(names)
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.names)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


def pretraining_videos(data: SimCLRDataConfig, cache: FrameCache) -> list[str]:
    """The names to pretrain on: every video of the cache, or those of ``data.splits`` of
    ``data.dataset`` that the cache holds (the others are logged and left out)."""
    if not data.dataset:
        return sorted(cache.entries)
    names: dict[str, None] = {}
    for split in data.splits:
        for sample in load_dataset(data.dataset, split, on_error="skip", check_files=False):
            names.setdefault(sample.name)
    kept = [name for name in names if name in cache]
    if len(kept) < len(names):
        log.warning("%d of %d videos of %s (%s) are not in the cache %s", len(names) - len(kept), len(names),
                    data.dataset, ", ".join(data.splits), cache.root)
    return kept


# -- the model and its export -----------------------------------------------------------------------

def projection_head(width: int, projection_dim: int) -> nn.Sequential:
    """SimCLR's projection head g: Linear(width, width) - ReLU - Linear(width, projection_dim), biases kept."""
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, projection_dim))


def save_backbone(backbone: nn.Module, run_root: str | os.PathLike) -> Path:
    """``RUN/backbone.pth``: ``backbone``'s state dict on the CPU (a classifier-less timm model: keys as
    ``timm.create_model(name, num_classes=0).state_dict()``), which ``model.checkpoint_path`` loads."""
    target = Path(run_root) / BACKBONE_FILE
    with atomic_path(target) as temporary:
        torch.save({key: value.cpu() for key, value in backbone.state_dict().items()}, temporary)
    return target
