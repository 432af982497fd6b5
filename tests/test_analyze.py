"""Bad-case analysis: the pure functions on hand-computed cases, and one end-to-end report."""

import json
import math
import re
import shutil

import numpy as np
import pytest

from shortvid.data.labels import LabelMap
from shortvid.evaluate.analyze import (
    analyze_run,
    confusion_matrix,
    group_confusions,
    per_class_precision_recall,
    propose_groups,
)
from shortvid.infer.classifier import Classifier
from shortvid.metrics import confusion_pairs

# Four videos over three classes:
#   truth {0}    predicted {1}     -> pair 0->1
#   truth {0, 1} predicted {0, 2}  -> 0 correct, pair 1->2
#   truth {2}    predicted {2, 1}  -> 2 correct, extra 1 but nothing missed: no pair
#   truth {1}    predicted {}      -> missed, nothing predicted: no pair
PREDICTED = [[1], [0, 2], [2, 1], []]
TARGETS = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0]])


def test_confusion_matrix_by_hand():
    expected = np.array([
        [1, 1, 0],
        [0, 0, 1],
        [0, 0, 1],
    ])
    np.testing.assert_array_equal(confusion_matrix(PREDICTED, TARGETS, 3), expected)


def test_confusion_matrix_multi_label_pairs_every_miss_with_every_wrong():
    matrix = confusion_matrix([[2, 3]], np.array([[1, 1, 0, 0]]), 4)
    expected = np.zeros((4, 4), dtype=int)
    expected[0, 2] = expected[0, 3] = expected[1, 2] = expected[1, 3] = 1
    np.testing.assert_array_equal(matrix, expected)


def test_confusion_matrix_off_diagonal_agrees_with_confusion_pairs():
    rng = np.random.default_rng(0)
    targets = rng.random((50, 6)) < 0.3
    predicted = [list(np.flatnonzero(row)) for row in rng.random((50, 6)) < 0.3]
    matrix = confusion_matrix(predicted, targets, 6)
    off = {(t, p): n for t, p, n in confusion_pairs(predicted, targets)}
    for t in range(6):
        for p in range(6):
            if t != p:
                assert matrix[t, p] == off.get((t, p), 0)


def test_confusion_matrix_rejects_wrong_class_count():
    with pytest.raises(ValueError):
        confusion_matrix(PREDICTED, TARGETS, 4)


def test_per_class_precision_recall_by_hand():
    precision, recall = per_class_precision_recall(PREDICTED, TARGETS)
    # class 0: predicted once (right), true twice; class 1: predicted twice (both wrong), true twice;
    # class 2: predicted twice, right once, true once.
    np.testing.assert_allclose(precision, [1.0, 0.0, 0.5])
    np.testing.assert_allclose(recall, [0.5, 0.0, 1.0])


def test_per_class_precision_recall_nan_where_undefined():
    precision, recall = per_class_precision_recall([[0], [0, 2]], np.array([[1, 0, 0], [0, 1, 0]]))
    assert precision[0] == 0.5 and recall[0] == 1.0
    assert math.isnan(precision[1]) and recall[1] == 0.0  # true once, never predicted
    assert precision[2] == 0.0 and math.isnan(recall[2])  # predicted once, never true


def _grouped_map() -> LabelMap:
    return LabelMap(names=("dog", "cat", "yoga", "fitness", "slime"),
                    class_groups=("pets", "pets", "people", "people", ""))


def test_group_confusions_counts_within_across_and_ungrouped():
    pairs = [(0, 1, 28), (2, 3, 16), (2, 0, 3), (4, 1, 2), (1, 0, 5)]
    result = group_confusions(pairs, _grouped_map())
    assert (result["within"], result["across"], result["ungrouped"]) == (49, 3, 2)
    assert result["within_share"] == pytest.approx(49 / 52)
    assert list(result["by_group"]) == ["pets", "people", "(ungrouped)"]
    assert [(r["true_name"], r["predicted_name"], r["count"]) for r in result["by_group"]["pets"]] == [
        ("dog", "cat", 28), ("cat", "dog", 5)]
    assert [r["kind"] for r in result["by_group"]["people"]] == ["within", "across"]
    assert result["by_group"]["(ungrouped)"][0]["predicted_group"] == "pets"


def test_group_confusions_without_groups():
    result = group_confusions([(0, 1, 4)], LabelMap(names=("a", "b")))
    assert (result["within"], result["across"], result["ungrouped"]) == (0, 0, 4)
    assert result["within_share"] is None


def test_propose_groups_recovers_planted_blocks():
    rng = np.random.default_rng(1)
    blocks = [[0, 3, 6], [1, 4, 7, 9], [2, 5, 8]]
    n = 10
    confusion = rng.integers(0, 2, (n, n))  # background noise
    for members in blocks:
        for i in members:
            for j in members:
                confusion[i, j] += rng.integers(8, 20)
    confusion[np.diag_indices(n)] = 50
    assert propose_groups(confusion, 3) == blocks


def test_propose_groups_by_hand_and_deterministic():
    confusion = np.array([
        [10, 5, 0, 0],
        [5, 10, 0, 0],
        [0, 0, 10, 1],
        [0, 0, 1, 10],
    ])
    assert propose_groups(confusion, 2) == [[0, 1], [2, 3]]
    assert propose_groups(confusion, 3) == [[0, 1], [2], [3]]
    assert propose_groups(confusion, 4) == [[0], [1], [2], [3]]
    assert propose_groups(confusion, 1) == [[0, 1, 2, 3]]
    # No confusion at all: ties merge the smallest clusters, lowest ids first.
    assert propose_groups(np.eye(4), 2) == [[0, 1], [2, 3]]


def test_propose_groups_rejects_bad_arguments():
    with pytest.raises(ValueError):
        propose_groups(np.eye(3), 0)
    with pytest.raises(ValueError):
        propose_groups(np.eye(3), 4)
    with pytest.raises(ValueError):
        propose_groups(np.ones((2, 3)), 1)


def _val_with_a_broken_video(corpus, root):
    """The tiny corpus's val split plus one video that cannot be decoded."""
    (root / "videos").mkdir(parents=True)
    shutil.copy(corpus / "labels.csv", root / "labels.csv")
    lines = (corpus / "val.txt").read_text().splitlines()
    for line in lines:
        name = line.split(",")[0]
        (root / "videos" / name).symlink_to(corpus / "videos" / name)
    (root / "videos" / "broken.mp4").write_text("not a video\n")
    (root / "val.txt").write_text("\n".join([*lines, "broken.mp4,0"]) + "\n")
    return root


def test_analyze_run_writes_the_report(trained_run, tiny_corpus, tmp_path, monkeypatch):
    """A video that cannot be decoded and one the model fails on are both reported, typed, and the
    report is written from the others."""
    dataset = _val_with_a_broken_video(tiny_corpus, tmp_path / "dataset")
    first = (dataset / "val.txt").read_text().splitlines()[0].split(",")[0]
    scores = Classifier.scores

    def fails_on_the_first_video(self, clip):
        if not getattr(self, "failed_once", False):
            self.failed_once = True
            raise RuntimeError("CUDA out of memory")
        return scores(self, clip)

    monkeypatch.setattr(Classifier, "scores", fails_on_the_first_video)
    out = tmp_path / "analysis"
    result = analyze_run(trained_run, dataset, "val", out, worst=3, device="cpu")
    for name in ("report.html", "summary.md", "confusion.png", "analysis.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    data = json.loads((out / "analysis.json").read_text())
    assert data == json.loads(json.dumps(result))
    assert data["summary"]["classified"] == data["summary"]["videos"] - 2 > 0
    assert [(f["name"], f["type"]) for f in data["failures"]] == [(first, "InferenceError"),
                                                                   ("broken.mp4", "InvalidVideoError")]
    assert "CUDA out of memory" in data["failures"][0]["error"] and "broken.mp4" in (out / "summary.md").read_text()
    assert "confusion_pairs" in data and isinstance(data["confusion_pairs"], list)
    matrix = np.array(data["confusion_matrix"]["matrix"])
    off_diagonal = {(p["true"], p["predicted"]): p["count"] for p in data["confusion_pairs"]}
    assert matrix.sum() - np.trace(matrix) == sum(off_diagonal.values())
    assert len(data["classes"]) == matrix.shape[0]
    html = (out / "report.html").read_text()
    images = re.findall(r"<img src='([^']+)'", html)
    assert "confusion.png" in images
    assert len(images) == 1 + len(data["worst"]) <= 1 + 3
    for image in images:
        assert (out / image).is_file(), image
    assert sorted(p.name for p in (out / "errors").glob("*.jpg")) == sorted(
        w["image"].split("/")[-1] for w in data["worst"])


@pytest.mark.slow
def test_analyze_from_the_cli(trained_run, tiny_corpus, tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "shortvid.cli", "analyze", str(trained_run), "--data",
                             str(tiny_corpus), "--out", str(tmp_path / "report"), "--worst", "3"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "report" / "report.html").exists() and (tmp_path / "report" / "confusion.png").exists()
    assert "report.html" in result.stdout
