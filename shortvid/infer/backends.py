"""Where a run's model runs: the backends (PyTorch, ONNX Runtime), the precisions each offers, and
``resolve_backend``, the one place that turns a run, a backend, a precision and a device into the
backend that runs it.

``check_backend`` is the one check of a (backend, precision) pair, and the one place that reads
``$SHORTVID_BACKEND`` and ``$SHORTVID_PRECISION`` (for a pair left unnamed, as the competition kit's
``ServerApi`` and the command line leave it by default). ``auto`` (the default everywhere) is not a
third backend but a choice between the two, made by ``resolve_backend`` for the device and precision
asked: ONNX Runtime on the CPU where it can run the run (it gives the same answers as PyTorch and is
faster there), else PyTorch, with a warning naming the cause (docs/onnx.md, "Picking the backend").

The file each backend runs is made or found by its owner: the fp32 ONNX file by
``shortvid.export.ensure_onnx``, the int8 ones by ``shortvid.quantize.ensure_quantized``, the PyTorch
model by ``RunDir.load_model``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import ShortvidError
from ..export import INPUT_NAME, OUTPUT_NAME, ExportError, ensure_onnx
from ..extras import MissingExtraError, require
from ..machine import resolve_device
from ..models.adaptive import grouped_logits
from ..models.inputs import inputs_of
from ..quantize import MODE_OF_PRECISION, ensure_quantized
from ..run import RunDir

log = logging.getLogger(__name__)

AUTO = "auto"
# The precisions each backend runs (the first is the default); int8 files come from shortvid.quantize.
_CONCRETE = {"torch": ("fp32", "bf16"), "onnx": ("fp32", "int8", "int8-dynamic")}
ALL_PRECISIONS = tuple(dict.fromkeys(p for choices in _CONCRETE.values() for p in choices))
PRECISIONS = {AUTO: ALL_PRECISIONS, **_CONCRETE}  # auto runs each precision on a backend that runs it
BACKENDS = tuple(PRECISIONS)  # auto first: the default
AUTO_ORDER = ("onnx", "torch")  # what auto tries, fastest first
BACKEND_VARIABLE, PRECISION_VARIABLE = "SHORTVID_BACKEND", "SHORTVID_PRECISION"


class BackendError(ShortvidError, ValueError):
    """A backend that does not exist, or a precision the backend does not run; names the valid pairs."""


def check_backend(backend: str | None, precision: str | None) -> tuple[str, str]:
    """The (backend, precision) to run, checked. One left ``None`` is read from ``$SHORTVID_BACKEND`` /
    ``$SHORTVID_PRECISION``, else ``auto`` / the backend's default precision (``fp32``). A backend that
    does not exist, or a precision it does not run, is a ``BackendError`` naming where the value came from
    and the valid pairs."""
    read = [f"${name}" for name, value in ((BACKEND_VARIABLE, backend), (PRECISION_VARIABLE, precision))
            if value is None and os.environ.get(name)]
    source = " and ".join(read) or "backend choice"
    backend = backend or os.environ.get(BACKEND_VARIABLE) or AUTO
    if backend not in BACKENDS:
        raise BackendError(source, f"unknown backend {backend!r} ({', '.join(BACKENDS)})")
    precision = precision or os.environ.get(PRECISION_VARIABLE) or PRECISIONS[backend][0]
    if precision not in PRECISIONS[backend]:
        valid = "; ".join(f"{name}: {', '.join(choices)}" for name, choices in PRECISIONS.items())
        raise BackendError(source, f"precision {precision!r} is not available on the {backend!r} backend "
                                   f"(valid: {valid})")
    return backend, precision


class TorchBackend:
    """Logits from a prepared batch with the run's PyTorch model. ``inputs``: what the model takes besides
    frames and mask (``model.inputs``: motion, audio, audio_mask), which callers prepare and pass by name."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: str = "fp32"):
        self.model = model
        self.inputs = inputs_of(model)
        self.device = device  # where prepared batches must be
        # bf16: autocast on the model's device (convolutions and matmuls in bf16, the ops autocast
        # keeps in fp32 in fp32, logits returned as fp32); on the CPU it was faster than casting the
        # model to bf16 and as close to fp32 (docs/onnx.md).
        self.precision = precision

    def __call__(self, frames: torch.Tensor, mask: torch.Tensor | None = None, **extra: torch.Tensor) -> torch.Tensor:
        if self.precision == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                return self.model(frames, mask, **extra).float()
        return self.model(frames, mask, **extra)


class OnnxBackend:
    """Logits from a prepared batch with ONNX Runtime, on an exported run (``shortvid export``).

    The graph takes no mask, so a padded batch is split by each video's valid-frame count and each
    group runs unpadded (its valid frames, in order): the logits the masked PyTorch model gives.
    ``inputs``: the graph's inputs besides ``frames`` (the exported model's ``inputs``: motion, audio,
    audio_mask), fed by name; a group takes its rows of each (of ``motion``, its valid frames too).
    """

    name = "onnx"

    def __init__(self, path: str | os.PathLike, device: torch.device, precision: str = "fp32", spin: bool = False):
        require("onnx", "the onnx backend")
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            index = device.index if device.index is not None else 0
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        # ORT's pool threads spin by default, between operators and after each run: the fastest for
        # one video at a time back to back, but the spinning holds the cores that decode threads and
        # other requests need (BENCHMARKS.md, "What makes the single stream fast"): off unless the
        # caller runs one at a time.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.spin = spin
        self.path = Path(path)
        self.precision = precision  # fp32, int8 (static) or int8-dynamic: which file `path` is
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as error:  # onnxruntime's errors derive from Exception only
            cause = f"ONNX Runtime cannot load {self.path.name}: {type(error).__name__}: {error}"
            raise ExportError(str(path), cause) from error
        self.providers = tuple(self.session.get_providers())
        self.input, self.output = INPUT_NAME, OUTPUT_NAME
        self.inputs = tuple(i.name for i in self.session.get_inputs() if i.name != INPUT_NAME)
        self.device = torch.device("cpu")  # preprocessing stays on the CPU; ORT is fed numpy

    def run(self, frames: torch.Tensor, **extra: torch.Tensor) -> torch.Tensor:
        """Logits of an unpadded batch; ``extra``: the graph's other inputs (``inputs``)."""
        feeds = {self.input: np.ascontiguousarray(frames.detach().cpu().numpy(), dtype=np.float32)}
        for name in self.inputs:
            value = extra[name].detach().cpu().numpy()
            feeds[name] = np.ascontiguousarray(value, dtype=np.bool_ if name == "audio_mask" else np.float32)
        return torch.from_numpy(self.session.run([self.output], feeds)[0])

    def __call__(self, frames: torch.Tensor, mask: torch.Tensor | None = None, **extra: torch.Tensor) -> torch.Tensor:
        missing = [name for name in self.inputs if name not in extra]
        if missing:
            raise ValueError(f"{self.path.name} takes {', '.join(self.inputs)} besides frames and was not given "
                             f"{', '.join(missing)}")
        extra = {name: extra[name] for name in self.inputs}
        if mask is None or bool(mask.all()):
            return self.run(frames, **extra)
        mask = mask.bool().cpu()
        counts = mask.sum(1)
        if bool((counts == 0).any()):
            raise ValueError("a video with no valid frame cannot be classified")

        def group(_: int, rows: torch.Tensor) -> torch.Tensor:
            rows = rows.tolist()
            per_frame = {INPUT_NAME: frames, **{name: extra[name] for name in ("motion",) if name in extra}}
            unpadded = {name: torch.stack([value[row][mask[row]] for row in rows]) for name, value in per_frame.items()}
            per_video = {name: value[rows] for name, value in extra.items() if name not in per_frame}
            return self.run(unpadded.pop(INPUT_NAME), **unpadded, **per_video)

        return grouped_logits(counts.tolist(), group)


Backend = TorchBackend | OnnxBackend


def resolve_backend(run_dir: str | os.PathLike, backend: str | None = AUTO, precision: str | None = "fp32",
                    device: str | torch.device = "auto", *, checkpoint: str = "best", spin: bool = False) -> Backend:
    """The backend that runs ``run_dir``'s ``checkpoint`` (``best`` or ``last``) at ``precision`` on ``device``.

    The pair is checked first (``check_backend``: ``None`` reads the environment), before any file is
    read or made. ``onnx``: ONNX Runtime on the run's ONNX file of ``precision`` (``fp32``:
    RUN/model.onnx, model-last.onnx for ``last``; ``int8``: RUN/model.int8-static.onnx, calibrated on
    training frames; ``int8-dynamic``: RUN/model.int8-dynamic.onnx), made first when missing or older
    than the checkpoint (in the user's cache when the run's folder is read-only); CUDA when ``device``
    is a GPU and onnxruntime has it, else the CPU. ``torch``: the run's PyTorch model on ``device``
    (``bf16``: autocast). ``auto``: onnx on the CPU, torch on a GPU and for bf16, onnx for int8 (only
    ONNX Runtime runs it: failing as ``onnx`` does); where onnx was picked and cannot run (onnxruntime
    missing, a run that does not export), torch, with a warning naming the cause. The backend's
    ``name`` says which was chosen.

    ``spin``: let ONNX Runtime's threads spin between operators and runs, for a caller that classifies
    one video at a time back to back (the competition's protocol, ``shortvid predict`` without
    ``--batch-size``, ``evaluate_run``). Off by default: where decode threads or other requests share
    the cores (the service, ``classify_many``) spinning takes their time (BENCHMARKS.md)."""
    backend, precision = check_backend(backend, precision)
    device = resolve_device(device)
    if backend == AUTO:
        runs = tuple(name for name in AUTO_ORDER if precision in PRECISIONS[name])
        if runs == ("onnx",):
            backend = "onnx"
        elif runs == ("torch",) or device.type != "cpu":
            backend = "torch"  # bf16; on a GPU, PyTorch with CUDA (docs/onnx.md, "Picking the backend")
        else:
            try:
                return _onnx_backend(run_dir, checkpoint, precision, device, spin)
            except (MissingExtraError, ExportError) as error:
                log.warning("shortvid: %s: ONNX Runtime not used, running the PyTorch model: %s", run_dir, error.cause)
                backend = "torch"
    if backend == "onnx":
        return _onnx_backend(run_dir, checkpoint, precision, device, spin)
    return TorchBackend(RunDir(run_dir).load_model(checkpoint, device), device, precision)


def _onnx_backend(run_dir: str | os.PathLike, checkpoint: str, precision: str, device: torch.device,
                  spin: bool) -> OnnxBackend:
    """ONNX Runtime on the run's file of ``precision``, made first when missing or stale."""
    require("onnx", "the onnx backend")  # before making the file, which needs it too
    mode = MODE_OF_PRECISION.get(precision)
    path = ensure_quantized(run_dir, mode, checkpoint) if mode else ensure_onnx(run_dir, checkpoint)
    return OnnxBackend(path, device, precision, spin)


__all__ = ["ALL_PRECISIONS", "AUTO", "AUTO_ORDER", "BACKENDS", "PRECISIONS", "Backend", "BackendError",
           "OnnxBackend", "TorchBackend", "check_backend", "resolve_backend"]
