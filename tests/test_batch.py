"""Pipelined batch prediction (`classify_many`, `shortvid predict --batch-size`) on a trained run."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from shortvid.data.annotations import load_dataset
from shortvid.errors import InferenceError, InvalidVideoError, VideoNotFoundError
from shortvid.infer.batch import PipelineStats, classify_many
from shortvid.infer.classifier import Classifier


@pytest.fixture(scope="module")
def classifier(trained_run):
    return Classifier.load(trained_run)


@pytest.fixture(scope="module")
def paths(tiny_corpus):
    return [sample.path for sample in load_dataset(tiny_corpus, "val").samples]


@pytest.fixture(scope="module")
def alone(classifier, paths):
    return {path: classifier.predict(path) for path in paths}


@pytest.mark.parametrize("batch_size,workers", [(1, 1), (3, 2), (64, 3)])
def test_batches_give_each_video_its_single_stream_answer(classifier, paths, alone, batch_size, workers):
    stats = PipelineStats()
    outcomes = list(classify_many(classifier, paths, batch_size=batch_size, workers=workers, stats=stats))
    assert [outcome.source for outcome in outcomes] == paths  # input order
    for path, outcome in zip(paths, outcomes, strict=True):
        assert outcome.error is None
        assert outcome.prediction.ids == alone[path].ids
        np.testing.assert_allclose([label.score for label in outcome.prediction.top],
                                   [label.score for label in alone[path].top], rtol=1e-4, atol=1e-5)
        assert outcome.prediction.keyframes == alone[path].keyframes
    assert stats.videos == len(paths) and stats.failed == 0
    assert stats.batches == -(-len(paths) // batch_size)
    assert stats.videos_per_s > 0 and all(ms >= 0 for ms in stats.stage_ms.values())
    assert stats.stage_ms["decode"] > 0 and stats.stage_ms["model"] > 0


def test_a_broken_video_is_reported_in_place_and_the_rest_go_on(classifier, paths, alone, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video" * 100)
    missing = tmp_path / "missing.mp4"
    sources = [paths[0], broken, paths[1], missing, paths[2].read_bytes()]
    stats = PipelineStats()
    outcomes = list(classify_many(classifier, sources, batch_size=2, workers=2, stats=stats))
    assert [outcome.source for outcome in outcomes] == sources
    assert isinstance(outcomes[1].error, InvalidVideoError) and str(broken) in str(outcomes[1].error)
    assert isinstance(outcomes[3].error, VideoNotFoundError)
    assert [outcome.prediction.ids for outcome in outcomes if outcome.error is None] == \
        [alone[path].ids for path in paths[:3]]
    assert stats.failed == 2 and stats.videos == 5
    assert outcomes[1].to_dict()["error"]["type"] == "InvalidVideoError"


def test_a_clip_that_breaks_the_model_fails_alone(trained_run, paths, alone):
    class Fragile(Classifier):
        def read(self, source, timeout=10.0):
            clip = super().read(source, timeout)
            return dataclasses.replace(clip, frames=clip.frames[..., None]) if source == paths[1] else clip

    fragile = Fragile.load(trained_run)
    outcomes = list(classify_many(fragile, paths[:4], batch_size=4, workers=2))
    assert isinstance(outcomes[1].error, InferenceError) and str(paths[1]) in str(outcomes[1].error)
    assert [outcomes[i].prediction.ids for i in (0, 2, 3)] == [alone[paths[i]].ids for i in (0, 2, 3)]


def test_adaptive_batches_mix_frame_counts(trained_run, paths):
    classifier = Classifier.load(trained_run, adaptive=True)
    outcomes = list(classify_many(classifier, paths, batch_size=len(paths), workers=2))
    assert len({len(outcome.prediction.frames) for outcome in outcomes}) > 1  # one batch, several frame counts
    assert [outcome.prediction.ids for outcome in outcomes] == [classifier.predict(path).ids for path in paths]


def test_bad_arguments_are_refused(classifier, paths):
    with pytest.raises(ValueError, match="batch_size"):
        list(classify_many(classifier, paths, batch_size=0))
    with pytest.raises(ValueError, match="workers"):
        list(classify_many(classifier, paths, workers=-1))


@pytest.mark.slow
def test_cli_predict_pipelined_matches_one_at_a_time(trained_run, paths, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\0" * 4096)
    inputs = [*map(str, paths[:4]), str(broken)]

    def predict(*extra):
        result = subprocess.run([sys.executable, "-m", "shortvid.cli", "predict", str(trained_run), *inputs, *extra],
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()], result.stderr

    single, _ = predict()
    batched, summary = predict("--batch-size", "3", "--workers", "2")
    assert [line["path"] for line in batched] == inputs

    def ids(lines):
        return [[label["id"] for label in line.get("labels", [])] for line in lines]

    assert ids(batched) == ids(single)
    assert batched[-1]["error"]["type"] == "InvalidVideoError"
    assert "videos/s" in summary and "1 failed" in summary
