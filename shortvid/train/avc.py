"""Self-supervised pretraining on unlabelled videos with their sound: audio-visual correspondence (AVC).

    pretrain_avc(load_config("avc", ["data.cache=cache/uploads", "out=runs/avc"], schema=AVCConfig))
    create_model("tsn", backbone="resnet50", num_classes=63, checkpoint_path="runs/avc/backbone.pth",
                 audio=True, audio_args={"checkpoint_path": "runs/avc/audio_encoder.pth"})

"Does this sound belong to these frames?" (Arandjelović & Zisserman, "Look, Listen and Learn", ICCV 2017),
learnt in its contrastive form (Morgado et al., "Audio-Visual Instance Discrimination with Cross-Modal
Agreement", CVPR 2021, cross-modal discrimination): the frames of a video and its own sound are the positive
pair, the other videos' sounds in the batch the negatives, and the other way round.

Why contrastive, not the binary task of L3-Net (a small head on both embeddings, own sound against one
other video's, BCE): each video is compared with the B - 1 others of its batch instead of one, which is
what made AVID (and SimCLR) learn better features than L3's binary labels; and the loss is SimCLR's
NT-Xent (``contrastive.nt_xent_loss``), in its cross-modal form.

- example: a video of a frame cache extracted with ``--audio`` whose sound's status is ``ok`` (a video with
  no audio stream, a silent or a broken one has no correspondence to learn: it is left out, and the count
  of each status left out is logged and returned). Its frames are up to ``data.frames`` of its cached
  keyframes of distinct timestamps (masked where it has fewer), each augmented as a SimCLR view
  (``contrastive.SimCLRAugment``); its sound is ``log_mel(sound.samples, rate, mels)``, the model input of
  the contract (docs/motion-and-sound.md), optionally cut in time (``augment.audio_crop``) and scaled in
  gain (``augment.audio_gain_db``).
- visual embedding: the mean of the backbone's pooled features over the video's frames (TSN's mean
  consensus, as the fine-tuned model pools them); the padded frames never go through the backbone.
- audio embedding: ``models.AudioEncoder`` (batch norm over the mel bands, a timm backbone with one input
  channel), built from ``model.audio_args`` exactly as a TSN with ``model.audio=true`` builds it from
  ``model.args.audio_args``.
- a projection head per modality (SimCLR's g, ``contrastive.projection_head``) onto a shared space of
  ``model.projection_dim``; the loss is on the projections, the encoders are kept.
- loss (``optim.negatives``): ``cross`` (default): cross-modal InfoNCE, each video's frames told apart among
  the batch's sounds and each sound among the batch's frames, the mean of both directions (AVID's CMD,
  CLIP's loss); ``all``: SimCLR's NT-Xent over the 2B embeddings, where the other videos' frames are also
  negatives of a video's frames (AVID's "joint" form; it also pushes apart videos whose sounds are alike).
  ``optim.temperature`` 0.1 by default (AVID: 0.07; lower than SimCLR's 0.5 because there is only one
  positive per row and the cross-modal task is easier to saturate).
- each epoch also records ``top1``: the share of videos whose own sound is the closest of its batch's
  (chance: 1 / batch_size).

Seeded and resumable through the trainer's loop (``TrainLoop``) as SimCLR is: the order from (seed,
epoch), each video's frames, crops and augmentation from (seed, epoch, index). One process (no torchrun).

The output folder: ``config.yaml``, ``metrics.jsonl``, ``checkpoints/last.pt``, and at the end
``backbone.pth`` (the visual backbone, SimCLR's format: ``model.checkpoint_path=RUN/backbone.pth``),
``audio_encoder.pth`` (the ``AudioEncoder``'s state dict:
``model.args.audio_args.checkpoint_path=RUN/audio_encoder.pth``, with the same ``audio_args`` otherwise)
and ``pretrain.json`` (with ``finetune_overrides``, the overrides that start a TSN from both files).
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..data.cache import FrameCache
from ..decode import log_mel
from ..errors import DatasetError
from ..files import atomic_path, atomic_write
from ..models import AudioEncoder
from ..models.aggregators import masked_mean
from ..models.backbones import create_backbone, feature_dim
from .config import ConfigError
from .contrastive import (
    ClipSource,
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
from .simclr import SimCLRConfig

log = logging.getLogger("shortvid.train.avc")

METHOD = "avc"
AUDIO_ENCODER_FILE = "audio_encoder.pth"
NEGATIVES = ("cross", "all")


# -- configuration ---------------------------------------------------------------------------------

@dataclass
class AVCDataConfig(SimCLRDataConfig):
    frames: int = 3  # a video's cached keyframes (of distinct timestamps) averaged into its visual embedding, at most


@dataclass
class AVCAugmentConfig(SimCLRAugmentConfig):
    """SimCLR's augmentation of each frame, and two of the sound's."""

    audio_crop: float = 1.0  # keep this share of the log-mel frames, at a random offset (1: all of them)
    audio_gain_db: float = 0.0  # scale the sound by a gain drawn uniformly within +-this many dB (0: off)


@dataclass
class AVCModelConfig:
    backbone: str = "resnet50"  # the visual backbone: any timm model
    pretrained: bool = False  # start it from timm's hub weights (needs network access)
    checkpoint_path: str | None = None  # start it from a local state dict
    # AudioEncoder(**audio_args): mels, backbone, pretrained, backbone_args, checkpoint_path. Give the TSN the same
    # (model.args.audio_args) to start its audio encoder from RUN/audio_encoder.pth.
    audio_args: dict[str, Any] = field(default_factory=dict)
    projection_dim: int = 128  # the shared space of both projections


@dataclass
class AVCOptimConfig(SimCLROptimConfig):
    temperature: float = 0.1  # tau of the InfoNCE (see the module's docstring)
    negatives: str = "cross"  # cross | all (see the module's docstring)


@dataclass
class AVCConfig(SimCLRConfig):
    """SimCLR's run settings (seed, device, checkpoints, progress) with AVC's sections."""

    data: AVCDataConfig = field(default_factory=AVCDataConfig)
    augment: AVCAugmentConfig = field(default_factory=AVCAugmentConfig)
    model: AVCModelConfig = field(default_factory=AVCModelConfig)
    optim: AVCOptimConfig = field(default_factory=AVCOptimConfig)
    out: str = "runs/avc"  # the output folder


# -- the examples ----------------------------------------------------------------------------------------

def sounding_videos(cache: FrameCache, names: Sequence[str]) -> tuple[list[str], Counter]:
    """The videos of ``names`` whose sound's status is ``ok``, and how many of the others had each status
    (``none``, ``silent``, ``broken``), read from the cache's manifest (nothing is decoded). A
    ``MissingAudioError`` naming the cache when it holds no sound."""
    cache.audio_for(True)
    kept, skipped = [], Counter()
    for name in names:
        status = cache.entries[name].sound_status
        if status == "ok":
            kept.append(name)
        else:
            skipped[status or "none"] += 1
    return kept, skipped


class AVCVideos(SeededVideos):
    """Videos of a frame cache with their sound as AVC examples::

        {"frames": float [T, 3, S, S], "mask": bool [T] (real frames), "audio": float [mels, n],
         "picks": int64 [T] (the cached frames used), "index": int, "name": str}

    ``T`` is ``frames``: the video's cached frames of distinct timestamps, ``frames`` of them drawn when it has
    more, the first repeated (and masked) when it has fewer. ``audio`` is ``log_mel`` of its sound, ``crop`` of
    its frames kept at a random offset, plus the log of a power gain within +-``gain_db``. Seeded like
    ``SimCLRVideos``: the frames, the crop and the gain from ``np.random.default_rng((seed, epoch, index))``,
    the augmentation of each frame under a torch RNG seeded from (seed, epoch, index).
    """

    def __init__(self, cache: ClipSource, names: Sequence[str], augment: SimCLRAugment, *, frames: int = 3,
                 mels: int = 64, crop: float = 1.0, gain_db: float = 0.0, seed: int = 0):
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
            raise ConfigError("data.frames", f"must be an integer of at least 1, got {frames!r}")
        if not 0 < crop <= 1:
            raise ConfigError("augment.audio_crop", f"must be above 0 and at most 1, got {crop!r}")
        if gain_db < 0:
            raise ConfigError("augment.audio_gain_db", f"must be 0 or more, got {gain_db!r}")
        super().__init__(cache, names, augment, seed)
        self.frames = frames
        self.mels = mels
        self.crop = crop
        self.gain_db = gain_db

    def __getitem__(self, index: int) -> dict:
        name = self.names[index]
        clip = self.cache.read(name, motion=False)
        if clip.sound is None:
            raise DatasetError(name, "has no sound in the cache (AVC reads a cache extracted with --audio)")
        rng = np.random.default_rng((self.seed, self.epoch, index))
        distinct = distinct_frames(clip.times)
        if len(distinct) > self.frames:
            distinct = sorted(int(i) for i in rng.choice(distinct, size=self.frames, replace=False))
        real = len(distinct)
        picks = distinct + [distinct[0]] * (self.frames - real)
        frames = torch.from_numpy(np.ascontiguousarray(clip.frames[picks])).permute(0, 3, 1, 2)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(np.random.SeedSequence((self.seed, self.epoch, index)).generate_state(1)[0]))
            views = torch.stack([self.augment(frame) for frame in frames])
        return {"frames": views, "mask": torch.arange(self.frames) < real, "audio": self._audio(clip.sound, rng),
                "picks": torch.tensor(picks, dtype=torch.int64), "index": index, "name": name}

    def _audio(self, sound, rng: np.random.Generator) -> torch.Tensor:
        features = log_mel(sound.samples, sound.sample_rate, self.mels)
        keep = max(1, round(features.shape[1] * self.crop))
        start = int(rng.integers(0, features.shape[1] - keep + 1))
        features = features[:, start:start + keep]
        if self.gain_db:  # a power gain of g dB adds g ln(10) / 10 to every log-power band
            features = features + np.float32(rng.uniform(-self.gain_db, self.gain_db) * math.log(10) / 10)
        return torch.from_numpy(np.ascontiguousarray(features))


# -- the model ---------------------------------------------------------------------------------------

class AVCModel(nn.Module):
    """The visual backbone and the audio encoder, each with its projection head onto one shared space."""

    def __init__(self, backbone: nn.Module, audio_encoder: AudioEncoder, projection_dim: int = 128):
        super().__init__()
        self.backbone = backbone
        self.audio_encoder = audio_encoder
        self.visual_projection = projection_head(feature_dim(backbone), projection_dim)
        self.audio_projection = projection_head(audio_encoder.out_features, projection_dim)

    def embed_frames(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[B, D]``: the backbone's features of the real frames of ``frames [B, T, 3, S, S]`` (``mask [B, T]``),
        averaged over each video's; the padded frames are not computed (nor move batch-norm statistics)."""
        batch, count = frames.shape[:2]
        valid = mask.bool().flatten()
        features = self.backbone(frames.flatten(0, 1)[valid])
        placed = features.new_zeros(batch * count, features.shape[1]).index_put((valid,), features)
        return masked_mean(placed.view(batch, count, -1), mask, dim=1)

    def embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """``[B, Da]``: the audio encoder's embeddings of log-mel images ``[B, mels, n]`` (all real sound)."""
        return self.audio_encoder(audio, torch.ones(audio.shape[0], dtype=torch.bool, device=audio.device))

    def forward(self, frames: torch.Tensor, mask: torch.Tensor, audio: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The projections ``(visual [B, projection_dim], audio [B, projection_dim])`` of B videos."""
        return self.visual_projection(self.embed_frames(frames, mask)), self.audio_projection(self.embed_audio(audio))


def build_avc_model(config: AVCModelConfig) -> AVCModel:
    """The visual backbone as shortvid builds every backbone (``create_backbone``), the audio encoder as a TSN
    builds it (``AudioEncoder(**audio_args)``), and the two projection heads."""
    backbone, _ = create_backbone(config.backbone, pretrained=config.pretrained,
                                  checkpoint_path=config.checkpoint_path)
    try:
        encoder = AudioEncoder(**config.audio_args)
    except TypeError as error:
        raise ConfigError("model.audio_args", f"not arguments of the audio encoder: {error}") from None
    return AVCModel(backbone, encoder, config.projection_dim)


def correspondence(visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """``[B, B]`` cosine similarities of the projections: row i is video i's frames against every sound, its
    own on the diagonal."""
    return F.normalize(visual.float(), dim=1) @ F.normalize(audio.float(), dim=1).T


def retrieval_top1(visual: torch.Tensor, audio: torch.Tensor) -> float:
    """The share of videos whose own sound is the closest of the batch's to their frames."""
    scores = correspondence(visual, audio)
    return float((scores.argmax(1) == torch.arange(len(scores), device=scores.device)).float().mean())


# -- training ----------------------------------------------------------------------------------------

def pretrain_avc(config: AVCConfig, *, resume: bool = False) -> dict:
    """Pretrain ``config.model.backbone`` and an audio encoder by audio-visual correspondence on the videos of
    ``config.data.cache`` with sound, into the folder ``config.out``; returns what ``pretrain.json`` holds.

    A ``MissingAudioError`` naming the cache when it holds no sound, a ``DatasetError`` when fewer than 2 of
    its videos have sound. ``resume``: continue from ``out/checkpoints/last.pt`` (as SimCLR)."""
    if not config.data.cache:
        raise ConfigError("data.cache", "AVC pretrains from a frame cache with sound "
                                        "(data.cache=PATH; `shortvid extract --audio`)")
    if config.optim.negatives not in NEGATIVES:
        raise ConfigError("optim.negatives", f"unknown negatives {config.optim.negatives!r} ({', '.join(NEGATIVES)})")
    cache = FrameCache(config.data.cache)
    names, skipped = sounding_videos(cache, pretraining_videos(config.data, cache))
    if skipped:
        log.warning("AVC: %d of %d videos of %s have no usable sound and are left out (%s)", sum(skipped.values()),
                    len(names) + sum(skipped.values()), cache.root,
                    ", ".join(f"{status}: {count}" for status, count in sorted(skipped.items())))
    if len(names) < 2:
        raise DatasetError(config.data.cache, f"AVC needs at least 2 videos with sound (the negatives), found "
                                              f"{len(names)} ({sum(skipped.values())} left out without sound)")
    loop = TrainLoop(config, resume=resume)  # one process: no torchrun
    device = loop.device
    model = build_avc_model(config.model).to(device)
    normalise = timm.data.resolve_model_data_config(model.backbone)
    augment = SimCLRAugment(config.data.input_size, config.augment, mean=normalise["mean"], std=normalise["std"])
    videos = AVCVideos(cache, names, augment, frames=config.data.frames, mels=model.audio_encoder.mels,
                       crop=config.augment.audio_crop, gain_db=config.augment.audio_gain_db, seed=config.seed)
    batch_size = config.data.batch_size
    loader = DataLoader(videos, batch_size=batch_size, sampler=EpochSampler(len(videos), config.seed),
                        num_workers=config.data.workers, pin_memory=device.type == "cuda",
                        drop_last=len(videos) > batch_size)
    loop.prepare(model, loader, checkpoint={"method": METHOD})
    within = config.optim.negatives == "all"

    def step(batch: dict) -> tuple[torch.Tensor, dict]:
        frames, mask, audio = (batch[key].to(device, non_blocking=True) for key in ("frames", "mask", "audio"))
        with loop.autocast():
            visual, heard = model(frames, mask, audio)
        visual, heard = visual.float(), heard.float()
        loss = nt_xent_loss(visual, heard, config.optim.temperature, within=within)
        return loss, {"top1": retrieval_top1(visual.detach(), heard.detach())}

    loop.fit(step, name="avc", loss_name="loss",
             describe=lambda r: f"avc epoch {r['epoch'] + 1}: loss {r['loss']:.4f}, own sound closest {r['top1']:.3f}")

    metrics = loop.run.read_metrics()
    backbone_file = save_backbone(model.backbone, loop.run.root)
    audio_file = loop.run.root / AUDIO_ENCODER_FILE
    with atomic_path(audio_file) as temporary:
        torch.save({key: value.cpu() for key, value in model.audio_encoder.state_dict().items()}, temporary)
    audio_args = {key: value for key, value in config.model.audio_args.items() if key != "checkpoint_path"}
    summary = {
        "method": METHOD, "backbone": config.model.backbone, "audio_args": audio_args,
        "mels": model.audio_encoder.mels, "epochs": loop.state.epoch,
        "final_loss": metrics[-1]["loss"] if metrics else None, "final_top1": metrics[-1]["top1"] if metrics else None,
        "videos": len(videos), "skipped": dict(sorted(skipped.items())), "batch_size": batch_size,
        "input_size": config.data.input_size, "frames": config.data.frames,
        "temperature": config.optim.temperature, "negatives": config.optim.negatives,
        "projection_dim": config.model.projection_dim, "feature_dim": feature_dim(model.backbone),
        "audio_feature_dim": model.audio_encoder.out_features,
        "mean": list(normalise["mean"]), "std": list(normalise["std"]), "cache": str(config.data.cache),
        "losses": [r["loss"] for r in metrics], "top1": [r["top1"] for r in metrics],
        "seconds": round(sum(r["seconds"] for r in metrics), 2),  # training epochs, all calls together
        "backbone_file": str(backbone_file), "audio_encoder_file": str(audio_file),
        "finetune_overrides": [
            f"model.args.backbone={config.model.backbone}", f"model.checkpoint_path={backbone_file}",
            "model.audio=true",
            "model.args.audio_args=" + json.dumps({**audio_args, "checkpoint_path": str(audio_file)})],
    }
    atomic_write(loop.run.root / "pretrain.json", json.dumps(summary, indent=2) + "\n")
    return summary
