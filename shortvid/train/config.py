"""Training configuration: plain dataclasses, loaded from YAML, overridden by ``key=value`` arguments.

    shortvid train --config tiny optim.epochs=3 data.dataset=data/small model.name=tsn_resnet50

``--config`` takes a YAML file or the name of a shipped config (``shortvid/configs/NAME.yaml``): an
existing file wins, else the shipped name; anything else (a folder named ``tiny``, say) is an error.
Unknown keys are errors, so a typo never silently trains the wrong thing. Keys renamed since (``RENAMED``)
are read under their old names too, so older YAML files and runs' ``config.yaml`` still load.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..errors import ShortvidError
from ..files import atomic_write


class ConfigError(ShortvidError):
    """A configuration file or override is invalid."""


@dataclass
class DataConfig:
    dataset: str = ""  # anything shortvid.data.annotations.load_dataset reads
    train_split: str = "train"
    val_split: str = "val"
    cache: str | None = None  # a frame cache made by `shortvid extract`; None: decode videos on the fly
    k: int = 3  # frames per video (TSN segments), a FrameSpec's k: at most the frame cache's (`extract --k`)
    resize: int | list[int] = 256  # short side the frames are decoded to, or [height, width] (must match the cache)
    input_size: int = 224  # crop fed to the network
    batch_size: int = 16
    workers: int = 2
    balanced: bool = False  # sample classes evenly (long-tailed data)
    augment: bool = True  # random resized crop, flip, colour jitter when training; off: centre crop
    flip: bool = True  # horizontal flips in augmentation; off where a label says left from right (motion direction)
    group: str | None = None  # train a specialist on this label group's classes only (`train --group`)


@dataclass
class ModelConfig:
    name: str = "tsn_resnet50"
    pretrained: bool = False  # timm hub weights (needs network access)
    checkpoint_path: str | None = None  # local backbone weights (timm or torchvision state dict)
    imagenet_head: bool = False  # keep the 1000-way head as an auxiliary output (for distillation)
    init_from: str | None = None  # start from the weights of this run's best checkpoint (fine-tuning)
    freeze_stages: int = 0  # freeze the backbone's stem and first N stages (hard-set fine-tuning, step 1)
    motion: int = 0  # frames after each keyframe the model sees as motion (RGB difference; 0: off; needs a cache
    # extracted with at least --motion N)
    audio: bool = False  # the model hears the video's sound (log-mel; needs a cache extracted with --audio)
    args: dict[str, Any] = field(default_factory=dict)  # builder overrides: backbone, aggregator, dropout, ...


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    epochs: int = 10
    warmup_epochs: float = 1.0
    loss: str = "bce"  # bce (multi-label, the seed's) | ce (softmax)
    stream_loss: float = 1.0  # weight of the per-modality heads' mean loss (a model with model.args.stream_heads)
    amp: bool = True  # mixed precision on CUDA; ignored on the CPU
    grad_clip: float | None = None
    patience: int | None = None  # stop after this many epochs without a better validation mean Jaccard
    lr_scale: dict[str, float] = field(default_factory=dict)  # per module of the model: {"aggregator": 0.1}


@dataclass
class DistillConfig:
    teacher: str | None = None  # a trained run whose model teaches (`shortvid distill --teacher RUN`)
    kind: str = "imagenet"  # imagenet: the seed's normalised ImageNet-head MSE | logits: Hinton soft targets
    weight: float = 1.0  # the distillation term's weight next to the classification loss
    temperature: float = 4.0  # logits only
    # cache: run the frozen teacher's backbone once before training over every cached frame of every
    # training video (needs data.cache) and keep its features as float16 in RUN/teacher_features.npy
    # (reused on --resume); each batch then runs only the teacher's heads on the features of the
    # frames the student got. Teacher backbone passes: once per cached frame instead of
    # epochs x videos x data.k. The teacher sees the centre crop of each frame: with
    # data.augment=false that is the student's view (same targets up to float16 rounding); with
    # augmentation the student sees a random view and the teacher the clean one ("teacher on the
    # clean view" distillation, not the uncached per-view targets).
    cache: bool = False


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    out: str = "runs/train"  # the run directory
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    checkpoint_every: int = 0  # also save every N steps (0: at epoch ends only)
    progress: bool = True

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def frame_size(self) -> int | tuple[int, int]:
        """``data.resize`` as the decoder's FrameSpec takes it."""
        resize = self.data.resize
        return tuple(resize) if isinstance(resize, (list, tuple)) else int(resize)


# Keys renamed since configs were first written: (section, old name) -> new name. Old YAML files, the
# config.yaml of runs made before, and overrides given the old way all read as the new name.
RENAMED: dict[tuple[type, str], str] = {(DataConfig, "num_segments"): "k"}


def _current_names(cls, values, where: str):
    """``values`` (a section of ``cls``, as YAML gives it) with old key names renamed (``RENAMED``), in its
    subsections too; a key given under both names is an error."""
    if not isinstance(values, dict):
        return values
    current: dict = {}
    for key, value in values.items():
        name = RENAMED.get((cls, key), key)
        if name in current:
            old = [old for (section, old), new in RENAMED.items() if section is cls and new == name]
            raise ConfigError(where, f"{name} is given twice, once under its old name {old[0]}: keep {name}")
        current[name] = _current_names(_section(cls, name), value, where)
    return current


def _current_path(cls, parts: list[str]) -> list[str]:
    """An override's dotted key (``["data", "num_segments"]``) under the current names (``["data", "k"]``)."""
    current = []
    for part in parts:
        current.append(RENAMED.get((cls, part), part))
        cls = _section(cls, current[-1])
    return current


def _section(cls, name: str) -> type | None:
    """The config class of section ``name`` of ``cls`` (``DataConfig`` for ``data``); None for a value."""
    if not dataclasses.is_dataclass(cls) or name not in {f.name for f in dataclasses.fields(cls)}:
        return None
    default = getattr(cls(), name)
    return type(default) if dataclasses.is_dataclass(default) else None


def _build(cls, values: dict, where: str):
    if not isinstance(values, dict):
        raise ConfigError(where, f"expected a mapping, got {type(values).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(where, f"unknown keys {unknown}; known: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        default = getattr(cls(), name) if name in known else None
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value or {}, f"{where}.{name}")
        else:
            kwargs[name] = value
    return cls(**kwargs)


def shipped_configs() -> list[str]:
    """Names of the configs that ship with shortvid."""
    folder = resources.files("shortvid") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def resolve_config(source: str | Path) -> tuple[str, str]:
    """The YAML text of ``source`` and where it came from: an existing file, else a shipped config
    of that name; a ``ConfigError`` saying why for anything else."""
    path = Path(source)
    if path.is_file():
        return path.read_text(), str(path)
    shipped = resources.files("shortvid") / "configs" / f"{source}.yaml"
    if not path.suffix and "/" not in str(source) and shipped.is_file():
        return shipped.read_text(), f"shipped config {source}"
    names = ", ".join(shipped_configs())
    if path.exists():
        raise ConfigError(str(path), f"not a YAML file (a {'folder' if path.is_dir() else 'special file'}), "
                          f"and not a shipped config ({names})")
    raise ConfigError(str(path), f"no such config file, and not a shipped config ({names})")


def load_config(source: str | Path | None = None, overrides: Sequence[str] = (), *, schema: type = TrainConfig):
    """A config from a YAML file or shipped name, then ``key.sub=value`` overrides (values as YAML).

    ``schema``: the config dataclass to build (default ``TrainConfig``; ``shortvid.train.simclr``
    passes its ``SimCLRConfig``), with the same rules: nested sections, unknown keys are errors."""
    values: dict = {}
    where = "defaults"
    if source:
        text, where = resolve_config(source)
        try:
            values = yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            raise ConfigError(where, f"invalid YAML: {error}") from None
        values = _current_names(schema, values, where)
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise ConfigError(override, "overrides look like key.sub=value")
        target = values
        parts = _current_path(schema, key.split("."))
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(override, f"{part} is not a section")
        target[parts[-1]] = yaml.safe_load(raw) if raw else None
    return _build(schema, values, where)


def save_config(config, path: str | Path) -> None:
    """``config`` (any config dataclass with ``to_dict``) as YAML, atomically."""
    atomic_write(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
