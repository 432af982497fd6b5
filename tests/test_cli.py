"""The `shortvid` command, run as a user runs it: a real process, real files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from shortvid.cli import build_parser, main
from shortvid.cli.options import inference_options
from shortvid.data.annotations import load_dataset
from shortvid.data.cache import FrameCache
from shortvid.demo import run_demo
from shortvid.export import DEFAULT_OPSET
from shortvid.infer.backends import ALL_PRECISIONS, BACKENDS
from shortvid.infer.classifier import Classifier
from shortvid.models import FUSION_RULES
from shortvid.synth.corpus import PRESETS


def shortvid(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "shortvid.cli", *map(str, args)], capture_output=True, text=True,
                            timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"shortvid {' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.mark.parametrize("command", [[], ["probe"], ["synth"], ["extract"], ["demo"]])
def test_every_command_has_help(command):
    result = shortvid(*command, "--help")
    assert "usage: shortvid" in result.stdout


def test_probe_prints_a_json_line_per_video_and_goes_on_after_a_broken_one(small_videos, tmp_path):
    good, text, missing = small_videos["v0.mp4"], small_videos["text.mp4"], small_videos["missing.mp4"]
    result = shortvid("probe", good, text, missing, good, "--k", "3", "--save", tmp_path / "frames")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 4
    first = lines[0]
    assert first["path"] == str(good) and first["keyframes"] == 4
    assert [f["time"] for f in first["frames"]] == [1.0, 2.0, 3.0]
    assert all(f["keyframe"] for f in first["frames"]) and first["decode_ms"] > 0
    assert lines[1] == {"path": str(text),
                        "error": {"type": "InvalidVideoError", "message": lines[1]["error"]["message"]}}
    assert str(text) in lines[1]["error"]["message"]
    assert lines[2]["error"]["type"] == "VideoNotFoundError"
    assert lines[3]["keyframes"] == 4
    assert len(list((tmp_path / "frames").glob("v0_*.jpg"))) == 3


def test_probe_uniform_sampler(small_videos):
    line = json.loads(shortvid("probe", small_videos["v0.mp4"], "--sampler", "uniform", "--k", "2").stdout)
    assert [f["keyframe"] for f in line["frames"]] == [False, False]


def test_probe_fails_when_every_video_fails(small_videos):
    assert shortvid("probe", small_videos["text.mp4"], check=False).returncode == 1


@pytest.mark.slow
def test_synth_then_extract_puts_every_video_in_the_manifest(tiny_corpus, tmp_path):
    names = [line.split(",")[0] for split in ("train", "val")
             for line in (tiny_corpus / f"{split}.txt").read_text().splitlines()]
    result = shortvid("extract", tiny_corpus, "--out", tmp_path / "cache", "--k", "3", "--size", "64",
                      "--workers", "2", "--quiet")
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["total"] == len(names) and summary["extracted"] == len(names) and summary["failed"] == 0
    cache = FrameCache(tmp_path / "cache")
    assert set(cache.entries) == set(names)
    assert cache.read(names[0]).frames.shape[0] == 3
    again = json.loads(shortvid("extract", tiny_corpus, "--out", tmp_path / "cache", "--k", "3", "--size", "64",
                                "--quiet").stdout.splitlines()[-1])
    assert again["skipped"] == len(names) and again["extracted"] == 0
    assert not cache.spec.skip_loop_filter
    shortvid("extract", tiny_corpus, "--out", tmp_path / "fast", "--k", "3", "--size", "64", "--skip-loop-filter",
             "--quiet", "--split", "val")
    assert FrameCache(tmp_path / "fast").spec.skip_loop_filter


@pytest.mark.parametrize("size, parsed", [("20x30", (20, 30)), ("none", None), ("48", 48), ("NONE", None)])
def test_size_parses_short_side_height_by_width_or_none(size, parsed):
    assert build_parser().parse_args(["probe", "v.mp4", "--size", size]).size == parsed


@pytest.mark.parametrize("size, width_height", [("20x30", (30, 20)), ("none", (64, 112))])
def test_probe_reads_frames_at_the_size_asked(size, width_height, small_videos, tmp_path, capsys):
    assert main(["probe", str(small_videos["v0.mp4"]), "--size", size, "--save", str(tmp_path)]) == 0
    saved = json.loads(capsys.readouterr().out)["saved"]
    assert len(saved) == 3 and all(Image.open(path).size == width_height for path in saved)


CHOICES = [
    (["predict", "RUN", "v.mp4"], "--backend", BACKENDS),
    (["predict", "RUN", "v.mp4"], "--precision", ALL_PRECISIONS),
    (["evaluate", "RUN", "--data", "DATA"], "--precision", ALL_PRECISIONS),
    (["serve", "RUN"], "--precision", ALL_PRECISIONS),
    (["judge", "RUN", "--videos", "V", "--labels", "L"], "--backend", BACKENDS),
    (["judge", "RUN", "--videos", "V", "--labels", "L"], "--precision", ALL_PRECISIONS),
    (["fuse", "GENERAL", "SPECIALIST", "--out", "OUT"], "--rule", ("best", *FUSION_RULES)),
    (["synth", "OUT"], "--preset", tuple(PRESETS)),
    (["ablate"], "--preset", tuple(PRESETS)),
    (["demo"], "--preset", tuple(PRESETS)),
]


@pytest.mark.parametrize("command, option, values", CHOICES,
                         ids=lambda item: " ".join(item) if isinstance(item, list) else None)
def test_choices_are_the_tables_they_come_from(command, option, values, capsys):
    parser = build_parser()
    dest = option.lstrip("-")
    assert [getattr(parser.parse_args([*command, option, value]), dest) for value in values] == list(values)
    with pytest.raises(SystemExit):
        parser.parse_args([*command, option, "nonsense"])
    assert "{" + ",".join(values) + "}" in capsys.readouterr().err  # the usage line lists exactly these


def test_export_opset_default_is_the_exporters():
    assert build_parser().parse_args(["export", "RUN"]).opset == DEFAULT_OPSET


# Every command that classifies, with its required arguments.
CLASSIFYING = [["predict", "RUN", "v.mp4"], ["serve", "RUN"], ["evaluate", "RUN", "--data", "DATA"],
               ["analyze", "RUN", "--data", "DATA", "--out", "OUT"], ["judge", "RUN", "--videos", "V", "--labels", "L"],
               ["hardmine", "RUN", "--data", "DATA"], ["fuse", "GENERAL", "SPECIALIST", "--out", "OUT"]]


@pytest.mark.parametrize("command", CLASSIFYING, ids=lambda c: c[0])
def test_the_default_backend_is_auto(command, monkeypatch):
    monkeypatch.delenv("SHORTVID_BACKEND", raising=False)
    monkeypatch.delenv("SHORTVID_PRECISION", raising=False)
    options = inference_options(build_parser().parse_args(command))
    assert (options["backend"], options["precision"]) == ("auto", "fp32")


@pytest.mark.parametrize("command", CLASSIFYING, ids=lambda c: c[0])
def test_every_command_that_classifies_takes_the_same_inference_options(command):
    args = build_parser().parse_args([*command, "--backend", "onnx", "--precision", "int8", "--max-width", "640",
                                      "--max-height", "480", "--max-pixels", "307200", "--max-aspect", "3"])
    options = inference_options(args)
    assert (options["backend"], options["precision"]) == ("onnx", "int8")
    limits = options["limits"]
    assert (limits.max_width, limits.max_height, limits.max_pixels, limits.max_aspect) == (640, 480, 307200, 3.0)


@pytest.mark.parametrize("command", CLASSIFYING, ids=lambda c: c[0])
def test_a_backend_pair_that_does_not_exist_is_refused_before_anything_runs(command, capsys):
    assert main([*command, "--backend", "torch", "--precision", "int8"]) == 2
    assert "precision 'int8' is not available on the 'torch' backend" in capsys.readouterr().err


def test_judge_takes_backend_and_precision_from_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("SHORTVID_BACKEND", "onnx")
    monkeypatch.setenv("SHORTVID_PRECISION", "bf16")
    assert main(["judge", "RUN", "--videos", "V", "--labels", "L"]) == 2
    assert "precision 'bf16' is not available on the 'onnx' backend" in capsys.readouterr().err


@pytest.mark.slow
def test_run_demo_at_its_smallest(tmp_path, capsys):
    summary = run_demo(tmp_path / "demo", preset="tiny", workers=2,
                       overrides=("optim.epochs=1", "progress=false", "data.resize=72", "data.input_size=64"))
    printed = capsys.readouterr().out
    assert all(f"[{step}/5]" in printed for step in range(1, 6)) and "done in" in printed
    assert 0.0 <= summary["mean_jaccard"] <= 1.0 and 0.0 <= summary["chance"] <= 1.0
    val = load_dataset(summary["data"], "val")
    assert summary["num_videos"] == len(val)
    assert set(summary["timing_ms"]) >= {"decode", "preprocess", "model", "total"}
    assert summary["seconds"]["total"] >= summary["seconds"]["train"] > 0
    names = {sample.name for sample in val.samples}
    held_out = summary["predictions"]
    assert held_out and all(p["name"] in names and Path(p["path"]).is_file() for p in held_out)
    served = Classifier.load(summary["run"], device="cpu").predict(held_out[0]["path"])
    assert served.labels and [label.name for label in served.labels] == [p["name"] for p in held_out[0]["labels"]]


@pytest.mark.parametrize("mean_jaccard, status", [(0.5, 0), (0.2, 1)])
def test_demo_exits_1_unless_it_beats_chance(mean_jaccard, status, monkeypatch):
    monkeypatch.setattr("shortvid.demo.run_demo", lambda *args, **kwargs: {"mean_jaccard": mean_jaccard, "chance": 0.3})
    assert main(["demo", "--out", "unused"]) == status
