"""Int8 ONNX models of a run (``shortvid export RUN --quantize static|dynamic``), and precision choices.

Two ONNX Runtime quantisations of a run's exported ``model.onnx`` (docs/onnx.md, "Quantisation"):

- ``static`` (``precision="int8"``): weights and activations int8, QDQ format, weights per output
  channel. Activation ranges are calibrated (min/max) on frames of the run's *training* split, read
  from the run's frame cache when it has one (else decoded with the run's FrameSpec) and put through
  the run's evaluation transform: the batches the model is fed in serving.
- ``dynamic`` (``precision="int8-dynamic"``): int8 weights; activations quantised at run time from
  each tensor's own range (``ConvInteger`` / ``MatMulInteger``); no calibration data.

Both keep the graph's interface (``frames`` float32 in, and a model's motion and sound inputs after it;
``logits`` float32 out). Static calibration feeds every graph input: for a model with motion or sound
(``export.graph_inputs``) the calibration data must give them too (``calibration_inputs`` takes them from
the training data's items); where it cannot, static int8 is refused with an ``ExportError`` and
``dynamic`` (which needs no data) still works. Weights are
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
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from .export import (
    DEFAULT_OPSET,
    INPUT_NAME,
    ExportError,
    ensure_onnx,
    graph_inputs,
    is_fresh,
    locked,
    onnx_folder,
    onnx_path,
)
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
            batches = None
            if mode == "static":
                batches = calibration_inputs(run_dir, calibration_videos, names=graph_inputs(fp32))
            quantize_onnx(fp32, path, mode, batches, source=str(run_dir))
    return path


def calibration_frames(run_dir: str | os.PathLike, videos: int = DEFAULT_CALIBRATION_VIDEOS, *,
                       dataset: str | os.PathLike | None = None, split: str | None = None,
                       cache: str | os.PathLike | None = None) -> list[np.ndarray]:
    """Model inputs (float32 ``[1, frames, 3, H, W]``, the evaluation transform applied) of ``videos``
    videos spread evenly over the run's training split: ``calibration_inputs``' frames."""
    batches = calibration_inputs(run_dir, videos, dataset=dataset, split=split, cache=cache)
    return [batch[INPUT_NAME] for batch in batches]


def calibration_inputs(run_dir: str | os.PathLike, videos: int = DEFAULT_CALIBRATION_VIDEOS, *,
                       dataset: str | os.PathLike | None = None, split: str | None = None,
                       cache: str | os.PathLike | None = None,
                       names: Sequence[str] = ()) -> list[dict[str, np.ndarray]]:
    """Graph inputs of ``videos`` videos spread evenly over the run's training split, one video a batch:
    ``frames`` (float32 ``[1, frames, 3, H, W]``, the evaluation transform applied) and the other inputs
    ``names`` (``export.graph_inputs``: ``motion``, ``audio``, ``audio_mask``, from the dataset's items).

    ``dataset``/``split``/``cache`` default to the run's training config (``data.dataset``,
    ``data.train_split``, ``data.cache``). Frames come from the cache when it exists and holds frames
    of the run's size (the frames the model was trained on, sampled as evaluation samples them), else
    they are decoded with the run's FrameSpec (and, for a model that hears, its AudioSpec). Raises
    ``ExportError`` when there is no data, or when the data gives no ``names``."""
    import torch

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
    # The datasets give motion frames and sound only when asked (as training asks: models.inputs).
    cached_extra, raw_extra = {}, {}
    if "motion" in names:
        cached_extra["motion"] = preprocess.frames.motion
    if "audio" in names or "audio_mask" in names:
        cached_extra.update(audio=True, mels=preprocess.mels)
        raw_extra.update(audio=preprocess.audio, mels=preprocess.mels)
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
            items = CachedVideoDataset(annotations, frames_cache, preprocess.frames.k, "test", transform,
                                       **cached_extra)
        else:
            items = RawVideoDataset(annotations, preprocess.frames, "test", transform, max_failures=max(10, videos),
                                    **raw_extra)
        picks = sorted(set(np.linspace(0, len(items) - 1, min(videos, len(items))).round().astype(int).tolist()))
        batches = []
        for index in picks:
            item = items[index]
            missing = [name for name in (INPUT_NAME, *names) if name not in item]
            if missing:
                raise ExportError(source, f"the calibration data gives no {', '.join(missing)}, which the model "
                                          "takes: static int8 cannot be calibrated; int8-dynamic needs no data")
            batches.append({name: torch.as_tensor(item[name]).unsqueeze(0).numpy() for name in (INPUT_NAME, *names)})
        return batches
    except ExportError:
        raise
    except ShortvidError as error:
        raise ExportError(source, f"no training data found for calibration: {error}") from error


def _feeds(batch: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One calibration batch as ONNX Runtime feeds: a bare array is the frames; ``audio_mask`` stays bool."""
    batch = {INPUT_NAME: batch} if isinstance(batch, np.ndarray) else dict(batch)
    return {name: np.ascontiguousarray(value, dtype=np.bool_ if name == "audio_mask" else np.float32)
            for name, value in batch.items()}


def _reader(batches: Iterable[np.ndarray | Mapping[str, np.ndarray]]):
    """An ``onnxruntime.quantization.CalibrationDataReader`` over prepared batches."""
    from onnxruntime.quantization import CalibrationDataReader

    class Frames(CalibrationDataReader):
        def __init__(self, batches: list[dict[str, np.ndarray]]):
            self.batches = batches
            self.rewind()

        def get_next(self) -> dict | None:
            return next(self._iterator, None)

        def rewind(self) -> None:
            self._iterator = iter(self.batches)

    return Frames([_feeds(batch) for batch in batches])


def quantize_onnx(model_onnx: str | os.PathLike, out: str | os.PathLike, mode: str = "static",
                  calibration: Iterable[np.ndarray | Mapping[str, np.ndarray]] | None = None, *,
                  per_channel: bool = True, reduce_range: bool = True, op_types: Iterable[str] | None = None,
                  source: str | None = None) -> Path:
    """Write an int8 version of the fp32 ONNX file ``model_onnx`` to ``out``.

    ``mode="static"``: QDQ, uint8 activations calibrated (min/max) on ``calibration`` (model inputs: float32
    ``[batch, frames, 3, H, W]`` frames, or dicts of every graph input by name for a graph with motion or
    sound), int8 weights (per channel when ``per_channel``).
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
    extra = graph_inputs(model_onnx)
    reader = None
    if mode == "static":
        reader = _reader(calibration or ())
        if not reader.batches:
            raise ExportError(source, "static quantisation needs calibration frames, and none were given")
        needed = (INPUT_NAME, *extra)
        lacking = sorted({name for batch in reader.batches for name in needed if name not in batch})
        if lacking:
            raise ExportError(source, f"static quantisation calibrates every graph input ({', '.join(needed)}) and "
                                      f"the calibration batches lack {', '.join(lacking)}; int8-dynamic needs none")
    work = Path(tempfile.mkdtemp(prefix="shortvid-quantize-"))
    try:
        with atomic_path(out, suffix=".onnx") as temporary:
            prepared = work / "prepared.onnx"
            # The audio axis is dynamic in a graph that hears: the symbolic shapes of a strided conv branch and
            # its pooled shortcut are written differently (ceil(n/2 - 1/2) + 1, floor(n/2) + 1) though equal
            # for whole n, and only merge when allowed to.
            quant_pre_process(str(model_onnx), str(prepared), auto_merge=bool(extra))
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
    training videos (``calibration_inputs``; ``dataset``/``split`` override the run's own)."""
    if mode not in MODES:
        raise ValueError(f"unknown quantisation mode {mode!r} ({', '.join(MODES)})")
    fp32 = ensure_onnx(run_dir, checkpoint, opset=opset)
    batches = None
    if mode == "static":
        batches = calibration_inputs(run_dir, videos, dataset=dataset, split=split, names=graph_inputs(fp32))
    return quantize_onnx(fp32, out or quantized_path(run_dir, mode, checkpoint), mode, batches, source=str(run_dir))
