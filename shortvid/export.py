"""Exporting a run's model to ONNX (``shortvid export RUN --format onnx``), for ONNX Runtime serving.

The graph takes ``frames`` float32 ``[batch, frames, 3, H, W]``, normalised as the model takes them
(the run's evaluation transform: centre crop to ``input_size``, mean/std), and gives ``logits``
float32 ``[batch, classes]``. ``batch`` and ``frames`` are dynamic axes: one file serves any batch
size and any frame count; ``H = W = input_size`` are fixed. There is no ``mask`` input: masked
(padded) batches need data-dependent indexing that does not trace, so an ONNX session takes
unpadded batches, and the ONNX backend (``Classifier.load(run, backend="onnx")``) groups a padded
batch by frame count. Fused runs (``shortvid fuse``) export as one graph; ``by_frame_count`` runs
(``shortvid adaptive``) choose their member by the data and are refused with an ``ExportError``.

A model with motion or sound (``model.inputs``, docs/motion-and-sound.md) takes them after ``frames``, by
the same names: ``motion`` float32 ``[batch, frames, M, 3, H, W]``, ``audio`` float32 ``[batch, mels,
audio_frames]`` and ``audio_mask`` bool ``[batch]``, with ``batch``, ``frames`` and ``audio_frames`` dynamic
(``frames`` is one axis: the motion frames' count of keyframes is the frames'). ``graph_inputs`` reads the
names back from a file. A keyframes-only model exports exactly as before.

The exporter is torch's TorchScript-based one (``dynamo=False``): it needs no extra package and
gives graphs that match PyTorch to ~1e-7 on the shipped models (docs/onnx.md). Int8 versions of the
exported file (``--quantize static|dynamic``, ``precision="int8"|"int8-dynamic"``): ``shortvid.quantize``.

``ensure_onnx`` is how the ONNX backend finds the file: made on first use and again whenever the
checkpoint is newer, in the run's folder or, for a run that cannot be written to, in the user's cache
(``cache_folder``); processes that need it at once make it once (``locked``).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from .errors import ShortvidError
from .extras import require
from .files import atomic_path
from .models import FrameCountSwitch, FusedClassifier
from .models.fusion import FUSION_RULES
from .models.inputs import DEFAULT_MELS, inputs_of
from .run import RunDir

DEFAULT_OPSET = 17
INPUT_NAME = "frames"
OUTPUT_NAME = "logits"


class ExportError(ShortvidError):
    """A run's model cannot be exported (or an exported file cannot be used)."""


# Each extra input's dynamic axes (models.inputs.INPUT_NAMES), named as the frames' where they are the same.
EXTRA_AXES = {"motion": {0: "batch", 1: "frames"}, "audio": {0: "batch", 2: "audio_frames"}, "audio_mask": {0: "batch"}}
EXAMPLE_AUDIO_FRAMES = 101  # the traced example's sound: 1 s of log-mel frames (any count works)


class _Logits(nn.Module):
    """``frames[, extra inputs] -> logits`` with no mask: the exported function."""

    def __init__(self, model: nn.Module, names: tuple[str, ...] = ()):
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, frames: Tensor, *extra: Tensor) -> Tensor:
        return self.model(frames, **dict(zip(self.names, extra, strict=True))).float()


def example_inputs(model: nn.Module, input_size: int, device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """The inputs the graph is traced with: ``frames`` ``[1, 2, 3, S, S]`` and the model's extra inputs
    (``models.inputs``) to match: ``motion`` ``[1, 2, M, 3, S, S]``, ``audio`` ``[1, mels, 101]``, ``audio_mask``
    ``[1]`` True (the graph still holds the no-sound branch)."""
    frames = torch.zeros(1, 2, 3, input_size, input_size, device=device)
    made = {
        "motion": lambda: torch.zeros(1, 2, int(getattr(model, "motion_frames", 1)), 3, input_size, input_size,
                                      device=device),
        "audio": lambda: torch.zeros(1, int(getattr(model, "mels", DEFAULT_MELS)), EXAMPLE_AUDIO_FRAMES, device=device),
        "audio_mask": lambda: torch.ones(1, dtype=torch.bool, device=device),
    }
    names = inputs_of(model)
    unknown = [name for name in names if name not in made]
    if unknown:
        raise ValueError(f"the model takes inputs ONNX export does not know: {', '.join(unknown)}")
    return {INPUT_NAME: frames, **{name: made[name]() for name in names}}


def graph_inputs(path: str | os.PathLike) -> tuple[str, ...]:
    """The inputs of an exported file besides ``frames`` (``model.inputs`` of the model it was made from)."""
    require("onnx", "reading an ONNX file")
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {tensor.name for tensor in graph.initializer}
    return tuple(i.name for i in graph.input if i.name != INPUT_NAME and i.name not in initializers)


def onnx_path(run_dir: str | os.PathLike, checkpoint: str = "best") -> Path:
    """Where a run's ONNX model lives: ``RUN/model.onnx`` (best checkpoint), ``RUN/model-last.onnx``."""
    return Path(run_dir) / ("model.onnx" if checkpoint == "best" else f"model-{checkpoint}.onnx")


def check_exportable(model: nn.Module, source: str) -> None:
    """Raise ``ExportError`` for models whose graph depends on the data (frame-count switches)."""
    if isinstance(model, FrameCountSwitch) or any(isinstance(m, FrameCountSwitch) for m in model.modules()):
        raise ExportError(source, "a by_frame_count run picks its member model by each video's frame count, "
                                  "which one ONNX graph cannot do; export its member runs instead, or serve "
                                  "it with the torch backend")


def export_model(model: nn.Module, out: str | os.PathLike, input_size: int, *, opset: int = DEFAULT_OPSET,
                 source: str | None = None, check: bool = True) -> Path:
    """Write ``model`` (eval mode, any device) as an ONNX file, published atomically once checked."""
    require("onnx", "ONNX export")
    out = Path(out)
    check_exportable(model, source or str(out))
    model = model.eval()
    reference = next(iter(model.parameters()), None)
    device = reference.device if reference is not None else torch.device("cpu")
    try:
        example = example_inputs(model, input_size, device)
    except ValueError as error:
        raise ExportError(source or str(out), str(error)) from error
    names = tuple(example)
    if isinstance(model, FusedClassifier) and model.rule not in FUSION_RULES:
        raise ExportError(source or str(out), f"unknown fusion rule {model.rule!r}")
    # eval() on the wrapper too: the exporter restores the wrapper's mode afterwards, recursively
    wrapper = _Logits(model, names[1:]).eval()
    axes = {INPUT_NAME: {0: "batch", 1: "frames"}, **{name: EXTRA_AXES[name] for name in names[1:]},
            OUTPUT_NAME: {0: "batch"}}
    try:
        with atomic_path(out) as temporary:
            with warnings.catch_warnings(), torch.no_grad():
                # The legacy exporter warns that it is legacy, and the tracer that Python branches on
                # shapes (empty-batch guards) are fixed: both are expected here.
                warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
                warnings.simplefilter("ignore", category=DeprecationWarning)
                warnings.simplefilter("ignore", category=FutureWarning)
                torch.onnx.export(
                    wrapper, tuple(example.values()), str(temporary), input_names=list(names),
                    output_names=[OUTPUT_NAME], dynamic_axes=axes, opset_version=opset, do_constant_folding=True,
                    dynamo=False,
                )
            if check:
                import onnx

                onnx.checker.check_model(str(temporary), full_check=True)
    except ShortvidError:
        raise
    except Exception as error:  # the exporter's and checker's errors are of many kinds
        raise ExportError(source or str(out), f"ONNX export failed: {type(error).__name__}: {error}") from error
    return out


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, checkpoint: str = "best",
               opset: int = DEFAULT_OPSET) -> Path:
    """Export a run's model (its ``best`` checkpoint by default) to ``out`` (default RUN/model.onnx)."""
    require("onnx", "ONNX export")
    run = RunDir(run_dir)
    preprocess = run.preprocess()
    model = run.load_model(checkpoint, "cpu")
    check_exportable(model, str(run_dir))
    return export_model(model, out or onnx_path(run_dir, checkpoint), preprocess.input_size, opset=opset,
                        source=str(run_dir))


def is_fresh(path: Path, *sources: Path) -> bool:
    """Whether ``path`` exists and is no older than any of ``sources`` (the files it is made from)."""
    return path.exists() and all(path.stat().st_mtime >= source.stat().st_mtime for source in sources)


def cache_folder(weights: Path) -> Path:
    """Where the ONNX files of a run that cannot be written to are made: ``$XDG_CACHE_HOME/shortvid/onnx/KEY``
    (default ``~/.cache/shortvid/onnx/KEY``), KEY naming the checkpoint file by its resolved path, size
    and modification time, so a changed or replaced checkpoint never meets another's files."""
    stat = weights.stat()
    key = hashlib.sha256(f"{weights.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:24]
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "shortvid" / "onnx" / key


def onnx_folder(run_dir: str | os.PathLike, name: str, weights: Path) -> Path:
    """Where the run's ONNX file ``name``, made from ``weights``, is found or made: the run's folder, unless
    the file there is not up to date and the folder cannot be written to (a run shipped read-only):
    ``cache_folder``."""
    folder = Path(run_dir)
    if not is_fresh(folder / name, weights) and not os.access(folder, os.W_OK):
        return cache_folder(weights)
    return folder


@contextmanager
def locked(folder: Path, source: str) -> Iterator[None]:
    """Hold an exclusive lock on ``folder``, so that processes loading one run at once (Ray actors,
    service replicas) make its files one after the other; unlocked where the file system has no locks."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError as error:
        raise ExportError(source, f"cannot write the ONNX files into {folder}: {error}") from error
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        except OSError:
            # No locks on this file system: processes loading the run at once may write the same
            # temporary file; a reader still never sees a torn file (publishing is a rename), and a
            # process whose export fails that way falls back to PyTorch with a warning (auto).
            pass
        yield
    finally:
        os.close(descriptor)  # releases the lock


def ensure_onnx(run_dir: str | os.PathLike, checkpoint: str = "best", *, folder: Path | None = None,
                opset: int = DEFAULT_OPSET) -> Path:
    """The run's fp32 ONNX file, (re)made first (``export_run``, at ``opset``) when missing or older than
    the checkpoint: in ``folder``, by default ``onnx_folder`` (the run's folder, or the user's cache when
    that cannot be written to). Processes that need the file at once make it once."""
    run = RunDir(run_dir)
    weights = run.require(run.checkpoint_path(checkpoint), "checkpoint")
    name = onnx_path(run_dir, checkpoint).name
    folder = Path(folder) if folder is not None else onnx_folder(run_dir, name, weights)
    path = folder / name
    if is_fresh(path, weights):
        return path
    with locked(folder, str(run_dir)):
        if not is_fresh(path, weights):  # another process may have made it meanwhile
            export_run(run_dir, path, checkpoint=checkpoint, opset=opset)
    return path
