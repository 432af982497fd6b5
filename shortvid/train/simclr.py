"""Self-supervised pretraining of a backbone on unlabelled videos: SimCLR (Chen et al. 2020).

    pretrain_simclr(load_config("simclr.yaml", ["data.cache=cache/all", "out=runs/simclr"], schema=SimCLRConfig))
    create_model("tsn", backbone="resnet50", num_classes=63, checkpoint_path="runs/simclr/backbone.pth")

Each example is a video of a frame cache (labels are ignored). Its two views are two different
cached keyframes of that video (two frames of distinct timestamps when it has at least 2; the same
frame twice otherwise), each augmented independently. Keyframes of one upload show the same
scene, objects and style at different moments, so the positives carry a video's content while
the other videos of the batch are the negatives.

Faithful to the paper (SimCLR v1, sections 2-3 and appendix A):

- augmentation, per view: random resized crop (area 0.08-1, aspect 3/4-4/3) + horizontal flip
  (p 0.5); colour distortion of strength s (ColorJitter(0.8s, 0.8s, 0.8s, 0.2s) applied with
  p 0.8, then grayscale with p 0.2); Gaussian blur with p 0.5, kernel 10% of the crop side.
- encoder f: a timm backbone without classifier (pooled features h, width D); projection head g:
  Linear(D, D) - ReLU - Linear(D, 128) (the paper's W2 relu(W1 h); biases kept); the loss is taken on
  z = g(h), the representation kept is h (the backbone alone is saved).
- NT-Xent over the 2N views of a batch: cosine similarity / tau, cross-entropy of each view
  against the other 2N - 1, the positive its partner; averaged over all 2N views. The 2N views go
  through the backbone in one pass, so batch norm sees the whole batch (the paper's global BN).
- linear warm-up then cosine decay without restarts, per step; the paper's 100 epochs with 10 of
  warm-up and weight decay 1e-6 are the defaults.

Adapted to a 2-core CPU and small frames:

- optimiser: AdamW (lr 1e-3) by default, or SGD with momentum (``optim.name=sgd``), instead of LARS:
  LARS exists to keep batches of 4096 stable; with batches of 16-64 plain AdamW is stable and
  needs no layer-wise trust ratios. Biases and batch norms are not excluded from weight decay (at
  1e-6 it makes no difference).
- tau defaults to 0.5, not the ImageNet recipe's 0.1: the paper's small-image study (CIFAR-10,
  appendix B) found 0.5 best across batch sizes, and with a few dozen negatives a low tau puts the
  whole loss on the few hardest ones, which in a video corpus are often videos of the same class
  (false negatives). Two keyframes are also further apart than two crops of one image; a softer
  tau is more forgiving of that.
- blur sigma: the paper's 0.1-2.0 px is meant for 224-px crops; it is scaled by input_size / 224
  (so a 64-px crop is blurred as much relative to its size), like the kernel (10% of the side,
  odd, at least 3).
- views are normalised with the backbone's mean/std through ``VideoTransform``, as fine-tuning and
  serving normalise frames (the paper's code feeds [0, 1] pixels).
- small batches mean few negatives; the paper shows SimCLR improves with batch size, so expect
  less from a CPU run than from the paper's setting.
- one process (one CPU or GPU): no torchrun/DDP, hence no cross-device negatives or global BN
  across devices.

The loss, the augmentation, the configs of data and optimisation and the backbone's export are shared
with audio-visual pretraining (``shortvid.train.avc``) in ``shortvid.train.contrastive``.

Seeded and resumable through the trainer's loop (``shortvid.train.loop.TrainLoop``): the epoch's
order from (seed, epoch) (``EpochSampler``), each video's frame pair and augmentation from (seed,
epoch, index); ``checkpoints/last.pt`` (atomic) holds model, optimiser, scheduler, scaler, RNG, epoch,
step and the epoch's losses so far, written at every epoch end (and every ``checkpoint_every``
steps), so ``resume=True`` continues where a killed run stopped.

The output folder: ``config.yaml``, ``metrics.jsonl`` (one line per epoch), ``checkpoints/last.pt``,
and at the end ``backbone.pth`` (the backbone's state dict, keys exactly as
``timm.create_model(backbone, num_classes=0).state_dict()``, loadable with ``create_model(...,
checkpoint_path=...)``) and ``pretrain.json`` (method, backbone, epochs, final loss, videos, ...).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import timm
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data.cache import FrameCache
from ..errors import DatasetError
from ..files import atomic_write
from ..models.backbones import create_backbone, feature_dim
from .config import ConfigError
from .contrastive import (
    SeededVideos,
    SimCLRAugment,
    SimCLRAugmentConfig,
    SimCLRDataConfig,
    SimCLROptimConfig,
    distinct_frames,
    nt_xent_loss,
    pretraining_videos,
    projection_head,
    save_backbone,
)
from .loop import EpochSampler, TrainLoop

METHOD = "simclr"


# -- configuration ---------------------------------------------------------------------------------

@dataclass
class SimCLRModelConfig:
    backbone: str = "resnet50"  # any timm model
    pretrained: bool = False  # start from timm's hub weights (needs network access)
    checkpoint_path: str | None = None  # start from a local state dict
    projection_dim: int = 128  # z; the hidden layer is as wide as the backbone's features


@dataclass
class SimCLRConfig:
    data: SimCLRDataConfig = field(default_factory=SimCLRDataConfig)
    augment: SimCLRAugmentConfig = field(default_factory=SimCLRAugmentConfig)
    model: SimCLRModelConfig = field(default_factory=SimCLRModelConfig)
    optim: SimCLROptimConfig = field(default_factory=SimCLROptimConfig)
    out: str = "runs/simclr"  # the output folder
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    checkpoint_every: int = 0  # also save every N steps (0: at epoch ends only)
    progress: bool = True

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# -- the views ---------------------------------------------------------------------------------------

def view_frames(times: Sequence[float], rng: np.random.Generator) -> tuple[int, int]:
    """Indices of the two cached frames that make a video's views: two of distinct timestamps when
    it has at least 2 (a cache filled by repeating keyframes holds duplicates), else one twice."""
    distinct = distinct_frames(times)
    if len(distinct) < 2:
        return distinct[0], distinct[0]
    first, second = rng.choice(len(distinct), size=2, replace=False)
    return distinct[int(first)], distinct[int(second)]


class SimCLRVideos(SeededVideos):
    """Unlabelled videos of a frame cache as SimCLR examples::

        {"views": float [2, 3, S, S], "picks": int64 [2] (the cached frames used), "index": int, "name": str}

    Seeded like the trainer's datasets: the frame pair from ``np.random.default_rng((seed, epoch,
    index))``, the augmentations under a torch RNG forked and seeded from (seed, epoch, index), so
    they repeat across runs, DataLoader workers and resumes; the two views draw one after the other,
    so they are augmented independently.
    """

    def __getitem__(self, index: int) -> dict:
        clip = self.cache.read(self.names[index])
        picks = view_frames(clip.times, np.random.default_rng((self.seed, self.epoch, index)))
        frames = torch.from_numpy(np.ascontiguousarray(clip.frames[list(picks)])).permute(0, 3, 1, 2)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(np.random.SeedSequence((self.seed, self.epoch, index)).generate_state(1)[0]))
            views = torch.stack([self.augment(frames[0]), self.augment(frames[1])])
        return {"views": views, "picks": torch.tensor(picks, dtype=torch.int64), "index": index,
                "name": self.names[index]}


# -- the model ---------------------------------------------------------------------------------------

class SimCLRModel(nn.Module):
    """Encoder f (a timm backbone, pooled features h) and projection head g (h -> z)."""

    def __init__(self, backbone: nn.Module, projection_dim: int = 128):
        super().__init__()
        self.backbone = backbone
        self.projection = projection_head(feature_dim(backbone), projection_dim)

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        """Projections z [M, projection_dim] of views [M, 3, S, S]."""
        return self.projection(self.backbone(views))


def build_simclr_model(config: SimCLRModelConfig) -> SimCLRModel:
    """The backbone built as shortvid builds every backbone (``create_backbone``: timm, weights from
    ``checkpoint_path`` or the hub, classifier removed), plus the projection head."""
    backbone, _ = create_backbone(config.backbone, pretrained=config.pretrained,
                                  checkpoint_path=config.checkpoint_path)
    return SimCLRModel(backbone, config.projection_dim)


# -- training ----------------------------------------------------------------------------------------

def pretrain_simclr(config: SimCLRConfig, *, resume: bool = False) -> dict:
    """Pretrain ``config.model.backbone`` with SimCLR on the videos of ``config.data.cache`` into the
    folder ``config.out``; returns what ``pretrain.json`` holds.

    ``resume``: continue from ``out/checkpoints/last.pt`` (same semantics as ``train``: a folder
    with a checkpoint is never overwritten without it; one without a checkpoint starts over)."""
    if not config.data.cache:
        raise ConfigError("data.cache", "SimCLR pretrains from a frame cache (data.cache=PATH; `shortvid extract`)")
    loop = TrainLoop(config, resume=resume)  # one process: no torchrun (see the module's docstring)
    device = loop.device
    cache = FrameCache(config.data.cache)
    names = pretraining_videos(config.data, cache)
    if len(names) < 2:
        raise DatasetError(config.data.cache, f"SimCLR needs at least 2 videos (the negatives), found {len(names)}")
    model = build_simclr_model(config.model).to(device)
    normalise = timm.data.resolve_model_data_config(model.backbone)
    augment = SimCLRAugment(config.data.input_size, config.augment, mean=normalise["mean"], std=normalise["std"])
    videos = SimCLRVideos(cache, names, augment, seed=config.seed)
    batch_size = config.data.batch_size
    loader = DataLoader(videos, batch_size=batch_size, sampler=EpochSampler(len(videos), config.seed),
                        num_workers=config.data.workers, pin_memory=device.type == "cuda",
                        drop_last=len(videos) > batch_size)
    loop.prepare(model, loader, checkpoint={"method": METHOD})

    def step(batch: dict) -> tuple[torch.Tensor, dict]:
        views = batch["views"].to(device, non_blocking=True)  # [B, 2, 3, S, S]
        with loop.autocast():
            # Both views in one pass: batch norm normalises over all 2B (the paper's global BN).
            z = model(torch.cat([views[:, 0], views[:, 1]]))
        return nt_xent_loss(*z.float().chunk(2), config.optim.temperature), {}

    loop.fit(step, name="simclr", loss_name="loss",
             describe=lambda record: f"simclr epoch {record['epoch'] + 1}: loss {record['loss']:.4f}")

    metrics = loop.run.read_metrics()
    save_backbone(model.backbone, loop.run.root)
    summary = {
        "method": METHOD, "backbone": config.model.backbone, "epochs": loop.state.epoch,
        "final_loss": metrics[-1]["loss"] if metrics else None,
        "videos": len(videos), "batch_size": batch_size, "input_size": config.data.input_size,
        "temperature": config.optim.temperature, "projection_dim": config.model.projection_dim,
        "feature_dim": feature_dim(model.backbone), "mean": list(normalise["mean"]), "std": list(normalise["std"]),
        "cache": str(config.data.cache), "losses": [r["loss"] for r in metrics],
        "seconds": round(sum(r["seconds"] for r in metrics), 2),  # training epochs, all calls together
    }
    atomic_write(loop.run.root / "pretrain.json", json.dumps(summary, indent=2) + "\n")
    return summary
