"""Training a video classifier: ``train(config)`` runs epochs and writes a run directory.

Seeded and resumable: the epoch's sample order, each sample's frame choice and augmentation all
derive from (seed, epoch, index), and ``last.pt`` holds model, optimiser, scheduler, scaler, RNG,
epoch and step, so a run killed mid-epoch continues where it was (``checkpoint_every`` steps
bounds what a kill can cost) and ends with the same weights as an uninterrupted one.

Several processes: under ``torchrun --nproc-per-node N -m shortvid train ...`` every process runs
``train`` with DistributedDataParallel (NCCL on GPUs, each process on ``cuda:LOCAL_RANK``; gloo on
the CPU). ``Ranks`` is a process's place among them and what they do together; one process
started without torchrun's environment takes the plain path, with no process group at all:

- each epoch's one seeded order is dealt out to the ranks (``EpochSampler``): rank r takes every
  N-th sample from position r, all ranks the same count, so a step's N batches together are the
  samples one process would take in one batch N times as large, and resuming stays exact;
- rank 0 alone writes the run directory (config, labels, preprocessing, checkpoints, metrics,
  policy, teacher features); the others write nothing there and wait at a barrier where they must
  read what it wrote (the teacher features; a finished run before ``train`` returns);
- rank 0 validates each epoch, alone, with the unwrapped model and the one-process code (see
  ``train``), and sends the epoch's record to the others, which keep the same best epoch and stop
  at the same patience;
- a checkpoint holds the unwrapped model's weights, so the run loads and serves as any other,
  every rank's RNG state (each rank draws its own dropout) and the world size, which a resume must
  keep (``--nproc-per-node`` as before).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from ..data.annotations import Annotations, load_dataset
from ..data.cache import FrameCache
from ..data.datasets import CachedVideoDataset, RawVideoDataset
from ..data.transforms import VideoTransform
from ..decode import FrameSpec
from ..metrics import mean_ap, top_k_hit
from ..models import VideoClassifier, create_model
from ..models.scores import probabilities, score_kind
from ..policy import DecisionPolicy
from ..run import Preprocess, RunDir, load_weights
from .config import ConfigError, TrainConfig, save_config
from .freeze import freeze_stages
from .losses import (
    classification_loss,
)
from .ranks import Ranks, process_group
from .teacher import Teacher

log = logging.getLogger("shortvid.train")

class EpochSampler(Sampler[int]):
    """The sample order of each epoch, drawn from (seed, epoch) and resumable at any position.

    With ``weights`` the order is a weighted draw with replacement (class-balanced sampling).
    With ``world_size`` processes, rank ``rank`` takes its share of the one order: every
    ``world_size``-th sample from position ``rank``, after the order is cut to a multiple of
    ``world_size`` (at most ``world_size - 1`` samples, different ones each epoch, are left out), so
    every rank gets as many and takes as many steps. Dealt out this way, the ranks' ``k``-th batches
    together hold what one process's ``k``-th batch holds with a batch ``world_size`` times as large.
    ``start`` counts this rank's samples (``step * batch_size``).
    """

    def __init__(self, size: int, seed: int, weights: torch.Tensor | None = None, *, rank: int = 0,
                 world_size: int = 1):
        if size < world_size:
            raise ValueError(f"{size} samples cannot be dealt out to {world_size} processes")
        self.size = size
        self.seed = seed
        self.weights = weights
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def order(self) -> list[int]:
        """The whole epoch's order, the same on every rank."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.weights is not None:
            return torch.multinomial(self.weights, self.size, replacement=True, generator=generator).tolist()
        return torch.randperm(self.size, generator=generator).tolist()

    def shard(self) -> list[int]:
        """This rank's samples of the epoch, in order (one process: the whole order)."""
        return self.order()[self.rank:self.per_rank * self.world_size:self.world_size]

    @property
    def per_rank(self) -> int:
        return self.size // self.world_size

    def __iter__(self) -> Iterator[int]:
        return iter(self.shard()[self.start:])

    def __len__(self) -> int:
        return self.per_rank - self.start


def balanced_weights(samples: list, num_classes: int) -> torch.Tensor:
    """Per-sample weights giving every class the same expected share (a sample counts by its rarest class)."""
    counts = np.bincount([c for s in samples for c in s.labels], minlength=num_classes)
    return torch.tensor([1.0 / min(counts[c] for c in s.labels) for s in samples], dtype=torch.double)


def group_subset(annotations: Annotations, group: str | None) -> Annotations:
    """The videos and classes of one label group (a specialist's data); everything when ``group`` is None."""
    if group is None:
        return annotations
    groups = annotations.label_map.groups
    if group not in groups:
        known = ", ".join(groups) or "none: labels.csv has no group column"
        raise ConfigError("data.group", f"no group {group!r} in the label map (groups: {known})")
    return annotations.subset(groups[group])


def _datasets(config: TrainConfig, all_train: Annotations, train_annotations: Annotations,
              transform: VideoTransform) -> tuple[Dataset, Dataset, FrameSpec]:
    data = config.data
    val_annotations = load_dataset(data.dataset, data.val_split, labels=all_train.label_map, on_error="skip")
    val_annotations = group_subset(val_annotations, data.group)
    if data.cache:
        cache = FrameCache(data.cache)
        if cache.spec.size != config.frame_size():
            raise ConfigError("data.resize", f"is {data.resize} but the cache {data.cache} holds frames of size {cache.spec.size}")
        make = lambda annotations, mode: CachedVideoDataset(  # noqa: E731
            annotations, cache, data.num_segments, mode, transform, seed=config.seed)
        spec = dataclasses.replace(cache.spec, k=data.num_segments)  # serve as the cache was decoded
    else:
        spec = FrameSpec(k=data.num_segments, size=config.frame_size())
        make = lambda annotations, mode: RawVideoDataset(  # noqa: E731
            annotations, spec, mode, transform, seed=config.seed)
    return make(train_annotations, "train"), make(val_annotations, "test"), spec


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """Linear warm-up, then cosine decay to zero without restarts, stepped per batch."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    optim = config.optim
    trainable = _parameter_groups(model, optim.lr, optim.lr_scale)  # frozen stages stay out
    if optim.name == "adamw":
        return torch.optim.AdamW(trainable, lr=optim.lr, weight_decay=optim.weight_decay)
    if optim.name == "sgd":
        return torch.optim.SGD(trainable, lr=optim.lr, momentum=optim.momentum,
                               weight_decay=optim.weight_decay, nesterov=True)
    raise ConfigError("optim.name", f"unknown optimiser {optim.name!r} (adamw, sgd)")


def _parameter_groups(model: torch.nn.Module, lr: float, scales: dict[str, float]) -> list[dict]:
    """The trainable parameters, grouped by learning rate: ``optim.lr_scale`` maps a module of the
    model (``aggregator``, ``classifier``, ``backbone``...) to a multiple of ``optim.lr`` (NeXtVLAD
    learns well at a tenth of the backbone's rate)."""
    groups: dict[float, list] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            scale = next((value for prefix, value in scales.items() if name.split(".")[0] == prefix), 1.0)
            groups.setdefault(lr * scale, []).append(parameter)
    return [{"params": parameters, "lr": rate} for rate, parameters in groups.items()]


def optimizer_step(loss: torch.Tensor, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   scaler: torch.amp.GradScaler, scheduler, grad_clip: float | None) -> None:
    """One step: backward through the (mixed-precision) scaler, optional gradient clipping, the
    optimiser and the per-step schedule. Under DDP the gradients arrive averaged over the ranks."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()


@dataclass
class _State:
    epoch: int = 0
    step: int = 0  # batches done in this epoch
    global_step: int = 0
    best: float = -1.0
    best_epoch: int = -1


@torch.no_grad()
def predict_scores(model: VideoClassifier, loader: DataLoader, device: torch.device, loss_kind: str,
                   amp: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """Scores [N, C], multi-hot targets [N, C] and mean loss of ``model`` over ``loader``."""
    model.eval()
    scores, targets, losses = [], [], []
    for batch in loader:
        frames = batch["frames"].to(device, non_blocking=True)
        labels = batch["labels"].to(device)
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            logits = model(frames)
        losses.append(classification_loss(logits.float(), labels, loss_kind).item() * len(labels))
        scores.append(probabilities(logits.float(), score_kind(loss_kind)).cpu().numpy())
        targets.append(labels.cpu().numpy())
    n = sum(len(s) for s in scores)
    return np.concatenate(scores), np.concatenate(targets), sum(losses) / max(n, 1)


class TrainingForward(torch.nn.Module):
    """The training pass of a model, as the module DistributedDataParallel wraps (it synchronises
    gradients only through its wrapped module's ``forward``): the model's outputs as a dict,
    ``forward_all``'s when distilling (the teacher needs the features or the ImageNet head), else the logits."""

    def __init__(self, model: VideoClassifier, all_outputs: bool):
        super().__init__()
        self.model = model
        self.all_outputs = all_outputs

    def forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.forward_all(frames) if self.all_outputs else {"logits": self.model(frames)}


def rank_seed(seed: int, rank: int) -> int:
    """The torch seed of rank ``rank`` > 0 (dropout draws differ between ranks; rank 0 draws as one process)."""
    return int(np.random.SeedSequence((seed, rank)).generate_state(1)[0])


def rng_state(device: torch.device) -> dict:
    """This process's torch (and CUDA) random state, as a checkpoint keeps it."""
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def train(config: TrainConfig, *, resume: bool = False) -> dict:
    """Train per ``config`` into the run directory ``config.out``; returns the last epoch's metrics.

    Under torchrun, every process calls it (see the module's docstring); each returns the same
    metrics, once rank 0 has written everything.

    Validation (several processes): rank 0 validates the whole validation set with the unwrapped
    model, through the same loader and code as one process, while the others wait for its record.
    So the epoch's numbers are exactly one process's on the same weights: sharding validation and
    gathering the scores would give each video the same scores only up to float rounding (other
    batches) and would pad or split the set unevenly, for a saving that is small next to training.
    """
    with process_group(config.device) as ranks:
        return _train(config, resume, ranks)


def _train(config: TrainConfig, resume: bool, ranks: Ranks) -> dict:
    run = RunDir(config.out)
    if resume and not run.last.exists():
        # Stopped before its first checkpoint was complete: nothing to continue, everything to redo.
        run.require(run.config, "checkpoint or config to resume from")
        if ranks.main:
            log.warning("%s has no checkpoint (the run was stopped before its first was written): starting it "
                        "from scratch with its config", run.root)
            run.keep_metrics_before(0)
        resume = False
    elif run.last.exists() and not resume:
        raise ConfigError(config.out, "already holds a run: resume it with --resume, or choose another out=")
    # Every rank has decided from the same files: from here on rank 0 may write them.
    ranks.barrier()
    if ranks.main:
        run.root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    device = ranks.device(config.device)
    amp = config.optim.amp and device.type == "cuda"

    if not config.data.dataset:
        raise ConfigError("data.dataset", "no dataset given (data.dataset=PATH)")
    all_train = load_dataset(config.data.dataset, config.data.train_split, on_error="skip")
    train_annotations = group_subset(all_train, config.data.group)
    label_map = train_annotations.label_map
    model = create_model(config.model.name, num_classes=len(label_map), pretrained=config.model.pretrained,
                         checkpoint_path=config.model.checkpoint_path, imagenet_head=config.model.imagenet_head,
                         **config.model.args).to(device)
    if config.model.init_from:  # its best checkpoint, else its last
        load_weights(model, RunDir(config.model.init_from).load_checkpoint(map_location=device)["model"],
                     reset_class_head=True)
    if config.model.freeze_stages:
        freeze_stages(model, config.model.freeze_stages)
    if ranks.rank > 0:  # every rank built the same model from the seed; each draws its own dropout
        torch.manual_seed(rank_seed(config.seed, ranks.rank))
    normalise = model.data_config
    mean, std = tuple(normalise["mean"]), tuple(normalise["std"])
    transform = VideoTransform(config.data.input_size, augment=config.data.augment, mean=mean, std=std)
    train_set, val_set, spec = _datasets(config, all_train, train_annotations, transform)
    weights = balanced_weights(train_set.samples, len(label_map)) if config.data.balanced else None
    if len(train_set) < ranks.world_size:
        raise ConfigError(config.data.train_split, f"{len(train_set)} training videos cannot be shared by "
                                                   f"{ranks.world_size} processes")
    sampler = EpochSampler(len(train_set), config.seed, weights, rank=ranks.rank, world_size=ranks.world_size)
    loader_args = {"batch_size": config.data.batch_size, "num_workers": config.data.workers,
                   "pin_memory": device.type == "cuda"}
    train_loader = DataLoader(train_set, sampler=sampler, drop_last=len(sampler) > config.data.batch_size, **loader_args)
    val_loader = DataLoader(val_set, shuffle=False, **loader_args)

    teacher = None
    if config.distill.teacher:
        def make_teacher(compute_features: bool) -> Teacher:
            return Teacher(config.distill.teacher, config, model, mean, std, device, train_set=train_set,
                           store=str(run.root), amp=amp, compute_features=compute_features)
        # With distill.cache, rank 0 computes (or finds) the features in the run directory, then the others read them.
        teacher = ranks.main_first(make_teacher) if config.distill.cache else make_teacher(True)
    optimizer = _optimizer(model, config)
    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * config.optim.epochs
    scheduler = warmup_cosine(optimizer, int(config.optim.warmup_epochs * steps_per_epoch), total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    state = _State()

    if resume:
        checkpoint = run.load_checkpoint(run.last, map_location=device)
        trained_by = checkpoint.get("world_size", 1)
        if trained_by != ranks.world_size:
            raise ConfigError(str(run.last), f"was saved by {trained_by} training process(es), this is "
                                             f"{ranks.world_size}: resume with the same number "
                                             f"(torchrun --nproc-per-node; one process: no torchrun)")
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        state = _State(**checkpoint["state"])
        rng = checkpoint["rng"]["ranks"][ranks.rank] if "ranks" in checkpoint["rng"] else checkpoint["rng"]
        torch.set_rng_state(rng["torch"])
        if device.type == "cuda" and rng.get("cuda") is not None:
            torch.cuda.set_rng_state(rng["cuda"], device)
        if ranks.main:
            run.keep_metrics_before(state.epoch)
    elif ranks.main:
        save_config(config, run.config)
        label_map.to_csv(run.root / "labels.csv")
        scores = score_kind(config.optim.loss)
        run.write_preprocess(Preprocess(spec, config.data.input_size, scores, mean, std))

    forward: torch.nn.Module = TrainingForward(model, all_outputs=teacher is not None)
    if ranks.distributed:
        # Parameters outside the loss (an ImageNet head kept but not distilled into) get no gradient:
        # DDP must then look for them each step.
        unused = model.imagenet_head is not None and not (teacher is not None and teacher.kind == "imagenet")
        forward = DistributedDataParallel(forward, device_ids=[device.index] if device.type == "cuda" else None,
                                          find_unused_parameters=unused)

    def save_last() -> None:
        """``last.pt``, by rank 0, with every rank's random state (all ranks call it at the same step)."""
        rngs = ranks.gather(rng_state(device))
        if not ranks.main:
            return
        rng = dict(rngs[0], ranks=rngs) if ranks.distributed else rngs[0]
        run.save_checkpoint({
            "model_config": model.config, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "state": vars(state).copy(),
            "rng": rng, "world_size": ranks.world_size, "config": config.to_dict(),
        }, run.last)

    last_record: dict = {}
    while state.epoch < config.optim.epochs:
        epoch_started = time.perf_counter()
        train_set.set_epoch(state.epoch)
        sampler.set_epoch(state.epoch, start=state.step * config.data.batch_size)
        forward.train()
        losses, distill_losses = [], []
        bar = tqdm(train_loader, desc=f"epoch {state.epoch + 1}/{config.optim.epochs}", unit="batch",
                   initial=state.step, total=steps_per_epoch, disable=not (config.progress and ranks.main), leave=False)
        for batch in bar:
            frames = batch["frames"].to(device, non_blocking=True)
            targets = batch["labels"].to(device, non_blocking=True)
            with torch.autocast(device.type, enabled=amp):
                outputs = forward(frames)
                distill = teacher.loss(frames, outputs, batch) if teacher else None
            loss = classification_loss(outputs["logits"].float(), targets, config.optim.loss)
            if distill is not None:
                distill_losses.append(distill.item())
                loss = loss + config.distill.weight * distill
            optimizer_step(loss, model, optimizer, scaler, scheduler, config.optim.grad_clip)
            losses.append(loss.item())
            state.step += 1
            state.global_step += 1
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if config.checkpoint_every and state.global_step % config.checkpoint_every == 0:
                save_last()
        train_seconds = time.perf_counter() - epoch_started

        every_rank = ranks.gather((losses, distill_losses))
        losses = [value for rank_losses, _ in every_rank for value in rank_losses]
        distill_losses = [value for _, rank_losses in every_rank for value in rank_losses]
        record, policy = None, None
        if ranks.main:  # see train's docstring
            scores, targets, val_loss = predict_scores(model, val_loader, device, config.optim.loss, amp)
            policy, val_jaccard = DecisionPolicy.fit(scores, targets)
            record = {
                "epoch": state.epoch, "train_loss": float(np.mean(losses)) if losses else None, "val_loss": val_loss,
                "val_mean_jaccard": val_jaccard, "val_top1": top_k_hit(scores, targets, 1),
                "val_mAP": mean_ap(scores, targets), "lr": scheduler.get_last_lr()[0],
                "distill_loss": float(np.mean(distill_losses)) if distill_losses else None,
                "seconds": round(time.perf_counter() - epoch_started, 2), "train_seconds": round(train_seconds, 3),
            }
        record = ranks.broadcast(record)
        val_jaccard = record["val_mean_jaccard"]
        state.epoch += 1
        state.step = 0
        improved = val_jaccard > state.best
        if improved:
            state.best, state.best_epoch = val_jaccard, record["epoch"]
        if ranks.main:
            run.append_metrics(record)
        save_last()
        if ranks.main and improved:
            run.publish_best()
            run.write_policy(policy.to_dict())
        if config.progress and ranks.main:
            print(f"epoch {record['epoch'] + 1}: train loss {record['train_loss']:.4f}, val loss {record['val_loss']:.4f}, "
                  f"val mean Jaccard {val_jaccard:.4f}, top-1 {record['val_top1']:.4f}", flush=True)
        last_record = record
        if config.optim.patience and state.epoch - 1 - state.best_epoch >= config.optim.patience:
            if config.progress and ranks.main:
                print(f"no better validation for {config.optim.patience} epochs: stopping", flush=True)
            break
    ranks.barrier()  # the run is complete on disk before any rank returns (finetune then reads it)
    return last_record or (run.read_metrics() or [{}])[-1]
