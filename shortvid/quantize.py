"""Int8 ONNX models of a run (``shortvid export RUN --quantize static|dynamic``), and precision choices.

Two ONNX Runtime quantisations of a run's exported ``model.onnx`` (docs/onnx.md, "Quantisation"):

- ``static`` (``precision="int8"``): weights and activations int8, QDQ format, weights per output
  channel. Activation ranges are calibrated (min/max) on frames of the run's *training* split, read
  from the run's frame cache when it has one (else decoded with the run's FrameSpec) and put through
  the run's evaluation transform: the batches the model is fed in serving.
- ``dynamic`` (``precision="int8-dynamic"``): int8 weights; activations quantised at run time from
  each tensor's own range (``ConvInteger`` / ``MatMulInteger``); no calibration data.

Both keep the graph's interface (``frames`` float32 in, ``logits`` float32 out). Weights are
quantised to 7 bits (``reduce_range=True``), which ONNX Runtime recommends for uint8 x int8 on x86
CPUs without VNNI (AVX2, AVX-512F): their int8 dot product (``vpmaddubsw``) sums pairs into int16 and
can saturate with full-range weights. The cost is half a bit of weight precision; the gain is that a
file behaves the same on every x86 CPU.

Files sit beside the fp32 one: ``RUN/model.int8-static.onnx``, ``RUN/model.int8-dynamic.onnx``
(``model-last.*`` for ``checkpoint="last"``), and ``ensure_quantized`` re-makes a file that is missing or
older than the fp32 file, as ``shortvid.export.ensure_onnx`` does for ``model.onnx`` against the
checkpoint (in the user's cache instead when the run's folder is read-only: ``export.cache_folder``).

Precision per backend (``Classifier.load(..., backend=, precision=)``): ``shortvid.infer.backends.PRECISIONS``;
``MODE_OF_PRECISION`` names the file each int8 precision runs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .export import DEFAULT_OPSET, INPUT_NAME, ExportError, ensure_onnx, is_fresh, locked, onnx_folder, onnx_path
from .extras import require
from .files import atomic_path
from .run import RunDir

MODES = ("static", "dynamic")
MODE_OF_PRECISION = {"int8": "static", "int8-dynamic": "dynamic"}
DEFAULT_CALIBRATION_VIDEOS = 64


def quantized_path(run_dir: str | os.PathLike, mode: str, checkpoint: str = "best") -> Path:
    """``RUN/model.int8-static.onnx`` / ``RUN/model.int8-dynamic.onnx`` (``model-last.…`` for ``last``)."""
    if mode not in MODES:
        raise ValueError(f"unknown quantisation mode {mode!r} ({', '.join(MODES)})")
    stem = onnx_path(run_dir, checkpoint).stem
    return Path(run_dir) / f"{stem}.int8-{mode}.onnx"


def ensure_quantized(run_dir: str | os.PathLike, mode: str, checkpoint: str = "best", *,
                     calibration_videos: int = DEFAULT_CALIBRATION_VIDEOS) -> Path:
    """The run's int8 ONNX file of ``mode`` (``static``, ``dynamic``), (re)made first when missing or older
    than the fp32 file it is made from, which ``shortvid.export.ensure_onnx`` keeps up to date beside it: in
    the run's folder, or in the user's cache when the run's folder cannot be written to (a run shipped
    read-only) and holds no up-to-date file. Processes that need the same file at once make it once."""
    run = RunDir(run_dir)
    weights = run.require(run.checkpoint_path(checkpoint), "checkpoint")
    name = quantized_path(run_dir, mode, checkpoint).name
    folder = onnx_folder(run_dir, name, weights)
    fp32 = ensure_onnx(run_dir, checkpoint, folder=folder)
    path = folder / name
    if is_fresh(path, fp32):
        return path
    with locked(folder, str(run_dir)):
        if not is_fresh(path, fp32):  # another process may have made it meanwhile
            frames = calibration_frames(run_dir, calibration_videos) if mode == "static" else None
            quantize_onnx(fp32, path, mode, frames, source=str(run_dir))
    return path


def calibration_frames(run_dir: str | os.PathLike, videos: int = DEFAULT_CALIBRATION_VIDEOS, *,
                       dataset: str | os.PathLike | None = None, split: str | None = None,
                       cache: str | os.PathLike | None = None) -> list[np.ndarray]:
    """Model inputs (float32 ``[1, frames, 3, H, W]``, the evaluation transform applied) of ``videos``
    videos spread evenly over the run's training split.

    ``dataset``/``split``/``cache`` default to the run's training config (``data.dataset``,
    ``data.train_split``, ``data.cache``). Frames come from the cache when it exists and holds frames
    of the run's size (the frames the model was trained on, sampled as evaluation samples them), else
    they are decoded with the run's FrameSpec. Raises ``ExportError`` when there is no data."""
    from .data.annotations import load_dataset
    from .data.cache import FrameCache
    from .data.datasets import CachedVideoDataset, RawVideoDataset
    from .errors import ShortvidError

    if videos < 1:
        raise ValueError("calibration needs at least one video")
    run = RunDir(run_dir)
    source = str(run_dir)
    data = run.training_data()
    if dataset is None:
        dataset, cache = data.get("dataset") or None, cache if cache is not None else data.get("cache")
    split = split or data.get("train_split") or "train"
    if not dataset:
        raise ExportError(source, "no training data found for calibration: the run's config.yaml names no "
                                  "dataset (a run not trained here?); give one (--calibration-data DATA)")
    preprocess = run.preprocess()
    transform = preprocess.transform()
    try:
        annotations = load_dataset(dataset, split, labels=run.label_map(), on_error="skip")
        if not annotations.samples:
            raise ExportError(source, f"no training data found for calibration: split {split!r} of {dataset} is empty")
        frames_cache = None
        if cache and Path(cache, "cache.json").exists():
            frames_cache = FrameCache(cache)
            if frames_cache.spec.size != preprocess.frames.size:
                frames_cache = None  # frames of another size: decode instead
        if frames_cache is not None:
            items = CachedVideoDataset(annotations, frames_cache, preprocess.frames.k, "test", transform)
        else:
            items = RawVideoDataset(annotations, preprocess.frames, "test", transform, max_failures=max(10, videos))
        picks = sorted(set(np.linspace(0, len(items) - 1, min(videos, len(items))).round().astype(int).tolist()))
        return [items[i]["frames"].unsqueeze(0).numpy().astype(np.float32, copy=False) for i in picks]
    except ExportError:
        raise
    except ShortvidError as error:
        raise ExportError(source, f"no training data found for calibration: {error}") from error


def _reader(batches: Iterable[np.ndarray]):
    """An ``onnxruntime.quantization.CalibrationDataReader`` over prepared batches."""
    from onnxruntime.quantization import CalibrationDataReader

    class Frames(CalibrationDataReader):
        def __init__(self, batches: list[np.ndarray]):
            self.batches = batches
            self.rewind()

        def get_next(self) -> dict | None:
            batch = next(self._iterator, None)
            return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}

        def rewind(self) -> None:
            self._iterator = iter(self.batches)

    return Frames(list(batches))


def quantize_onnx(model_onnx: str | os.PathLike, out: str | os.PathLike, mode: str = "static",
                  calibration: Iterable[np.ndarray] | None = None, *, per_channel: bool = True,
                  reduce_range: bool = True, op_types: Iterable[str] | None = None,
                  source: str | None = None) -> Path:
    """Write an int8 version of the fp32 ONNX file ``model_onnx`` to ``out``.

    ``mode="static"``: QDQ, uint8 activations calibrated (min/max) on ``calibration`` (model inputs,
    float32 ``[batch, frames, 3, H, W]``), int8 weights (per channel when ``per_channel``).
    ``mode="dynamic"``: int8 weights, activations quantised at run time; ``calibration`` unused.
    ``reduce_range``: 7-bit weights (see the module docstring). ``op_types``: the op types to
    quantise (default: all ONNX Runtime can). The graph is shape-inferred and optimised first
    (``quant_pre_process``), checked after, published atomically."""
    require("onnx", "int8 quantisation")
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if mode not in MODES:
        raise ValueError(f"unknown quantisation mode {mode!r} ({', '.join(MODES)})")
    source = source or str(model_onnx)
    out = Path(out)
    reader = None
    if mode == "static":
        reader = _reader(calibration or ())
        if not reader.batches:
            raise ExportError(source, "static quantisation needs calibration frames, and none were given")
    work = Path(tempfile.mkdtemp(prefix="shortvid-quantize-"))
    try:
        with atomic_path(out, suffix=".onnx") as temporary:
            prepared = work / "prepared.onnx"
            quant_pre_process(str(model_onnx), str(prepared))
            kinds = {"op_types_to_quantize": list(op_types)} if op_types else {}
            if mode == "dynamic":
                quantize_dynamic(str(prepared), str(temporary), weight_type=QuantType.QInt8, per_channel=per_channel,
                                 reduce_range=reduce_range, **kinds)
            else:
                quantize_static(str(prepared), str(temporary), reader, quant_format=QuantFormat.QDQ,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                per_channel=per_channel, reduce_range=reduce_range,
                                calibrate_method=CalibrationMethod.MinMax, **kinds)
            onnx.checker.check_model(str(temporary))
    except Exception as error:  # the quantiser's errors are of many kinds
        raise ExportError(source, f"{mode} int8 quantisation failed: {type(error).__name__}: {error}") from error
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def quantize_run(run_dir: str | os.PathLike, mode: str = "static", *, checkpoint: str = "best",
                 out: str | os.PathLike | None = None, videos: int = DEFAULT_CALIBRATION_VIDEOS,
                 dataset: str | os.PathLike | None = None, split: str | None = None,
                 opset: int = DEFAULT_OPSET) -> Path:
    """An int8 ONNX file of a run (default ``quantized_path(run, mode)``), from its fp32 ``model.onnx``
    (exported first when missing or older than the checkpoint). ``static`` calibrates on ``videos``
    training videos (``calibration_frames``; ``dataset``/``split`` override the run's own)."""
    if mode not in MODES:
        raise ValueError(f"unknown quantisation mode {mode!r} ({', '.join(MODES)})")
    fp32 = ensure_onnx(run_dir, checkpoint, opset=opset)
    frames = calibration_frames(run_dir, videos, dataset=dataset, split=split) if mode == "static" else None
    return quantize_onnx(fp32, out or quantized_path(run_dir, mode, checkpoint), mode, frames, source=str(run_dir))
