"""Batch jobs on Ray (shortvid.distributed): a real local Ray for the module, which a job from another
process also joins by its address (the --address path). Predictions equal the local engine's, every
path gets one row (broken files and a worker that dies included), resume skips what is done but
retries crash rows, a block dropped after its retries still gives every path a row, and the cache Ray
fills is the local engine's cache."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from shortvid import distributed
from shortvid.cli import main
from shortvid.data.annotations import load_dataset
from shortvid.data.cache import FrameCache, extract
from shortvid.decode import FrameSpec
from shortvid.distributed import (
    DistributedError,
    PredictProcessor,
    RayOptions,
    actor_count,
    crashed_prediction,
    extract_ray,
    predict_local,
    predict_ray,
    run_isolated_on_ray,
)
from shortvid.errors import WorkerCrashed
from shortvid.infer.store import PredictionStore

OPTIONS = RayOptions(actors=1, block_size=4, max_retries=4)


@pytest.fixture(scope="module")
def local_ray():
    """One private Ray for the module: 2 CPUs, a small object store, no dashboard."""
    ray.init(num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def videos(tiny_corpus, small_videos) -> list[str]:
    """Up to ten corpus videos, then two broken files (text, missing)."""
    good = [str(sample.path) for sample in load_dataset(tiny_corpus, "val").samples[:10]]
    return good + [str(small_videos["text.mp4"]), str(small_videos["missing.mp4"])]


def rows_by_path(folder) -> dict[str, dict]:
    rows = list(PredictionStore(folder).rows())
    by_path = {row["path"]: row for row in rows}
    assert len(by_path) == len(rows), "a path got two rows"
    return by_path


@pytest.mark.slow
def test_ray_predictions_equal_the_local_engine_and_a_rerun_skips_what_is_done(local_ray, trained_run, videos,
                                                                             tmp_path):
    """Ray classifies five videos, then a rerun over all of them classifies the rest only; every row
    equals the local engine's."""
    local = predict_local(trained_run, videos, tmp_path / "local", device="cpu", batch_size=4)
    out = tmp_path / "ray"
    first = predict_ray(trained_run, videos[:5], out, options=OPTIONS, device="cpu", batch_size=4, fmt="jsonl")
    assert (first.done, first.skipped) == (5, 0)
    remote = predict_ray(trained_run, videos, out, options=OPTIONS, device="cpu", batch_size=4, fmt="jsonl")
    assert (remote.done, remote.skipped, remote.missing) == (len(videos) - 5, 5, 0) and local.missing == 0
    assert dict(remote.failed) == dict(local.failed) == {"InvalidVideoError": 1, "VideoNotFoundError": 1}
    mine, theirs = rows_by_path(tmp_path / "local"), rows_by_path(out)
    assert set(mine) == set(theirs) == set(videos)
    for path in videos:
        a, b = mine[path], theirs[path]
        assert (a["error"] or {}).get("type") == (b["error"] or {}).get("type")
        assert [label["id"] for label in a["labels"]] == [label["id"] for label in b["labels"]]
        assert [label["id"] for label in a["top5"]] == [label["id"] for label in b["top5"]]
        for x, y in zip(a["top5"], b["top5"], strict=True):
            assert abs(x["score"] - y["score"]) < 1e-5
    assert all(row["node"] for row in theirs.values() if not row["error"])


class DiesOnMarker(PredictProcessor):
    """Kills its worker process (as a decoder crash would) when it meets a path with 'marker' in it."""

    def many(self, items, node):
        if any("marker" in Path(item).name for item in items):
            os.abort()
        return super().many(items, node)


class DiesOnMarkerFactory:
    def __init__(self, run):
        self.run = run

    def __call__(self):
        return DiesOnMarker(self.run, device="cpu")


@pytest.mark.slow
def test_a_video_that_kills_its_worker_is_its_own_error_row(local_ray, trained_run, videos, tmp_path):
    marker = tmp_path / "marker.mp4"
    shutil.copyfile(videos[0], marker)
    good = videos[:-2]  # the last two are broken
    items = good[:3] + [str(marker)] + good[3:6]
    rows = {row["path"]: row for row in run_isolated_on_ray(items, DiesOnMarkerFactory(str(trained_run)), OPTIONS, 1)}
    assert set(rows) == set(items)
    crashed = rows[str(marker)]["error"]
    assert crashed["type"] == "WorkerCrashed" and str(marker) in crashed["message"]
    assert not [rows[item]["error"] for item in items
                if item != str(marker) and rows[item]["error"]]  # block-mates classified


@pytest.mark.slow
def test_a_dropped_block_gets_crash_rows_and_a_rerun_reclassifies_them(local_ray, trained_run, videos, tmp_path,
                                                                      monkeypatch):
    """Two videos that kill their worker in one block, with the fewest retries allowed: the first retry
    isolates one, the second dies on the other, so Ray drops the block and the driver reports all four
    paths, its healthy neighbours too; a rerun classifies them all again, one row each."""
    markers = [tmp_path / "marker-1.mp4", tmp_path / "marker-2.mp4"]
    for marker, video in zip(markers, videos[:2], strict=True):
        shutil.copyfile(video, marker)
    items = [str(marker) for marker in markers] + videos[2:4]  # one block of 4
    options = RayOptions(actors=1, block_size=4, max_retries=2)
    out = tmp_path / "out"
    monkeypatch.setattr(distributed, "PredictProcessor", DiesOnMarker)
    dropped = predict_ray(trained_run, items, out, options=options, device="cpu", fmt="jsonl")
    assert (dropped.done, dropped.missing, dict(dropped.failed)) == (4, 0, {"WorkerCrashed": 4})
    rows = rows_by_path(out)
    assert set(rows) == set(items)
    assert all("3 times on its block" in rows[item]["error"]["message"] for item in items)  # the driver's rows
    monkeypatch.undo()
    again = predict_ray(trained_run, items, out, options=options, device="cpu", fmt="jsonl")
    assert (again.done, again.retried, again.skipped, again.missing, dict(again.failed)) == (4, 4, 0, 0, {})
    rows = rows_by_path(out)
    assert set(rows) == set(items) and not [item for item in items if rows[item]["error"]]


def test_a_rerun_retries_crash_rows_and_retry_failed_every_error(trained_run, videos, tmp_path, capsys):
    """predict_local and `predict --out`: a crash row is classified again without being asked, other
    error rows with --retry-failed; the new row supersedes the old, so readers see one row per path."""
    out = tmp_path / "out"
    good, broken = videos[:2], videos[-2]  # a text file: InvalidVideoError
    predict_local(trained_run, [good[1], broken], out, fmt="jsonl", device="cpu")
    PredictionStore(out, "jsonl").write([crashed_prediction(good[0], "its worker process died on it")])
    again = predict_local(trained_run, [*good, broken], out, fmt="jsonl", device="cpu")
    assert (again.done, again.retried, again.skipped, again.missing) == (1, 1, 2, 0)
    rows = rows_by_path(out)
    assert rows[good[0]]["error"] is None and rows[broken]["error"]["type"] == "InvalidVideoError"
    code = main(["predict", str(trained_run), *good, broken, "--out", str(out), "--format", "jsonl", "--device", "cpu",
                 "--retry-failed"])
    assert code == 0
    assert "1 done (1 failed: InvalidVideoError 1), 2 skipped as already done, 1 retried" in capsys.readouterr().err
    assert len(rows_by_path(out)) == 3
    assert sum(len(part.read_text().splitlines()) for part in out.glob("part-*.jsonl")) == 5  # superseded, kept


def test_extract_retries_crash_records_on_rerun(small_videos, tmp_path):
    """The frame cache's resume agrees: a WorkerCrashed record is tried again, other failures are not."""
    named = [("v0", small_videos["v0.mp4"]), ("text", small_videos["text.mp4"])]
    spec = FrameSpec(k=3, size=48)

    def crashes(function, jobs):
        return [{"name": job.name, "path": job.path, "error": WorkerCrashed(job.path, "died").to_dict()}
                for job in jobs]

    def here(function, jobs):
        return map(function, jobs)

    first = extract(named, tmp_path, spec, progress=False, run_jobs=crashes)
    assert dict(first.errors) == {"WorkerCrashed": 2}
    second = extract(named, tmp_path, spec, progress=False, run_jobs=here)
    assert (second.extracted, second.skipped, dict(second.errors)) == (1, 0, {"InvalidVideoError": 1})
    third = extract(named, tmp_path, spec, progress=False, run_jobs=here)
    assert (third.extracted, third.failed, third.skipped) == (0, 0, 2)
    assert FrameCache(tmp_path).read("v0").frames.shape[0] == 3


def test_max_retries_below_two_is_refused(tmp_path, capsys):
    """-1 is Ray's "retry forever", and under 2 a video that kills its worker drops its whole block."""
    for retries in (-1, 0, 1):
        with pytest.raises(DistributedError, match="--max-retries: must be a whole number of at least 2"):
            RayOptions(max_retries=retries)
    assert RayOptions(max_retries=2).max_retries == 2
    code = main(["predict", str(tmp_path / "run"), "video.mp4", "--engine", "ray", "--out", str(tmp_path / "out"),
                 "--max-retries", "-1"])
    assert code == 2 and "--max-retries: must be a whole number of at least 2" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_ray_cache_is_the_local_cache(local_ray, tiny_corpus, tmp_path):
    samples = load_dataset(tiny_corpus, "val").samples[:6]
    named = [(sample.name, sample.path) for sample in samples] + [("broken", Path(tiny_corpus) / "train.txt")]
    spec = FrameSpec(k=3, size=48)
    local = extract(named, tmp_path / "local", spec, workers=1, progress=False)
    remote = extract_ray(named, tmp_path / "ray", spec, options=OPTIONS, progress=False)
    assert (remote.extracted, remote.failed) == (local.extracted, local.failed) == (6, 1)
    a, b = FrameCache(tmp_path / "local"), FrameCache(tmp_path / "ray")
    for sample in samples:
        x, y = a.read(sample.name), b.read(sample.name)
        assert np.array_equal(x.frames, y.frames) and x.times == y.times
    records = {}
    for folder in ("local", "ray"):
        for line in (tmp_path / folder / "manifest.jsonl").read_text().splitlines():
            record = json.loads(line)
            for placement in ("shard", "offsets", "decode_ms"):  # where and how fast, not what
                record.pop(placement, None)
            records.setdefault(record["name"], []).append(record)
    assert all(len(pair) == 2 and pair[0] == pair[1] for pair in records.values()), records


@pytest.mark.slow
def test_actors_that_cannot_fit_are_refused(local_ray):
    assert actor_count(RayOptions()) == 2
    with pytest.raises(DistributedError, match="do not fit: the cluster has 2 CPUs"):
        actor_count(RayOptions(actors=3))
    with pytest.raises(DistributedError, match="GPU"):
        actor_count(RayOptions(gpus_per_actor=1))


@pytest.mark.slow
def test_predict_joins_a_running_cluster_by_its_address(local_ray, trained_run, videos, tmp_path):
    """`shortvid predict --engine ray --address`, from another process, to the running Ray of the
    module (a cluster as `ray start --head` makes one: its head is at the GCS address the job joins)."""
    manifest = tmp_path / "videos.txt"
    manifest.write_text("\n".join(videos[:4] + videos[-2:]) + "\n")
    result = subprocess.run([sys.executable, "-m", "shortvid", "predict", str(trained_run), "--manifest", str(manifest),
                             "--engine", "ray", "--address", ray.get_runtime_context().gcs_address, "--actors", "1",
                             "--out", str(tmp_path / "out"), "--device", "cpu"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "6 videos: 6 done (2 failed" in result.stderr
    assert set(rows_by_path(tmp_path / "out")) == set(videos[:4] + videos[-2:])


