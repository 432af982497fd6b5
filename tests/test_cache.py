"""The frame cache: extraction once per video, failures recorded, resumable, exact reads."""

import json
import os
import signal
import time
from typing import NamedTuple

import numpy as np
import pytest

from shortvid.data.cache import ExtractJob, FrameCache, FrameCountError, extract, run_isolated
from shortvid.decode import FrameSpec, read_frames
from shortvid.errors import DatasetError

SPEC = FrameSpec(k=3, size=48)


def _items(videos):
    return [(name, path) for name, path in videos.items()]


def test_extract_records_every_video_and_reads_back_exact_pixels(small_videos, tmp_path):
    summary = extract(_items(small_videos), tmp_path / "cache", SPEC, fmt="raw", workers=2, progress=False)
    assert (summary.total, summary.extracted, summary.failed) == (5, 3, 2)
    assert summary.errors == {"InvalidVideoError": 1, "VideoNotFoundError": 1}
    cache = FrameCache(tmp_path / "cache")
    assert len(cache) == 3
    assert set(cache.failures) == {"text.mp4", "missing.mp4"}
    assert "text.mp4" in cache.failures["text.mp4"]["message"]
    for name in ("v0.mp4", "v1.mp4", "v2.mp4"):
        cached = cache.read(name)
        direct = read_frames(small_videos[name], SPEC)
        assert np.array_equal(cached.frames, direct.frames)  # same decode-and-resize path
        assert cached.times == pytest.approx(direct.times, abs=1e-4)
        assert cached.keyframe == direct.keyframe
    with pytest.raises(DatasetError, match="text.mp4"):
        cache.read("text.mp4")


def test_a_cache_records_the_decode_it_was_made_with(small_videos, tmp_path):
    spec = FrameSpec(k=3, size=48, skip_loop_filter=True)
    extract([("v0.mp4", small_videos["v0.mp4"])], tmp_path, spec, fmt="raw", workers=1, progress=False)
    cache = FrameCache(tmp_path)
    assert cache.spec.skip_loop_filter
    assert np.array_equal(cache.read("v0.mp4").frames, read_frames(small_videos["v0.mp4"], spec).frames)
    with pytest.raises(DatasetError):  # a cache made one way is not extended the other way
        extract([("v1.mp4", small_videos["v1.mp4"])], tmp_path, SPEC, workers=1, progress=False)


def test_jpeg_cache_is_close_to_the_decoder(small_videos, tmp_path):
    extract([("v0.mp4", small_videos["v0.mp4"])], tmp_path, SPEC, workers=1, progress=False)
    cached = FrameCache(tmp_path).read("v0.mp4")
    direct = read_frames(small_videos["v0.mp4"], SPEC)
    assert cached.frames.shape == direct.frames.shape
    assert np.abs(cached.frames.astype(int) - direct.frames).mean() < 8


def test_second_run_does_only_what_is_missing(small_videos, tmp_path):
    items = _items(small_videos)
    first = extract(items[:2], tmp_path, SPEC, workers=1, progress=False)
    assert first.extracted == 2
    second = extract(items, tmp_path, SPEC, workers=2, progress=False)
    assert (second.skipped, second.extracted, second.failed) == (2, 1, 2)
    third = extract(items, tmp_path, SPEC, workers=2, progress=False)
    assert (third.skipped, third.extracted) == (5, 0)
    retried = extract(items, tmp_path, SPEC, workers=2, retry_failed=True, progress=False)
    assert (retried.skipped, retried.failed) == (3, 2)
    cache = FrameCache(tmp_path)
    assert len(cache) == 3 and len(cache.failures) == 2
    assert len(list((tmp_path / "shards").iterdir())) == 2  # one shard per run that wrote frames


def test_a_torn_manifest_line_is_ignored_and_redone(small_videos, tmp_path):
    extract([("v0.mp4", small_videos["v0.mp4"])], tmp_path, SPEC, workers=1, progress=False)
    with open(tmp_path / "manifest.jsonl", "a") as manifest:
        manifest.write('{"name": "v1.mp4", "shard": "run-00')  # killed mid-line
    assert "v1.mp4" not in FrameCache(tmp_path)
    summary = extract([("v1.mp4", small_videos["v1.mp4"])], tmp_path, SPEC, workers=1, progress=False)
    assert summary.extracted == 1
    cache = FrameCache(tmp_path)
    assert "v1.mp4" in cache and cache.read("v1.mp4").frames.shape[0] == 3
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["name"] == "v1.mp4"


def test_a_cache_refuses_other_frame_settings(small_videos, tmp_path):
    extract([("v0.mp4", small_videos["v0.mp4"])], tmp_path, SPEC, workers=1, progress=False)
    with pytest.raises(DatasetError, match="another folder"):
        extract([("v0.mp4", small_videos["v0.mp4"])], tmp_path, FrameSpec(k=5, size=48), workers=1, progress=False)


def test_a_cache_made_before_resumes_and_an_hxw_size_compares_equal(small_videos, tmp_path):
    spec = FrameSpec(k=3, size=(48, 32))
    extract([("v0.mp4", small_videos["v0.mp4"])], tmp_path, spec, fmt="raw", workers=1, progress=False)
    # cache.json as the first caches wrote it: the five original options, the size as JSON's list
    frames = {"k": 3, "sampler": "keyframes", "size": [48, 32], "crop": None, "fill": "repeat"}
    stored = {"version": 1, "frames": frames, "format": "raw", "quality": 95}
    (tmp_path / "cache.json").write_text(json.dumps(stored))
    assert FrameCache(tmp_path).spec == spec
    summary = extract([("v1.mp4", small_videos["v1.mp4"])], tmp_path, spec, fmt="raw", workers=1, progress=False)
    assert summary.extracted == 1 and len(FrameCache(tmp_path)) == 2


def test_a_cache_gives_specs_of_at_most_its_frame_count(small_videos, tmp_path):
    extract([("v0.mp4", small_videos["v0.mp4"])], tmp_path, SPEC, workers=1, progress=False)
    cache = FrameCache(tmp_path)
    assert cache.spec_for(2) == FrameSpec(k=2, size=48) and cache.spec_for(3) == SPEC
    with pytest.raises(FrameCountError, match=f"{tmp_path}: holds 3 frames a video .*; 4 were asked for"):
        cache.spec_for(4)


def test_not_a_cache(tmp_path):
    with pytest.raises(DatasetError, match="not a frame cache"):
        FrameCache(tmp_path)


class _Job(NamedTuple):
    """A job of ``run_isolated``: its name and its file (here a number for the good ones)."""

    name: str
    path: object


def _crash_on_bad(job):
    """Kills its own process for the job named 'bad', like a decoder segfault would."""
    if job.name == "bad":
        os._exit(1)
    return {"name": job.name, "value": job.path * 2}


def _hang_on_bad(job):
    """Hangs for the job named 'bad', under an alarm like the one extraction workers set."""
    signal.alarm(1)
    if job.name == "bad":
        time.sleep(30)
    signal.alarm(0)
    return {"name": job.name, "value": job.path * 2}


@pytest.mark.slow
def test_a_hanging_file_is_ended_and_reported():
    jobs = [_Job("job0", 0), _Job("bad", "bad.mp4"), _Job("job1", 1), _Job("job2", 2)]
    started = time.monotonic()
    results = {r["name"]: r for r in run_isolated(_hang_on_bad, jobs, workers=2)}
    assert time.monotonic() - started < 20
    assert results["bad"]["error"]["type"] == "WorkerCrashed"
    assert [results[f"job{i}"]["value"] for i in range(3)] == [0, 2, 4]


@pytest.mark.slow
def test_a_crashing_file_is_reported_and_the_rest_goes_on():
    jobs = [_Job(f"job{i}", i) for i in range(12)]
    jobs.insert(5, _Job("bad", "bad.mp4"))
    results = list(run_isolated(_crash_on_bad, jobs, workers=2))
    assert len(results) == 13
    by_name = {r["name"]: r for r in results}
    assert by_name["bad"]["error"]["type"] == "WorkerCrashed"
    assert "bad.mp4" in by_name["bad"]["error"]["message"]
    assert all(by_name[f"job{i}"]["value"] == 2 * i for i in range(12))


def test_the_manifest_records_the_frame_rate_or_none(small_videos, monkeypatch):
    import dataclasses

    from shortvid.data import cache as cache_module

    job = ExtractJob("v0.mp4", str(small_videos["v0.mp4"]), SPEC, "raw", 90, 10.0)
    assert cache_module.extract_one(job)["fps"] == 10

    def rateless(*args, **kwargs):  # a stream whose headers give no frame rate
        clip = read_frames(*args, **kwargs)
        return dataclasses.replace(clip, info=dataclasses.replace(clip.info, fps=None))

    monkeypatch.setattr(cache_module, "read_frames", rateless)
    assert cache_module.extract_one(job)["fps"] is None
