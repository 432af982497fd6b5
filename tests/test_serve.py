"""A trained run in use: Classifier, `shortvid evaluate`, `shortvid predict`, the judge kit's API."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from shortvid.data.annotations import load_dataset
from shortvid.errors import DecodeError
from shortvid.infer.classifier import Classifier
from shortvid.judge import ServerApi, judge


def shortvid(*args):
    return subprocess.run([sys.executable, "-m", "shortvid.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_classifier_predicts_labels_with_timings(trained_run, tiny_corpus):
    classifier = Classifier.load(trained_run)
    sample = load_dataset(tiny_corpus, "val").samples[0]
    prediction = classifier.predict(sample.path)
    assert 1 <= len(prediction.labels) <= 3
    assert all(0 <= label.id < 6 and label.name == classifier.labels.name(label.id) for label in prediction.labels)
    assert [label.score for label in prediction.top] == sorted((label.score for label in prediction.top), reverse=True)
    assert set(prediction.timings) == {"decode", "preprocess", "model", "total"}
    assert prediction.timings["total"] >= prediction.timings["model"] > 0
    by_bytes = classifier.predict(sample.path.read_bytes())
    assert by_bytes.ids == prediction.ids
    with pytest.raises(DecodeError):
        classifier.predict(b"not a video")


@pytest.mark.slow
def test_evaluate_writes_the_competition_metrics(trained_run, tiny_corpus, tmp_path):
    run = shutil.copytree(trained_run, tmp_path / "run")  # evaluate writes into the run
    result = shortvid("evaluate", run, "--data", tiny_corpus, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "mean Jaccard" in result.stdout
    report = json.loads((run / "metrics.json").read_text())
    assert report["num_videos"] == len(load_dataset(tiny_corpus, "val"))
    for key in ("mean_jaccard", "top1_hit", "top5_hit", "mAP", "GAP@20", "per_class_ap", "confusions", "policy"):
        assert key in report
    assert set(report["timing_ms"]) == {"decode", "preprocess", "model", "total"}
    assert report["timing_ms"]["total"]["median"] > 0 and report["failed"] == 0


@pytest.mark.slow
def test_predict_cli_goes_on_after_a_broken_file(trained_run, tiny_corpus, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    videos = tiny_corpus / "videos"
    result = shortvid("predict", trained_run, broken, videos)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["path"] == str(broken) and lines[0]["error"]["type"] == "InvalidVideoError"
    assert len(lines) == 1 + len(list(videos.glob("*.mp4")))
    assert all(line["labels"] for line in lines[1:])
    assert "1 failed" in result.stderr


@pytest.mark.slow
def test_judge_api_and_protocol(trained_run, tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("SHORTVID_RUN", str(trained_run))
    api = ServerApi(0)
    val = load_dataset(tiny_corpus, "val").samples
    answer = api.handle(str(val[0].path))
    assert isinstance(answer, list) and answer and all(isinstance(i, int) for i in answer)
    assert api.handle(str(tmp_path / "missing.mp4")) == []

    listing = tmp_path / "videos.txt"
    listing.write_text("".join(f"{s.path}\n" for s in val))
    report = judge(trained_run, listing, tiny_corpus / "val.txt", passes=3)
    assert report["videos"] == report["scored"] == len(val)
    median_pass = sorted(report["pass_ms"])[1]
    assert len(report["pass_ms"]) == 3 and report["ms_per_video"] == pytest.approx(median_pass, abs=0.01)
    assert 0.0 <= report["accuracy"] <= 1.0
    assert report["passes_gates"] == (report["ms_per_video"] <= report["time_gate_ms"]
                                      and report["accuracy"] >= report["accuracy_gate"])
    cli = shortvid("judge", trained_run, "--videos", listing, "--labels", tiny_corpus / "val.txt", "--passes", "3")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["videos"] == len(val)


@pytest.mark.slow
def test_adaptive_classifier_uses_only_the_keyframes_a_video_has(trained_run, tiny_corpus, tmp_path):
    fixed, adaptive = Classifier.load(trained_run), Classifier.load(trained_run, adaptive=True)
    samples = load_dataset(tiny_corpus, "val").samples + load_dataset(tiny_corpus, "train").samples
    few = [s for s in samples if fixed.read(s.path).info.keyframes < 3]
    assert few, "the tiny corpus has videos with fewer than 3 keyframes"
    for sample in few[:3]:
        prediction = adaptive.predict(sample.path)
        assert len(prediction.frames) == prediction.keyframes < 3
        assert len(fixed.predict(sample.path).frames) == 3
    run = shutil.copytree(trained_run, tmp_path / "run")  # evaluate writes into the run
    result = shortvid("evaluate", run, "--data", tiny_corpus, "--adaptive", "--quiet", "--out", run / "adaptive.json")
    assert result.returncode == 0, result.stderr
    report = json.loads((run / "adaptive.json").read_text())
    assert report["adaptive"] is True and sum(report["frames_per_video"].values()) == report["num_videos"]
    by_keyframes = report["by_keyframes"]
    assert sum(group["videos"] for group in by_keyframes.values()) == report["num_videos"]
    overall = sum(group["videos"] * group["mean_jaccard"] for group in by_keyframes.values()) / report["num_videos"]
    assert overall == pytest.approx(report["mean_jaccard"])
    assert {int(n) for n in by_keyframes if int(n) < 3} == {int(n) for n in report["frames_per_video"] if int(n) < 3}


def test_a_batch_scores_each_video_as_alone(trained_run, tiny_corpus):
    from shortvid.data.annotations import load_dataset as load

    for adaptive in (False, True):
        classifier = Classifier.load(trained_run, device="cpu", adaptive=adaptive)
        clips = [classifier.read(s.path) for s in load(tiny_corpus, "val").samples[:6]]
        if adaptive:
            assert len({len(c.frames) for c in clips}) > 1 or any(len(c.frames) < 3 for c in clips)
        together, timings = classifier.scores_many(clips)
        alone = np.stack([classifier.scores(clip)[0] for clip in clips])
        assert together.shape == alone.shape and np.allclose(together, alone, atol=1e-5)
        assert timings["model"] > 0
