"""Int8 ONNX models (`shortvid export --quantize`, `precision="int8"|"int8-dynamic"`) and torch bf16."""

import json
import os
import shutil
from collections import Counter

import numpy as np
import onnx
import pytest
import torch

from shortvid.cli import main
from shortvid.data.annotations import load_dataset
from shortvid.data.labels import LabelMap
from shortvid.errors import ShortvidError
from shortvid.evaluate.runner import evaluate_run
from shortvid.export import ExportError, export_run
from shortvid.infer.backends import PRECISIONS
from shortvid.infer.classifier import Classifier
from shortvid.judge import ServerApi
from shortvid.models import create_model
from shortvid.quantize import (
    calibration_frames,
    ensure_quantized,
    quantize_onnx,
    quantize_run,
    quantized_path,
)
from shortvid.run import RunDir

QUANTIZED_OPS = {"QLinearConv", "QuantizeLinear", "DequantizeLinear", "ConvInteger", "MatMulInteger",
                 "DynamicQuantizeLinear", "QLinearMatMul"}
SCORE_TOLERANCE = 0.1  # sigmoid scores; int8 moved them by < 0.03 on the tiny run


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """The trained run without the ONNX files other tests' loads made, copied so the files written do
    not touch the session fixture."""
    return shutil.copytree(trained_run, tmp_path / "run", ignore=shutil.ignore_patterns("*.onnx"))


def _val_clips(classifier, corpus, n=6):
    return [classifier.read(sample.path) for sample in load_dataset(corpus, "val").samples[:n]]


def _close_to_fp32(reference, other, clips):
    """Largest score difference and the share of videos whose top-1 class is the same."""
    worst, same = 0.0, 0
    for clip in clips:
        expected, got = reference.scores(clip)[0], other.scores(clip)[0]
        worst = max(worst, float(np.abs(expected - got).max()))
        same += int(expected.argmax() == got.argmax())
    return worst, same / len(clips)


@pytest.mark.parametrize("mode, precision", [("static", "int8"), ("dynamic", "int8-dynamic")])
def test_int8_onnx_export(mode, precision, run_copy, tiny_corpus):
    path = quantize_run(run_copy, mode, videos=8)
    assert path == run_copy / f"model.int8-{mode}.onnx" == quantized_path(run_copy, mode)
    assert (run_copy / "model.onnx").exists()  # the fp32 file it was made from
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    ops = Counter(node.op_type for node in model.graph.node)
    assert QUANTIZED_OPS & set(ops), ops
    if mode == "static":
        assert ops["QuantizeLinear"] and ops["DequantizeLinear"]  # QDQ format
    else:
        assert ops["ConvInteger"] or ops["MatMulInteger"]
    assert [i.name for i in model.graph.input] == ["frames"] and [o.name for o in model.graph.output] == ["logits"]
    fp32 = Classifier.load(run_copy, device="cpu", backend="onnx")
    int8 = Classifier.load(run_copy, device="cpu", backend="onnx", precision=precision)
    assert int8.backend.path == path and int8.backend.precision == precision
    worst, agree = _close_to_fp32(fp32, int8, _val_clips(fp32, tiny_corpus))
    assert worst < SCORE_TOLERANCE and agree >= 5 / 6


def test_calibration_frames_are_the_evaluation_inputs(run_copy, tiny_corpus):
    preprocess = RunDir(run_copy).preprocess()
    cached = calibration_frames(run_copy, 5)  # from the run's frame cache (config.yaml data.cache)
    decoded = calibration_frames(run_copy, 5, dataset=tiny_corpus)  # no cache given: decoded
    assert len(cached) == len(decoded) == 5
    for frames in (*cached, *decoded):
        assert frames.dtype == np.float32
        assert frames.shape == (1, preprocess.frames.k, 3, preprocess.input_size, preprocess.input_size)
    # the same videos, the same frames (up to the cache's JPEG), normalised alike
    assert np.mean([np.abs(a - b).mean() for a, b in zip(cached, decoded, strict=True)]) < 0.1
    everything = calibration_frames(run_copy, 1000)
    assert len(everything) == len(load_dataset(tiny_corpus, "train").samples)


def test_no_training_data_is_a_typed_error(trained_run, tmp_path, capsys):
    run = tmp_path / "imported"  # a run not trained here: no config.yaml, so no training data
    torch.manual_seed(0)
    model = create_model("tsn_tiny", num_classes=5)
    RunDir(run).write_inference(model.eval(), LabelMap(tuple(f"c{i}" for i in range(5))),
                                RunDir(trained_run).preprocess())
    with pytest.raises(ExportError, match="no training data found for calibration") as caught:
        quantize_run(run, "static")
    assert isinstance(caught.value, ShortvidError) and caught.value.source == str(run)
    assert not quantized_path(run, "static").exists()
    assert main(["export", str(run), "--quantize", "static"]) == 2
    assert "no training data found" in capsys.readouterr().err
    # dynamic quantisation needs no data
    assert main(["export", str(run), "--quantize", "dynamic"]) == 0
    assert quantized_path(run, "dynamic").exists()
    with pytest.raises(ExportError, match="calibration frames"):
        quantize_onnx(export_run(run), tmp_path / "x.onnx", "static", calibration=[])


def test_bf16_torch_scores_close_to_fp32(run_copy, tiny_corpus):
    fp32 = Classifier.load(run_copy, device="cpu", backend="torch")
    bf16 = Classifier.load(run_copy, device="cpu", precision="bf16")  # auto: bf16 runs on torch only
    assert bf16.backend.name == "torch" and bf16.backend.precision == "bf16" and fp32.backend.precision == "fp32"
    clips = _val_clips(fp32, tiny_corpus, 4)
    worst, agree = _close_to_fp32(fp32, bf16, clips)
    assert worst < 0.02 and agree == 1.0
    scores, _ = bf16.scores_many(clips)
    assert scores.dtype == np.float32 and scores.shape == (4, len(bf16.labels))


def test_int8_is_remade_when_the_checkpoint_is_newer(run_copy):
    path = ensure_quantized(run_copy, "dynamic")
    assert path == quantized_path(run_copy, "dynamic")
    stamp = RunDir(run_copy).best.stat().st_mtime - 10  # older than the checkpoint
    os.utime(path, (stamp, stamp))
    Classifier.load(run_copy, device="cpu", backend="onnx", precision="int8-dynamic")
    assert path.stat().st_mtime > stamp
    fresh = path.stat().st_mtime
    Classifier.load(run_copy, device="cpu", backend="onnx", precision="int8-dynamic")
    assert path.stat().st_mtime == fresh  # up to date: not made again


@pytest.mark.parametrize("backend, precision", [("torch", "int8"), ("torch", "int8-dynamic"), ("onnx", "bf16"),
                                                ("onnx", "fp16"), ("torch", "fp16"), ("auto", "fp16")])
def test_bad_precision_is_a_clear_error(backend, precision, run_copy):
    unavailable = f"precision '{precision}' is not available on the '{backend}' backend"
    with pytest.raises(ValueError, match=unavailable) as caught:
        Classifier.load(run_copy, device="cpu", backend=backend, precision=precision)
    for name, valid in PRECISIONS.items():
        assert f"{name}: {', '.join(valid)}" in str(caught.value)
    assert not list(run_copy.glob("*.onnx"))


def test_cli_precision(run_copy, tiny_corpus, tmp_path, capsys, monkeypatch):
    video = load_dataset(tiny_corpus, "val").samples[0].path
    assert main(["predict", str(run_copy), str(video), "--backend", "onnx", "--precision", "int8"]) == 0
    assert (run_copy / "model.int8-static.onnx").exists()
    assert main(["predict", str(run_copy), str(video)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    on_int8, on_fp32 = (json.loads(line) for line in lines)
    assert on_int8["top5"][0]["id"] == on_fp32["top5"][0]["id"]
    assert abs(on_int8["top5"][0]["score"] - on_fp32["top5"][0]["score"]) < SCORE_TOLERANCE
    # a pair that does not exist: exit 2, the valid pairs named
    assert main(["predict", str(run_copy), str(video), "--backend", "onnx", "--precision", "bf16"]) == 2
    assert "onnx: fp32, int8, int8-dynamic" in capsys.readouterr().err
    # export --quantize with an explicit file and calibration size
    out = tmp_path / "q" / "static.onnx"
    assert main(["export", str(run_copy), "--quantize", "static", "--calibration-videos", "4", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    onnx.checker.check_model(str(out))
    # evaluate records the precision; the kit's ServerApi takes it from the environment
    metrics = tmp_path / "metrics.json"
    assert main(["evaluate", str(run_copy), "--data", str(tiny_corpus), "--limit", "3", "--quiet",
                 "--precision", "bf16", "--out", str(metrics)]) == 0
    report = json.loads(metrics.read_text())
    assert report["backend"] == "torch" and report["precision"] == "bf16"
    monkeypatch.setenv("SHORTVID_BACKEND", "onnx")
    monkeypatch.setenv("SHORTVID_PRECISION", "int8")
    api = ServerApi(run_dir=str(run_copy))
    assert api.classifier.backend.precision == "int8" and api.classifier.backend.path.name == "model.int8-static.onnx"
    assert api.handle(str(video))


def test_evaluate_run_on_int8(run_copy, tiny_corpus, tmp_path):
    fp32 = evaluate_run(run_copy, tiny_corpus, "val", device="cpu", out=tmp_path / "f.json", progress=False,
                        backend="onnx")
    int8 = evaluate_run(run_copy, tiny_corpus, "val", device="cpu", out=tmp_path / "i.json", progress=False,
                        backend="onnx", precision="int8")
    assert int8["precision"] == "int8" and fp32["precision"] == "fp32"
    assert int8["mean_jaccard"] == pytest.approx(fp32["mean_jaccard"], abs=0.35)
