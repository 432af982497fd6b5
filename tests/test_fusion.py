"""Per-group specialists (`train --group`) and their fusion with the general model (`shortvid fuse`)."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from shortvid.cli import main
from shortvid.data.labels import LabelMap
from shortvid.evaluate.runner import evaluate_run
from shortvid.infer.classifier import Classifier
from shortvid.judge import ServerApi
from shortvid.models import FusedClassifier, create_model
from shortvid.models.fusion import fuse_scores, group_confidence
from shortvid.run import RunDir, RunError
from shortvid.train.config import ConfigError
from shortvid.train.trainer import train

from conftest import tiny_config


def test_group_confidence_by_score_kind():
    p = torch.tensor([[0.5, 0.5, 0.9], [0.1, 0.2, 0.0]])
    ids = torch.tensor([0, 1])
    assert group_confidence(p, ids, "sigmoid").tolist() == pytest.approx([0.75, 1 - 0.9 * 0.8])
    assert group_confidence(p, ids, "softmax").tolist() == pytest.approx([1.0, 0.3])


def test_fusion_rules_by_hand():
    general = torch.tensor([[0.25, 0.25, 0.5]])  # softmax over 3 classes; group {1, 2} has confidence 0.75
    specialist = torch.tensor([[0.875, 0.125]])  # says class 1, which the general model ranked below 2
    ids = torch.tensor([1, 2])
    gate = fuse_scores(general, [(specialist, ids)], "softmax", "gate")[0]
    assert gate.tolist() == pytest.approx([0.25, 0.65625, 0.09375])
    assert int(gate.argmax()) == 1  # the specialist decides within its group
    mean = fuse_scores(general, [(specialist, ids)], "softmax", "mean")[0]
    assert mean.tolist() == pytest.approx([0.25, (0.25 + 0.65625) / 2, (0.5 + 0.09375) / 2])
    geometric = fuse_scores(general, [(specialist, ids)], "softmax", "geometric")[0]
    assert geometric.tolist() == pytest.approx([0.25, math.sqrt(0.25 * 0.65625), math.sqrt(0.5 * 0.09375)])
    assert general.tolist() == [[0.25, 0.25, 0.5]]  # inputs untouched
    with pytest.raises(ValueError, match="unknown fusion rule"):
        fuse_scores(general, [(specialist, ids)], "softmax", "vote")


def test_fused_model_rebuilds_from_its_config():
    general = create_model("tsn_tiny", num_classes=5)
    specialist = create_model("tsn_tiny", num_classes=2)
    config = {"general": {"model": general.config, "scores": "sigmoid"},
              "specialists": [{"model": specialist.config, "scores": "softmax", "classes": [3, 1],
                               "scale": [1.0, 1.0, 1.0], "shift": [0.0, 0.0, 0.0]}]}
    fused = create_model("fused", num_classes=5, **config, rule="mean")
    assert isinstance(fused, FusedClassifier)
    fused.general.load_state_dict(general.state_dict())
    fused.specialists[0].load_state_dict(specialist.state_dict())
    frames = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        p = torch.sigmoid(general.eval()(frames))
        q = torch.softmax(specialist.eval()(frames), 1)
        expected = fuse_scores(p, [(q, torch.tensor([3, 1]))], "sigmoid", "mean")
        assert torch.allclose(torch.sigmoid(fused.eval()(frames)), expected, atol=1e-5)
        assert torch.allclose(torch.sigmoid(fused(frames))[:, [0, 2, 4]], p[:, [0, 2, 4]], atol=1e-5)
    config = dict(fused.config)
    again = create_model(config.pop("name"), **config)
    again.load_state_dict(fused.state_dict())
    with torch.no_grad():
        assert torch.equal(again.eval()(frames), fused(frames))
    with pytest.raises(ValueError, match="distinct classes"):
        FusedClassifier(general, "sigmoid", [specialist], ["softmax"], [[3, 3]])
    with pytest.raises(ValueError, match="2 classes was given 3"):
        FusedClassifier(general, "sigmoid", [specialist], ["softmax"], [[0, 1, 2]])


@pytest.fixture(scope="module")
def specialist_runs(tiny_corpus, tiny_cache, tmp_path_factory):
    """One specialist per group of the tiny corpus, 3 epochs each."""
    root = tmp_path_factory.mktemp("specialists")
    runs = {}
    for group in LabelMap.from_csv(tiny_corpus / "labels.csv").groups:
        runs[group] = root / group
        assert main(["train", "--config", "tiny", "--group", group,
                     *tiny_overrides(tiny_corpus, tiny_cache, runs[group]), "optim.epochs=3", "optim.loss=ce"]) == 0
    return runs


def tiny_overrides(corpus, cache, out):
    return [f"data.dataset={corpus}", f"data.cache={cache}", f"out={out}", "progress=false", "data.batch_size=6",
            "data.resize=72", "data.input_size=64"]


@pytest.mark.slow
def test_a_specialist_learns_its_group_only(specialist_runs, tiny_corpus):
    labels = LabelMap.from_csv(tiny_corpus / "labels.csv")
    for group, run in specialist_runs.items():
        own = RunDir(run).label_map()
        assert own.names == tuple(labels.name(i) for i in labels.groups[group])
        assert RunDir(run).load_model().num_classes == len(own)
        assert RunDir(run).read_metrics()[-1]["val_mean_jaccard"] is not None


def test_unknown_group_is_a_config_error(tiny_corpus, tiny_cache, tmp_path):
    with pytest.raises(ConfigError, match="no group 'nope'"):
        train(tiny_config(tiny_corpus, tiny_cache, tmp_path / "x", "data.group=nope"))


@pytest.mark.slow
def test_fuse_writes_a_run_every_command_serves(trained_run, specialist_runs, tiny_corpus, tmp_path, capsys,
                                               monkeypatch):
    out = tmp_path / "fused"
    assert main(["fuse", str(trained_run), *map(str, specialist_runs.values()), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "general mean Jaccard" in printed and "<- kept" in printed
    report = json.loads((out / "fusion.json").read_text())
    assert set(report["rules"]) == {"gate", "mean", "geometric"}
    best = report["rules"][report["rule"]]["mean_jaccard"]
    assert best == max(r["mean_jaccard"] for r in report["rules"].values())
    assert set(report["groups"]) == set(specialist_runs)
    assert sum(g["videos"] for g in report["groups"].values()) >= report["videos"]

    classifier = Classifier.load(out, device="cpu", backend="torch")
    assert isinstance(classifier.model, FusedClassifier) and classifier.model.rule == report["rule"]
    video = next((tiny_corpus / "videos").glob("*.mp4"))
    prediction = classifier.predict(video)
    assert prediction.labels and all(0 <= label.id < len(classifier.labels) for label in prediction.labels)
    metrics = evaluate_run(out, tiny_corpus, device="cpu", progress=False, out=tmp_path / "m.json")
    assert metrics["mean_jaccard"] == pytest.approx(best, abs=1e-6)  # the same videos, frames and policy

    predicted = subprocess.run([sys.executable, "-m", "shortvid.cli", "predict", str(out), str(video)],
                               capture_output=True, text=True, timeout=300)
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout.splitlines()[0])["labels"]
    monkeypatch.setenv("SHORTVID_RUN", str(out))
    assert ServerApi(0).handle(str(video)) == prediction.ids


@pytest.mark.slow
def test_fuse_refuses_mismatched_members(trained_run, specialist_runs, tmp_path):
    first = next(iter(specialist_runs.values()))
    from shortvid.train.fuse import fuse_runs

    with pytest.raises(RunError, match="also covered"):
        fuse_runs(trained_run, [first, first], tmp_path / "x", progress=False)


@pytest.mark.slow
def test_fused_scores_are_probabilities(trained_run, specialist_runs, tmp_path):
    from shortvid.train.fuse import fuse_runs

    fuse_runs(trained_run, list(specialist_runs.values()), tmp_path / "f", rules=["gate"], progress=False)
    model = RunDir(tmp_path / "f").load_model()
    with torch.no_grad():
        scores = torch.sigmoid(model(torch.randn(2, 3, 3, 64, 64)))
    assert np.all((scores.numpy() >= 0) & (scores.numpy() <= 1))
