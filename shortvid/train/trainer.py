"""Training a video classifier: ``train(config)`` runs epochs and writes a run directory.

The epochs, checkpoints, resumption, mixed precision and the ranks' shares of the work are the
shared loop's (``shortvid.train.loop.TrainLoop``, also SimCLR's). This module adds what is a
classifier's: the labelled data (frame cache or videos, label groups, class balance), the model
(``model.init_from``, frozen stages), the teacher of distillation, a step's classification (plus
distillation) loss, and validation, which tunes the decision policy published with ``best.pt``.

Seeded and resumable: the epoch's sample order, each sample's frame choice and augmentation all
derive from (seed, epoch, index), so a run killed mid-epoch continues where it was
(``checkpoint_every`` steps bounds what a kill can cost) and ends with the same weights as an
uninterrupted one.

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

from dataclasses import replace

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data.annotations import Annotations, load_dataset
from ..data.cache import FrameCache
from ..data.datasets import CachedVideoDataset, RawVideoDataset
from ..data.labels import LabelMap
from ..data.transforms import VideoTransform
from ..decode import AudioSpec, FrameSpec
from ..metrics import confusion_matrix, mean_ap, per_class_ap, top_k_hit
from ..models import VideoClassifier, create_model
from ..models.inputs import DEFAULT_MELS, model_inputs
from ..models.scores import probabilities, score_kind
from ..policy import DecisionPolicy
from ..run import Preprocess, RunDir, load_weights
from .config import ConfigError, TrainConfig
from .curves import Curves
from .freeze import freeze_stages
from .loop import EpochSampler, TrainLoop, Validation
from .losses import classification_loss
from .ranks import Ranks, process_group
from .teacher import Teacher


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


def train_transform(config: TrainConfig, model: VideoClassifier) -> VideoTransform:
    """The datasets' transform: the config's augmentation (``data.augment``, ``data.flip``), the model's
    normalisation."""
    mean, std = tuple(model.data_config["mean"]), tuple(model.data_config["std"])
    return VideoTransform(config.data.input_size, augment=config.data.augment, flip=config.data.flip,
                          mean=mean, std=std)


def _datasets(config: TrainConfig, all_train: Annotations, train_annotations: Annotations, transform: VideoTransform,
              mels: int = DEFAULT_MELS) -> tuple[Dataset, Dataset, FrameSpec, AudioSpec | None]:
    """The training and validation sets, the FrameSpec that reads a video as they do (with ``model.motion``
    motion frames) and the AudioSpec of their sound (None without ``model.audio``), as ``mels`` log-mel bands
    (the model's audio encoder's)."""
    data, motion, hears = config.data, config.model.motion, config.model.audio
    val_annotations = load_dataset(data.dataset, data.val_split, labels=all_train.label_map, on_error="skip")
    val_annotations = group_subset(val_annotations, data.group)
    cache = FrameCache(data.cache) if data.cache else None
    if cache is not None and cache.spec.size != config.frame_size():
        raise ConfigError("data.resize", f"is {data.resize} but the cache {data.cache} holds frames of size "
                                         f"{cache.spec.size}")

    def make(annotations: Annotations, mode: str) -> CachedVideoDataset | RawVideoDataset:
        if cache is not None:  # served as the cache was decoded (its spec with data.k)
            return CachedVideoDataset(annotations, cache, data.k, mode, transform, seed=config.seed,
                                      motion=motion, audio=hears, mels=mels)
        spec = FrameSpec(k=data.k, size=config.frame_size(), motion=motion)
        return RawVideoDataset(annotations, spec, mode, transform, seed=config.seed,
                               audio=AudioSpec() if hears else None, mels=mels)

    train_set = make(train_annotations, "train")
    audio = None
    if hears:
        audio = cache.audio if cache is not None else train_set.audio
    return train_set, make(val_annotations, "test"), replace(train_set.spec, motion=motion), audio


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
            logits = model(frames, **model_inputs(model, batch, device, non_blocking=True))
        losses.append(classification_loss(logits.float(), labels, loss_kind).item() * len(labels))
        scores.append(probabilities(logits.float(), score_kind(loss_kind)).cpu().numpy())
        targets.append(labels.cpu().numpy())
    n = sum(len(s) for s in scores)
    return np.concatenate(scores), np.concatenate(targets), sum(losses) / max(n, 1)


class TrainingForward(torch.nn.Module):
    """The training pass of a model, as the module DistributedDataParallel wraps (it synchronises
    gradients only through its wrapped module's ``forward``): the model's outputs as a dict,
    ``forward_all``'s when distilling (the teacher needs the features or the ImageNet head) or with stream heads
    (their logits), else the logits."""

    def __init__(self, model: VideoClassifier, all_outputs: bool):
        super().__init__()
        self.model = model
        self.all_outputs = all_outputs

    def forward(self, frames: torch.Tensor, **extra: torch.Tensor) -> dict[str, torch.Tensor]:
        """``extra``: the model's other inputs (``model.inputs``: motion, sound)."""
        if self.all_outputs:
            return self.model.forward_all(frames, **extra)
        return {"logits": self.model(frames, **extra)}


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
    """What training a classifier adds to the loop: the data, the model, the teacher, the
    classification (and distillation) loss of a step, and validation with the decision policy."""
    if not config.data.dataset:
        raise ConfigError("data.dataset", "no dataset given (data.dataset=PATH)")
    loop = TrainLoop(config, resume=resume, ranks=ranks)
    device, run = loop.device, loop.run
    all_train = load_dataset(config.data.dataset, config.data.train_split, on_error="skip")
    train_annotations = group_subset(all_train, config.data.group)
    label_map = train_annotations.label_map
    model = _model(config, label_map, device)
    loop.seed_rank()
    mean, std = tuple(model.data_config["mean"]), tuple(model.data_config["std"])
    transform = train_transform(config, model)
    mels = getattr(model, "mels", DEFAULT_MELS)
    train_set, val_set, spec, audio = _datasets(config, all_train, train_annotations, transform, mels)
    train_loader, val_loader = _loaders(config, train_set, val_set, ranks, device)
    teacher = None
    if config.distill.teacher:
        def make_teacher(compute_features: bool) -> Teacher:
            return Teacher(config.distill.teacher, config, model, mean, std, device, train_set=train_set,
                           store=str(run.root), amp=loop.amp, compute_features=compute_features)
        # With distill.cache, rank 0 computes (or finds) the features in the run directory, then the others read them.
        teacher = ranks.main_first(make_teacher) if config.distill.cache else make_teacher(True)
    loop.prepare(model, train_loader, lr_scale=config.optim.lr_scale, checkpoint={"model_config": model.config})
    if not loop.resumed and ranks.main:
        label_map.to_csv(run.root / "labels.csv")
        run.write_preprocess(Preprocess(spec, config.data.input_size, score_kind(config.optim.loss), mean, std,
                                        audio, mels))
    # Parameters outside the loss (an ImageNet head kept but not distilled into) get no gradient:
    # DDP must then look for them each step.
    unused = model.imagenet_head is not None and not (teacher is not None and teacher.kind == "imagenet")
    streams = list(model.stream_heads or ())
    forward = ranks.wrap(TrainingForward(model, all_outputs=teacher is not None or bool(streams)), device,
                         find_unused_parameters=unused)

    def step(batch: dict) -> tuple[torch.Tensor, dict]:
        frames = batch["frames"].to(device, non_blocking=True)
        targets = batch["labels"].to(device, non_blocking=True)
        extra = model_inputs(model, batch, device, non_blocking=True)
        with loop.autocast():
            outputs = forward(frames, **extra)
            distill = teacher.loss(frames, outputs, batch) if teacher else None
        loss = classification_loss(outputs["logits"].float(), targets, config.optim.loss)
        if streams:  # each modality's own head: no stream stops learning once another fits (VideoClassifier)
            loss = loss + config.optim.stream_loss * sum(
                classification_loss(outputs[f"{name}_logits"].float(), targets, config.optim.loss)
                for name in streams) / len(streams)
        if distill is not None:
            loss = loss + config.distill.weight * distill
        return loss, {"distill_loss": None if distill is None else distill.item()}

    def validate() -> Validation:  # on rank 0 alone: see train's docstring
        scores, targets, val_loss = predict_scores(model, val_loader, device, config.optim.loss, loop.amp)
        policy, jaccard = DecisionPolicy.fit(scores, targets)
        record = {"val_loss": val_loss, "val_mean_jaccard": jaccard, "val_top1": top_k_hit(scores, targets, 1),
                  "val_mAP": mean_ap(scores, targets)}

        def curves(writer: Curves, epoch: int) -> None:  # per-class AP and the confusions under the policy
            writer.per_class(label_map.names, per_class_ap(scores, targets), epoch)
            writer.confusion(confusion_matrix(policy.apply(scores), targets, len(label_map)), label_map.names,
                             *label_map.group_order(), epoch)

        return Validation(record, jaccard, publish=lambda: run.write_policy(policy.to_dict()), curves=curves)

    return loop.fit(step, validate=validate, describe=_epoch_line, patience=config.optim.patience)


def _model(config: TrainConfig, label_map: LabelMap, device: torch.device) -> VideoClassifier:
    """The model ``config`` trains: built, started from ``model.init_from``'s weights, stages frozen. A model
    with motion or sound gets stream heads unless ``model.args.stream_heads=false``: without them a still or
    muted video of an appearance class was not recognised at all (docs/motion-and-sound.md)."""
    senses = {key: value for key, value in (("motion", config.model.motion), ("audio", config.model.audio)) if value}
    if senses:  # each modality's own loss unless the config says otherwise (VideoClassifier: "stream_heads")
        senses["stream_heads"] = config.model.args.get("stream_heads", True)
    args = {key: value for key, value in config.model.args.items() if key not in senses}
    model = create_model(config.model.name, num_classes=len(label_map), pretrained=config.model.pretrained,
                         checkpoint_path=config.model.checkpoint_path, imagenet_head=config.model.imagenet_head,
                         **senses, **args).to(device)
    if config.model.init_from:  # its best checkpoint, else its last
        load_weights(model, RunDir(config.model.init_from).load_checkpoint(map_location=device)["model"],
                     reset_class_head=True)
    if config.model.freeze_stages:
        freeze_stages(model, config.model.freeze_stages)
    return model


def _loaders(config: TrainConfig, train_set: Dataset, val_set: Dataset, ranks: Ranks,
             device: torch.device) -> tuple[DataLoader, DataLoader]:
    """The training loader over this rank's share of each epoch's seeded order, and the validation loader."""
    weights = balanced_weights(train_set.samples, train_set.num_classes) if config.data.balanced else None
    if len(train_set) < ranks.world_size:
        raise ConfigError(config.data.train_split, f"{len(train_set)} training videos cannot be shared by "
                                                   f"{ranks.world_size} processes")
    sampler = EpochSampler(len(train_set), config.seed, weights, rank=ranks.rank, world_size=ranks.world_size)
    args = {"batch_size": config.data.batch_size, "num_workers": config.data.workers,
            "pin_memory": device.type == "cuda"}
    train_loader = DataLoader(train_set, sampler=sampler, drop_last=len(sampler) > config.data.batch_size, **args)
    return train_loader, DataLoader(val_set, shuffle=False, **args)


def _epoch_line(record: dict) -> str:
    numbers = {key: "-" if record[key] is None else f"{record[key]:.4f}"
               for key in ("train_loss", "val_loss", "val_mean_jaccard", "val_top1")}
    return (f"epoch {record['epoch'] + 1}: train loss {numbers['train_loss']}, val loss {numbers['val_loss']}, "
            f"val mean Jaccard {numbers['val_mean_jaccard']}, top-1 {numbers['val_top1']}")
