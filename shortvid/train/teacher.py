"""The teacher of distillation: a trained run's model, frozen, giving a student's batch its targets.

``distill.kind=imagenet`` (the seed's): the MSE of the L2-normalised ImageNet heads; ``logits``: Hinton
soft targets. With ``distill.cache`` the teacher's backbone runs once over the frame cache
(``teacher_cache``) and each batch costs only its heads.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ..data.datasets import CachedVideoDataset
from ..data.transforms import VideoTransform
from ..models import VideoClassifier
from ..models.aggregators import masked_mean
from ..models.inputs import DEFAULT_MELS, inputs_of, model_inputs
from ..run import RunDir
from .config import ConfigError, TrainConfig
from .losses import imagenet_distillation_loss, logit_distillation_loss
from .teacher_cache import TeacherFeatures, checkpoint_key


def _check_fed(teacher: torch.nn.Module, student: torch.nn.Module, config: TrainConfig, run_dir: str) -> None:
    """A ``ConfigError`` unless the student's batches carry what ``teacher`` takes besides frames, in its sizes:
    its motion frames (the student's data reads ``model.motion`` of them) and its sound (read with
    ``model.audio``, as the student's mel bands). Checked before training, not at its first batch."""
    takes = inputs_of(teacher)
    student_mels = getattr(student, "mels", DEFAULT_MELS)
    needs = []
    if "motion" in takes and config.model.motion != teacher.motion_frames:
        needs.append(f"model.motion={teacher.motion_frames} (the student reads {config.model.motion})")
    if "audio" in takes and not config.model.audio:
        needs.append("model.audio=true")
    elif "audio" in takes and student_mels != teacher.mels:
        needs.append(f"{teacher.mels} mel bands (the student's audio encoder has {student_mels})")
    if needs:
        raise ConfigError("distill.teacher", f"the teacher {run_dir} takes {', '.join(takes)} besides frames; the "
                                             f"student's batches carry them only with {' and '.join(needs)}: train "
                                             "the student so, or distil from a teacher that takes frames only")


class Teacher:
    """A trained run's model, frozen, giving the distillation targets for a student's batch.

    Frames arrive normalised for the student; they are re-normalised for the teacher when the two
    backbones expect different input statistics. With ``distill.cache`` the teacher's backbone runs
    once before training over every cached frame of ``train_set`` (centre crop, the teacher's own
    normalisation; see ``teacher_cache``), and a batch costs only the teacher's heads on the
    features of the frames it holds (its ``index`` and ``picks``).

    ``compute_features=False`` (training processes other than rank 0): read the stored features, never
    compute or write them; rank 0 has made them first (``Ranks.main_first``).
    """

    def __init__(self, run_dir: str, config: TrainConfig, student: VideoClassifier, mean, std, device,
                 train_set: Dataset | None = None, store: str | None = None, amp: bool = False,
                 compute_features: bool = True):
        if config.distill.cache and not (config.data.cache and isinstance(train_set, CachedVideoDataset)):
            raise ConfigError("data.cache", "distill.cache=true computes the teacher's features once over the frame "
                                            "cache: give data.cache=CACHE (made by `shortvid extract`), "
                                            "or set distill.cache=false")
        teacher_run = RunDir(run_dir)
        self.model = teacher_run.load_model("best", device)
        if config.distill.cache and getattr(self.model, "inputs", ()):
            raise ConfigError("distill.cache", f"the teacher {run_dir} takes {', '.join(self.model.inputs)} as well "
                                               "as frames, which cached frame features do not hold: set "
                                               "distill.cache=false")
        _check_fed(self.model, student, config, run_dir)
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.kind = config.distill.kind
        if self.kind == "imagenet" and (self.model.imagenet_head is None or student.imagenet_head is None):
            raise ConfigError("distill.kind", "imagenet distillation needs both models' ImageNet heads "
                                              "(train both with model.imagenet_head=true), or use distill.kind=logits")
        if self.kind == "logits" and self.model.num_classes != student.num_classes:
            raise ConfigError("distill.kind", "logit distillation needs teacher and student over the same classes")
        if self.kind not in ("imagenet", "logits"):
            raise ConfigError("distill.kind", f"unknown kind {self.kind!r} (imagenet, logits)")
        preprocess = teacher_run.preprocess()
        shape = (1, 1, 3, 1, 1)
        self.scale = (torch.tensor(std) / torch.tensor(preprocess.std)).view(shape).to(device)
        shift = (torch.tensor(mean) - torch.tensor(preprocess.mean)) / torch.tensor(preprocess.std)
        self.shift = shift.view(shape).to(device)
        self.config = config.distill
        self.loss_kind = config.optim.loss
        self.device = device
        self.features: TeacherFeatures | None = None
        self.computed_features = False
        if config.distill.cache:
            # The student's crop size (what the uncached teacher sees), the teacher's normalisation.
            transform = VideoTransform(config.data.input_size, augment=False, mean=preprocess.mean, std=preprocess.std)
            checkpoint = teacher_run.best if teacher_run.best.exists() else teacher_run.last
            key = {"teacher": checkpoint_key(checkpoint), "cache": str(train_set.cache.root.resolve()),
                   "input_size": config.data.input_size, "mean": list(preprocess.mean), "std": list(preprocess.std)}
            names = [sample.name for sample in train_set.samples]
            self.features, self.computed_features = TeacherFeatures.load_or_compute(
                store or config.out, self.model, train_set.cache, names, transform, key, device,
                batch_size=config.data.batch_size, workers=config.data.workers, amp=amp, progress=config.progress,
                compute=compute_features)
            self.starts = torch.tensor([self.features.starts[name] for name in names], dtype=torch.int64)

    @torch.no_grad()
    def targets(self, frames: torch.Tensor, batch: dict | None = None) -> dict[str, torch.Tensor]:
        """The teacher's ``logits`` [B, C] and, with its ImageNet head, ``imagenet`` [B, 1000] for a batch:
        from its stored features when cached (``batch`` gives ``index`` and ``picks``), else a full pass."""
        if self.features is None:
            extra = model_inputs(self.model, batch or {}, self.device, non_blocking=True)
            if "motion" in extra:  # normalised for the student, as the frames are
                extra["motion"] = extra["motion"] * self.scale.unsqueeze(1) + self.shift.unsqueeze(1)
            return self.model.forward_all(frames * self.scale + self.shift, **extra)
        if batch is None or "picks" not in batch:
            raise ValueError("cached teacher features need the batch's index and picks (a CachedVideoDataset batch)")
        index = torch.as_tensor(batch["index"], dtype=torch.int64)
        features = self.features.gather(self.starts[index], batch["picks"])
        features = features.to(self.device, non_blocking=True).float()
        out = {"logits": self.model.forward_head(features), "features": features}
        if self.model.imagenet_head is not None:
            out["imagenet"] = masked_mean(self.model.imagenet_head(features), None, dim=1)
        return out

    def loss(self, frames: torch.Tensor, student_outputs: dict[str, torch.Tensor],
             batch: dict | None = None) -> torch.Tensor:
        teacher_outputs = self.targets(frames, batch)
        if self.kind == "imagenet":
            return imagenet_distillation_loss(student_outputs["imagenet"], teacher_outputs["imagenet"])
        return logit_distillation_loss(student_outputs["logits"], teacher_outputs["logits"],
                                       self.config.temperature, self.loss_kind)
