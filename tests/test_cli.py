"""The `shortvid` command, run as a user runs it: a real process, real files."""

import json
import subprocess
import sys

import pytest

from shortvid.data.cache import FrameCache


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
    assert lines[1] == {"path": str(text), "error": {"type": "InvalidVideoError", "message": lines[1]["error"]["message"]}}
    assert str(text) in lines[1]["error"]["message"]
    assert lines[2]["error"]["type"] == "VideoNotFoundError"
    assert lines[3]["keyframes"] == 4
    assert len(list((tmp_path / "frames").glob("v0_*.jpg"))) == 3


def test_probe_uniform_sampler(small_videos):
    line = json.loads(shortvid("probe", small_videos["v0.mp4"], "--sampler", "uniform", "--k", "2").stdout)
    assert [f["keyframe"] for f in line["frames"]] == [False, False]


def test_probe_fails_when_every_video_fails(small_videos):
    assert shortvid("probe", small_videos["text.mp4"], check=False).returncode == 1


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
