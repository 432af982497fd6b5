"""ONNX export (`shortvid export`) and ONNX Runtime as the serving backend (`backend="onnx"`, and
`backend="auto"`, the default, which picks it on the CPU)."""

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from shortvid.cli import main
from shortvid.data.annotations import load_dataset
from shortvid.data.labels import LabelMap
from shortvid.errors import ShortvidError
from shortvid.evaluate.runner import evaluate_run
from shortvid.export import ExportError, export_model, export_run
from shortvid.extras import MissingExtraError
from shortvid.infer.classifier import Classifier
from shortvid.judge import ServerApi
from shortvid.models import create_model
from shortvid.run import RunDir

ATOL = 1e-4


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """The trained run without the ONNX files other tests' loads made, copied so exports do not touch
    the session fixture."""
    return shutil.copytree(trained_run, tmp_path / "run", ignore=shutil.ignore_patterns("*.onnx"))


def _write_run(model, root, reference_run, num_classes):
    """``model`` as a servable run, with the trained run's preprocessing and ``num_classes`` labels."""
    preprocess = RunDir(reference_run).preprocess()
    labels = LabelMap(tuple(f"class{i}" for i in range(num_classes)))
    RunDir(root).write_inference(model.eval(), labels, preprocess)
    return root


@pytest.fixture
def nextvlad_run(trained_run, tmp_path):
    torch.manual_seed(0)
    model = create_model("tsn_tiny", num_classes=5, aggregator="nextvlad")
    return _write_run(model, tmp_path / "nextvlad", trained_run, 5)


def _parity(run, path):
    """Largest |ORT - PyTorch| over batch 1, 4 and frame counts 1, 3, 8."""
    model = RunDir(run).load_model()
    size = RunDir(run).preprocess().input_size
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["frames"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    generator = torch.Generator().manual_seed(1)
    worst = 0.0
    for batch in (1, 4):
        for frames in (1, 3, 8):
            x = torch.randn(batch, frames, 3, size, size, generator=generator)
            with torch.inference_mode():
                expected = model(x).numpy()
            (got,) = session.run(["logits"], {"frames": x.numpy()})
            assert got.shape == (batch, model.num_classes)
            worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def _fallback_warnings(caplog) -> list[str]:
    """The messages of ``auto`` falling back to PyTorch."""
    return [r.getMessage() for r in caplog.records if "ONNX Runtime not used" in r.getMessage()]


@pytest.mark.parametrize("which", ["trained", "nextvlad"])
def test_onnx_logits_match_pytorch(which, run_copy, nextvlad_run):
    run = run_copy if which == "trained" else nextvlad_run
    path = export_run(run)
    assert path == run / "model.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    assert _parity(run, path) < ATOL


@pytest.mark.parametrize("rule", ["gate", "mean", "geometric"])
def test_fused_run_exports(rule, trained_run, tmp_path):
    torch.manual_seed(0)
    general = create_model("tsn_tiny", num_classes=5)
    specialist = create_model("tsn_tiny", num_classes=2)
    config = {"general": {"model": general.config, "scores": "sigmoid"},
              "specialists": [{"model": specialist.config, "scores": "softmax", "classes": [3, 1],
                               "scale": [1.1, 0.9, 1.0], "shift": [0.1, 0.0, -0.1]}]}
    fused = create_model("fused", num_classes=5, **config, rule=rule)
    run = _write_run(fused, tmp_path / "fused", trained_run, 5)
    assert _parity(run, export_run(run)) < ATOL


def test_cli_export_writes_a_checked_file(run_copy, tmp_path, capsys):
    out = tmp_path / "exported" / "tiny.onnx"
    assert main(["export", str(run_copy), "--format", "onnx", "--out", str(out), "--opset", "17"]) == 0
    assert str(out) in capsys.readouterr().out
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    frames = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in frames][:2] == ["batch", "frames"]
    assert not (run_copy / "model.onnx").exists()


def test_by_frame_count_runs_are_refused(trained_run, tmp_path, capsys, caplog):
    member = create_model("tsn_tiny", num_classes=5).config
    switch = create_model("by_frame_count", num_classes=5, members={"1": member, "3": member})
    run = _write_run(switch, tmp_path / "adaptive", trained_run, 5)
    with pytest.raises(ExportError, match="by_frame_count") as caught:
        export_run(run)
    assert isinstance(caught.value, ShortvidError) and caught.value.source == str(run)
    with pytest.raises(ExportError):
        Classifier.load(run, device="cpu", backend="onnx")
    assert main(["export", str(run)]) == 2
    assert "by_frame_count" in capsys.readouterr().err
    assert not (run / "model.onnx").exists()
    assert Classifier.load(run, device="cpu").backend.name == "torch"  # auto: torch, with the cause logged
    (warning,) = _fallback_warnings(caplog)
    assert str(run) in warning and "by_frame_count" in warning


@pytest.mark.parametrize("adaptive", [False, True])
def test_the_default_backend_is_onnx_and_predicts_as_torch(run_copy, tiny_corpus, adaptive, caplog):
    assert not (run_copy / "model.onnx").exists()
    on_torch = Classifier.load(run_copy, device="cpu", adaptive=adaptive, backend="torch")
    on_onnx = Classifier.load(run_copy, device="cpu", adaptive=adaptive)  # auto
    assert (run_copy / "model.onnx").exists()  # exported on first use
    assert on_onnx.backend.name == "onnx" and on_onnx.backend.providers[-1] == "CPUExecutionProvider"
    assert on_onnx.model is None and on_torch.backend.name == "torch" and not _fallback_warnings(caplog)
    samples = load_dataset(tiny_corpus, "val").samples[:4]
    clips = []
    for sample in samples:
        expected, got = on_torch.predict(sample.path), on_onnx.predict(sample.path)
        assert got.ids == expected.ids
        assert [label.id for label in got.top] == [label.id for label in expected.top]
        assert np.allclose([label.score for label in got.top], [label.score for label in expected.top], atol=ATOL)
        clips.append(on_onnx.read(sample.path))
    # a padded batch too: videos with fewer frames than the longest
    clips += [dataclasses.replace(clips[0], frames=clips[0].frames[:1], times=clips[0].times[:1],
                                  keyframe=clips[0].keyframe[:1]),
              dataclasses.replace(clips[1], frames=clips[1].frames[:2], times=clips[1].times[:2],
                                  keyframe=clips[1].keyframe[:2])]
    many_torch, _ = on_torch.scores_many(clips)
    many_onnx, _ = on_onnx.scores_many(clips)
    assert np.abs(many_torch - many_onnx).max() < ATOL
    single = np.stack([on_onnx.scores(clip)[0] for clip in clips])
    assert np.abs(single - many_onnx).max() < ATOL


def test_onnx_backend_pads_by_frame_count(run_copy):
    """A masked batch (videos of 1, 3 and 2 frames) gives the masked PyTorch model's logits."""
    classifier = Classifier.load(run_copy, device="cpu", backend="onnx")
    model = RunDir(run_copy).load_model()
    size = classifier.preprocess.input_size
    frames = torch.randn(3, 3, 3, size, size, generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[1, 0, 0], [1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    with torch.inference_mode():
        expected = model(frames, mask)
    assert (classifier.backend(frames, mask) - expected).abs().max() < ATOL


def test_onnx_is_reexported_when_the_checkpoint_is_newer(run_copy):
    path = export_run(run_copy)
    stamp = RunDir(run_copy).best.stat().st_mtime - 10  # older than the checkpoint
    os.utime(path, (stamp, stamp))
    Classifier.load(run_copy, device="cpu", backend="onnx")
    assert path.stat().st_mtime > stamp


def _spins(classifier: Classifier) -> str:
    options = classifier.backend.session.get_session_options()
    return options.get_session_config_entry("session.intra_op.allow_spinning")


def test_onnx_threads_spin_only_for_callers_that_run_one_video_at_a_time(run_copy, monkeypatch):
    assert _spins(Classifier.load(run_copy, device="cpu", backend="onnx")) == "0"  # service, classify_many
    assert _spins(Classifier.load(run_copy, device="cpu", backend="onnx", spin=True)) == "1"
    if not torch.cuda.is_available():
        monkeypatch.delenv("SHORTVID_BACKEND", raising=False)
        assert _spins(ServerApi(run_dir=str(run_copy)).classifier) == "1"  # the kit: one at a time


def test_evaluate_and_judge_default_to_onnx(run_copy, tiny_corpus, tmp_path, monkeypatch):
    on_torch = evaluate_run(run_copy, tiny_corpus, "val", device="cpu", limit=8, out=tmp_path / "t.json",
                            progress=False, backend="torch")
    on_onnx = evaluate_run(run_copy, tiny_corpus, "val", device="cpu", limit=8, out=tmp_path / "o.json",
                           progress=False)
    assert on_onnx["backend"] == "onnx" and on_torch["backend"] == "torch"  # what ran, not "auto"
    assert on_onnx["mean_jaccard"] == pytest.approx(on_torch["mean_jaccard"], abs=1e-9)
    monkeypatch.delenv("SHORTVID_BACKEND", raising=False)
    monkeypatch.delenv("SHORTVID_PRECISION", raising=False)
    api = ServerApi(run_dir=str(run_copy))  # the kit's call: no arguments, no environment
    assert api.classifier.backend.name == ("torch" if torch.cuda.is_available() else "onnx")
    sample = load_dataset(tiny_corpus, "val").samples[0]
    reference = Classifier.load(run_copy, device="cpu", backend="torch")
    assert api.handle(str(sample.path)) == reference.predict(sample.path).ids
    monkeypatch.setenv("SHORTVID_BACKEND", "torch")
    assert ServerApi(run_dir=str(run_copy)).classifier.backend.name == "torch"


def test_auto_falls_back_to_torch_without_onnxruntime(run_copy, tiny_corpus, monkeypatch, caplog):
    expected = Classifier.load(run_copy, device="cpu", backend="torch")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # not importable
    with caplog.at_level(logging.WARNING, logger="shortvid"):
        classifier = Classifier.load(run_copy, device="cpu")
    assert classifier.backend.name == "torch" and classifier.model is not None
    (warning,) = _fallback_warnings(caplog)
    assert str(run_copy) in warning and "onnxruntime not installed" in warning
    assert "pip install 'shortvid[onnx]'" in warning and "running the PyTorch model" in warning
    assert not (run_copy / "model.onnx").exists()  # no export tried
    video = load_dataset(tiny_corpus, "val").samples[0].path
    assert classifier.predict(video).ids == expected.predict(video).ids
    with pytest.raises(MissingExtraError):
        Classifier.load(run_copy, device="cpu", backend="onnx")  # asked for by name: an error
    with pytest.raises(MissingExtraError):
        Classifier.load(run_copy, device="cpu", precision="int8")  # only ONNX Runtime runs int8


# Root writes anywhere: a child that must meet a read-only folder as root first drops the capabilities
# that let it (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) from its effective and permitted sets, as
# `setpriv --bounding-set=-dac_override` would, with no tool needed; access(2) then answers as for
# any owner of a 0555 folder.
DROP_DAC = """
import ctypes, os
if os.geteuid() == 0:
    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
    class Sets(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]
    libc = ctypes.CDLL(None, use_errno=True)
    header, sets = Header(0x20080522, 0), (Sets * 2)()  # _LINUX_CAPABILITY_VERSION_3: two 32-bit words
    if libc.capget(ctypes.byref(header), sets):
        raise OSError(ctypes.get_errno(), "capget")
    dac = ~(1 << 1 | 1 << 2) & 0xFFFFFFFF  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    sets[0].effective &= dac
    sets[0].permitted &= dac
    if libc.capset(ctypes.byref(header), sets):
        raise OSError(ctypes.get_errno(), "capset")
"""

# Each child records when it asked for the model and each export it ran. Its exports wait SLOW
# seconds first, so both children ask while the file is still missing: the race is certain.
RACE_LOAD = """
import json, os, sys, time
import shortvid.export as export
from shortvid.infer.classifier import Classifier

run, video, barrier, slow = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
if os.access(run, os.W_OK):
    sys.exit("the run's folder is still writable")
record = {"exports": []}
export_run = export.export_run

def slow_export(*args, **kwargs):
    record["exports"].append(time.time())
    time.sleep(slow)
    return export_run(*args, **kwargs)

export.export_run = slow_export
open(os.path.join(barrier, str(os.getpid())), "w").close()
while len(os.listdir(barrier)) < 2:  # both children imported and ready: load at once
    time.sleep(0.005)
record["asked"] = time.time()
classifier = Classifier.load(run, device="cpu")
record.update(backend=classifier.backend.name, path=str(getattr(classifier.backend, "path", "")),
              ids=[int(i) for i in classifier.predict(video).ids])
print(json.dumps(record))
"""
SLOW = 1.0


@pytest.mark.slow
def test_auto_on_a_read_only_run_exports_into_the_user_cache(run_copy, tiny_corpus, tmp_path):
    """A run that cannot be written to (shipped read-only) still runs on ONNX Runtime: its model.onnx
    is made under $XDG_CACHE_HOME/shortvid/onnx/. Two processes load it at the same moment (a
    barrier), both asking while the file is missing: the lock (``export.locked``) makes one
    export and the other wait and use its file; without it both export (in a writable run they also
    write the same partial file, and one fails). As root, the children first drop the capabilities
    that bypass permissions (``DROP_DAC``)."""
    video = load_dataset(tiny_corpus, "val").samples[0].path
    expected = Classifier.load(run_copy, device="cpu", backend="torch").predict(video).ids
    folders = [run_copy, *(path for path in run_copy.rglob("*") if path.is_dir())]
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    for folder in folders:
        folder.chmod(0o555)
    try:
        loads = [subprocess.Popen([sys.executable, "-c", DROP_DAC + RACE_LOAD, str(run_copy), str(video), str(barrier),
                                   str(SLOW)],
                                  env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = [(load.communicate(timeout=300), load.returncode) for load in loads]
    finally:
        for folder in folders:
            folder.chmod(0o755)
    records = []
    for (out, err), code in results:
        assert code == 0 and "ONNX Runtime not used" not in err, err
        records.append(json.loads(out.splitlines()[-1]))
    exports = [started for record in records for started in record["exports"]]
    assert exports and max(record["asked"] for record in records) < min(exports) + SLOW, "the loads did not overlap"
    assert len(exports) == 1, f"{len(exports)} exports of one file"
    assert all(record["backend"] == "onnx" and record["ids"] == expected for record in records), records
    (path,) = {record["path"] for record in records}
    assert path.startswith(str(tmp_path / "cache" / "shortvid" / "onnx")) and path.endswith("model.onnx")
    assert not (run_copy / "model.onnx").exists()


def test_unknown_backend_is_an_error(run_copy):
    with pytest.raises(ValueError, match="unknown backend"):
        Classifier.load(run_copy, backend="tensorrt")


def test_export_leaves_the_model_in_eval_mode(tmp_path):
    model = create_model("tsn_tiny", num_classes=3).eval()
    path = export_model(model, tmp_path / "m.onnx", 32)
    assert not model.training and not any(m.training for m in model.modules())
    onnx.checker.check_model(str(path))


def test_cli_backend_option(run_copy, tiny_corpus, tmp_path, capsys):
    video = load_dataset(tiny_corpus, "val").samples[0].path
    assert main(["predict", str(run_copy), str(video), "--backend", "onnx"]) == 0
    assert (run_copy / "model.onnx").exists()
    assert main(["predict", str(run_copy), str(video), "--backend", "torch"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    on_onnx, on_torch = (json.loads(line) for line in lines)
    assert [label["id"] for label in on_onnx["labels"]] == [label["id"] for label in on_torch["labels"]]
    assert np.allclose([label["score"] for label in on_onnx["top5"]], [label["score"] for label in on_torch["top5"]],
                       atol=ATOL)
    out = tmp_path / "metrics.json"
    assert main(["evaluate", str(run_copy), "--data", str(tiny_corpus), "--limit", "3", "--quiet",
                 "--backend", "onnx", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["backend"] == "onnx"
