"""The one checkpointed training loop: supervised training, distillation and hard-set fine-tuning
(``trainer``) and SimCLR pretraining (``simclr``) all run their epochs through ``TrainLoop``.

    loop = TrainLoop(config, resume=resume, ranks=ranks)   # where the run stands; seeded; loop.device
    ...build the model (on loop.device) and a DataLoader over an EpochSampler...
    loop.prepare(model, loader)                            # optimiser, schedule, scaler; last.pt restored
    record = loop.fit(step, validate=validate)             # epochs, checkpoints, metrics.jsonl, best.pt

The caller brings what is its own: ``step(batch) -> (loss, values)`` (the forward pass under
``loop.autocast()`` and the loss; ``values`` are further per-batch numbers to average into the
epoch's record), and, optionally, ``validate() -> Validation`` (rank 0's numbers for the epoch, the
score that picks the best epoch and what to publish beside ``best.pt``).

The loop owns the rest, once for every trainer:

- the run directory's start: a folder holding ``last.pt`` is resumed (``resume=True``) or refused,
  one without it starts over; the torch seed; the device (``cuda:LOCAL_RANK`` under torchrun);
- the optimiser (AdamW or SGD with Nesterov momentum, per-module rates by ``lr_scale``), linear
  warm-up then cosine decay per step, mixed precision on CUDA (``optim.amp``: autocast and a
  gradient scaler), gradient clipping;
- exact resumption: the epoch's sample order from (seed, epoch) (``EpochSampler``), restarted at
  the step the checkpoint was written; ``last.pt`` holds model, optimiser, scheduler, scaler, every
  rank's RNG state, the epoch, step, best score and the epoch's per-batch values so far (so a
  resumed epoch reports all of them), and the number of processes, which a resume must keep;
- torchrun: ``Ranks`` says which process this is; rank 0 alone writes (checkpoints, metrics,
  ``best.pt``) and validates, the others receive its record and keep the same best epoch and patience;
- files: ``last.pt`` every epoch (and every ``checkpoint_every`` steps), ``best.pt`` when the
  score improves, all published atomically (``RunDir`` through ``shortvid.files``); one line per
  epoch in ``metrics.jsonl``, the same as TensorBoard curves in ``tensorboard/`` where it is installed
  (``curves.Curves``), and a printed line with ``progress``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from ..run import RunDir
from .config import ConfigError, save_config
from .curves import Curves
from .ranks import Ranks

log = logging.getLogger("shortvid.train")

Values = dict[str, float | None]  # a step's per-batch numbers besides its loss (None: none this batch)
Step = Callable[[dict], tuple[torch.Tensor, Values]]  # a batch -> its loss (to backpropagate) and values


class OptimSettings(Protocol):
    """The optimiser and schedule settings the loop reads (``OptimConfig``, ``SimCLROptimConfig``)."""

    name: str  # adamw | sgd
    lr: float
    weight_decay: float
    momentum: float
    epochs: int
    warmup_epochs: float
    amp: bool
    grad_clip: float | None


class LoopConfig(Protocol):
    """What the loop reads of a training config (``TrainConfig``, ``SimCLRConfig``)."""

    optim: OptimSettings
    out: str
    seed: int
    device: str
    checkpoint_every: int
    progress: bool

    def to_dict(self) -> dict: ...


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


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int,
                  total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to zero without restarts, stepped per batch."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_optimizer(model: nn.Module, optim: OptimSettings,
                    lr_scale: dict[str, float] | None = None) -> torch.optim.Optimizer:
    """AdamW, or SGD with Nesterov momentum, over the trainable parameters (frozen stages stay out),
    grouped by learning rate: ``lr_scale`` maps a module of the model (``aggregator``,
    ``classifier``, ``backbone``...) to a multiple of ``optim.lr`` (NeXtVLAD learns well at a tenth
    of the backbone's rate)."""
    groups: dict[float, list] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            scale = next((value for prefix, value in (lr_scale or {}).items() if name.split(".")[0] == prefix), 1.0)
            groups.setdefault(optim.lr * scale, []).append(parameter)
    trainable = [{"params": parameters, "lr": rate} for rate, parameters in groups.items()]
    if optim.name == "adamw":
        return torch.optim.AdamW(trainable, lr=optim.lr, weight_decay=optim.weight_decay)
    if optim.name == "sgd":
        return torch.optim.SGD(trainable, lr=optim.lr, momentum=optim.momentum,
                               weight_decay=optim.weight_decay, nesterov=True)
    raise ConfigError("optim.name", f"unknown optimiser {optim.name!r} (adamw, sgd)")


def rank_seed(seed: int, rank: int) -> int:
    """The torch seed of rank ``rank`` > 0 (dropout draws differ between ranks; rank 0 draws as one process)."""
    return int(np.random.SeedSequence((seed, rank)).generate_state(1)[0])


def rng_state(device: torch.device) -> dict:
    """This process's torch (and CUDA) random state, as a checkpoint keeps it."""
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


@dataclass
class LoopState:
    """Where a run is: saved in ``last.pt`` as ``state`` (with every rank's ``values``)."""

    epoch: int = 0
    step: int = 0  # batches done in this epoch
    global_step: int = 0
    best: float = -1.0  # the best validation score so far
    best_epoch: int = -1
    values: dict[str, list[float]] = field(default_factory=dict)  # this rank's per-batch values this epoch

    def to_checkpoint(self, every_rank: list[dict[str, list[float]]]) -> dict:
        return {"epoch": self.epoch, "step": self.step, "global_step": self.global_step, "best": self.best,
                "best_epoch": self.best_epoch, "epoch_values": every_rank}

    @classmethod
    def from_checkpoint(cls, state: dict, rank: int) -> "LoopState":
        """The state of ``rank``; reads checkpoints written before the loop was shared as well (the
        trainer's kept no per-batch values; SimCLR's kept its ``epoch_losses``)."""
        if "epoch_values" in state:
            values = state["epoch_values"][rank]
        else:
            values = {"loss": list(state["epoch_losses"])} if state.get("epoch_losses") else {}
        return cls(state["epoch"], state["step"], state["global_step"], state.get("best", -1.0),
                   state.get("best_epoch", -1), {name: list(kept) for name, kept in values.items()})


def _epoch_means(every_rank: list[dict[str, list[float]]], loss_name: str) -> dict[str, float | None]:
    """The mean of each per-batch value over every rank's batches of the epoch (None without any),
    the loss named ``loss_name``."""
    means: dict[str, float | None] = {loss_name: None}
    for key in dict.fromkeys(key for values in every_rank for key in values):
        kept = [value for values in every_rank for value in values.get(key, [])]
        means[loss_name if key == "loss" else key] = float(np.mean(kept)) if kept else None
    return means


@dataclass
class Validation:
    """One epoch's validation on rank 0: ``record`` joins the epoch's line in ``metrics.jsonl``,
    ``score`` picks the best epoch (higher is better), ``publish`` writes what goes with a new best
    (the decision policy) once ``best.pt`` is published, ``curves`` what the epoch adds to TensorBoard
    besides its record (per-class AP, the confusion matrix: ``curves.Curves``)."""

    record: dict
    score: float
    publish: Callable[[], None] | None = None
    curves: Callable[[Curves, int], None] | None = None


class TrainLoop:
    """Epochs of ``step`` over a loader, checkpointed and resumable; see the module's docstring.

    Built before the model, so that everything is made under the seed, on ``device``; then
    ``prepare`` (model and loader, restores a resumed run) and ``fit`` (the epochs)."""

    def __init__(self, config: LoopConfig, *, resume: bool, ranks: Ranks | None = None):
        self.config = config
        self.ranks = ranks or Ranks()
        self.run = RunDir(config.out)
        self.resumed = self._resumes(resume)
        # Every rank has decided from the same files: from here on rank 0 may write them.
        self.ranks.barrier()
        if self.ranks.main:
            self.run.root.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(config.seed)
        self.device = self.ranks.device(config.device)
        self.amp = config.optim.amp and self.device.type == "cuda"
        self.state = LoopState()

    def _resumes(self, resume: bool) -> bool:
        """Whether the run continues from ``last.pt``: a folder holding one is never overwritten
        without ``resume``; one without it (stopped before its first checkpoint) starts over."""
        run = self.run
        if resume and not run.last.exists():
            run.require(run.config, "checkpoint or config to resume from")
            if self.ranks.main:
                log.warning("%s has no checkpoint (the run was stopped before its first was written): starting it "
                            "from scratch with its config", run.root)
                run.keep_metrics_before(0)
            return False
        if run.last.exists() and not resume:
            raise ConfigError(self.config.out, "already holds a run: resume it with --resume, or choose another out=")
        return resume

    def seed_rank(self) -> None:
        """Under torchrun, after every rank built the same model from the seed: each rank > 0 draws
        its own dropout from here on."""
        if self.ranks.rank > 0:
            torch.manual_seed(rank_seed(self.config.seed, self.ranks.rank))

    def autocast(self) -> torch.autocast:
        """The mixed-precision context of a training step (off but on CUDA with ``optim.amp``)."""
        return torch.autocast(self.device.type, enabled=self.amp)

    def prepare(self, model: nn.Module, loader: DataLoader, *, lr_scale: dict[str, float] | None = None,
                checkpoint: dict | None = None) -> None:
        """Optimiser, schedule and gradient scaler for ``model`` (on ``device``) and ``loader`` (over
        an ``EpochSampler``); a resumed run's ``last.pt`` restored into all of them, a new run's
        ``config.yaml`` written. ``checkpoint``: more entries every checkpoint holds (what rebuilds
        the model)."""
        if not isinstance(loader.sampler, EpochSampler):
            raise TypeError("the training loader samples through an EpochSampler (exact resumption needs it)")
        optim = self.config.optim
        self.model, self.loader, self.extra = model, loader, dict(checkpoint or {})
        self.optimizer = build_optimizer(model, optim, lr_scale)
        self.steps_per_epoch = len(loader)
        self.scheduler = warmup_cosine(self.optimizer, int(optim.warmup_epochs * self.steps_per_epoch),
                                       self.steps_per_epoch * optim.epochs)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        if self.resumed:
            self._restore()
        elif self.ranks.main:
            save_config(self.config, self.run.config)

    def _restore(self) -> None:
        run, ranks, device = self.run, self.ranks, self.device
        checkpoint = run.load_checkpoint(run.last, map_location=device)
        trained_by = checkpoint.get("world_size", 1)
        if trained_by != ranks.world_size:
            raise ConfigError(str(run.last), f"was saved by {trained_by} training process(es), this is "
                                             f"{ranks.world_size}: resume with the same number "
                                             f"(torchrun --nproc-per-node; one process: no torchrun)")
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.state = LoopState.from_checkpoint(checkpoint["state"], ranks.rank)
        rng = checkpoint["rng"]["ranks"][ranks.rank] if "ranks" in checkpoint["rng"] else checkpoint["rng"]
        torch.set_rng_state(rng["torch"])
        if device.type == "cuda" and rng.get("cuda") is not None:
            torch.cuda.set_rng_state(rng["cuda"], device)
        if ranks.main:
            run.keep_metrics_before(self.state.epoch)

    def save_last(self) -> None:
        """``last.pt``, by rank 0, with every rank's random state and values (all ranks call it at the same step)."""
        every_rank = self.ranks.gather((rng_state(self.device), self.state.values))
        if not self.ranks.main:
            return
        rngs = [rng for rng, _ in every_rank]
        rng = dict(rngs[0], ranks=rngs) if self.ranks.distributed else rngs[0]
        self.run.save_checkpoint({
            **self.extra, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "state": self.state.to_checkpoint([values for _, values in every_rank]), "rng": rng,
            "world_size": self.ranks.world_size, "config": self.config.to_dict(),
        }, self.run.last)

    def _optimizer_step(self, loss: torch.Tensor) -> None:
        """Backward through the (mixed-precision) scaler, optional gradient clipping, the optimiser and
        the per-step schedule. Under DDP the gradients arrive averaged over the ranks."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()

    def _train_epoch(self, step: Step, name: str) -> None:
        state, config = self.state, self.config
        self.loader.dataset.set_epoch(state.epoch)
        self.loader.sampler.set_epoch(state.epoch, start=state.step * self.loader.batch_size)
        self.model.train()
        bar = tqdm(self.loader, desc=f"{name} {state.epoch + 1}/{config.optim.epochs}", unit="batch",
                   initial=state.step, total=self.steps_per_epoch, leave=False,
                   disable=not (config.progress and self.ranks.main))
        for batch in bar:
            loss, values = step(batch)
            self._optimizer_step(loss)
            for key, value in {"loss": loss.item(), **values}.items():
                kept = state.values.setdefault(key, [])
                if value is not None:
                    kept.append(value)
            state.step += 1
            state.global_step += 1
            bar.set_postfix(loss=f"{state.values['loss'][-1]:.4f}")
            if config.checkpoint_every and state.global_step % config.checkpoint_every == 0:
                self.save_last()

    def fit(self, step: Step, *, validate: Callable[[], Validation] | None = None, name: str = "epoch",
            loss_name: str = "train_loss", describe: Callable[[dict], str] | None = None,
            patience: int | None = None) -> dict:
        """Train the remaining epochs; returns the last epoch's record (the last logged one when
        there was none left). Each record: ``epoch``, the mean of each per-batch value over every
        rank (the loss as ``loss_name``), ``validate``'s numbers, ``lr``, ``seconds`` (with
        validation) and ``train_seconds``. ``describe`` makes the printed line of an epoch;
        ``patience`` stops after so many epochs without a better score. Returns once the run is
        complete on disk, on every rank."""
        state, ranks, run = self.state, self.ranks, self.run
        curves = Curves.open(run.root, state.epoch) if ranks.main and state.epoch < self.config.optim.epochs \
            else None
        try:
            return self._fit(step, validate, name, loss_name, describe, patience, curves)
        finally:
            if curves is not None:
                curves.close()

    def _fit(self, step: Step, validate: Callable[[], Validation] | None, name: str, loss_name: str,
             describe: Callable[[dict], str] | None, patience: int | None, curves: Curves | None) -> dict:
        state, ranks, run = self.state, self.ranks, self.run
        last_record: dict = {}
        while state.epoch < self.config.optim.epochs:
            started = time.perf_counter()
            self._train_epoch(step, name)
            train_seconds = time.perf_counter() - started
            means = _epoch_means(ranks.gather(state.values), loss_name)
            record, validation = None, None
            if ranks.main:
                validation = validate() if validate else None
                record = {"epoch": state.epoch, **means, **(validation.record if validation else {}),
                          "lr": self.scheduler.get_last_lr()[0], "seconds": round(time.perf_counter() - started, 2),
                          "train_seconds": round(train_seconds, 3)}
            record, score = ranks.broadcast((record, validation.score if validation else None))
            state.epoch += 1
            state.step = 0
            state.values = {}
            improved = score is not None and score > state.best
            if improved:
                state.best, state.best_epoch = score, record["epoch"]
            if ranks.main:
                run.append_metrics(record)
                if curves is not None:
                    curves.epoch(record)
                    if validation is not None and validation.curves is not None:
                        validation.curves(curves, record["epoch"])
            self.save_last()
            if ranks.main and improved:
                run.publish_best()
                if validation.publish:
                    validation.publish()
            if self.config.progress and ranks.main and describe:
                print(describe(record), flush=True)
            last_record = record
            if patience and state.epoch - 1 - state.best_epoch >= patience:
                if self.config.progress and ranks.main:
                    print(f"no better validation for {patience} epochs: stopping", flush=True)
                break
        ranks.barrier()  # the run is complete on disk before any rank returns (finetune then reads it)
        return last_record or (run.read_metrics() or [{}])[-1]
