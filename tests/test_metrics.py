"""Evaluation metrics and the decision policy: hand-computed cases, brute-force cross-checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shortvid.metrics import (
    average_precision,
    confusion_pairs,
    evaluation_report,
    gap_at_k,
    jaccard,
    mean_ap,
    mean_jaccard,
    per_class_ap,
    timing_summary,
    top_k_hit,
    top_k_indices,
)
from shortvid.policy import DecisionPolicy


def multi_hot(label_sets, num_classes: int) -> np.ndarray:
    out = np.zeros((len(label_sets), num_classes), dtype=int)
    for row, labels in enumerate(label_sets):
        out[row, list(labels)] = 1
    return out


def brute_force_ap(scores, labels) -> float:
    """sklearn's definition read literally: sum over distinct thresholds of (R_n - R_n-1) * P_n."""
    positives = sum(labels)
    ap, last_recall = 0.0, 0.0
    for threshold in sorted(set(scores), reverse=True):
        chosen = [y for s, y in zip(scores, labels, strict=True) if s >= threshold]
        recall = sum(chosen) / positives
        ap += (recall - last_recall) * sum(chosen) / len(chosen)
        last_recall = recall
    return ap


def brute_force_gap(scores, targets, k) -> float:
    """The YT8M starter's loop: pool each video's top k, rank, sum precision at each hit."""
    pooled = []
    for row_scores, row_targets in zip(scores, targets, strict=True):
        best = sorted(range(len(row_scores)), key=lambda c: -row_scores[c])[:k]
        pooled += [(row_scores[c], row_targets[c]) for c in best]
    pooled.sort(key=lambda pair: -pair[0])
    hits, total = 0, 0.0
    for rank, (_, is_true) in enumerate(pooled, start=1):
        if is_true:
            hits += 1
            total += hits / rank
    return total / np.sum(targets)


# --- Jaccard -------------------------------------------------------------------------------


def test_jaccard_hand_example():
    # truth:     v0 {0}     v1 {1, 2}          v2 {3}
    # predicted: v0 (0,)    v1 (1, 3)          v2 (0, 3)
    # Jaccard:   1/1        |{1}|/|{1,2,3}|=1/3  |{3}|/|{0,3}|=1/2  (one wrong extra label halves)
    targets = multi_hot([{0}, {1, 2}, {3}], 4)
    predicted = [(0,), (1, 3), (0, 3)]
    np.testing.assert_allclose(jaccard(predicted, targets), [1.0, 1 / 3, 1 / 2])
    # mean = (1 + 1/3 + 1/2) / 3 = 11/18
    assert mean_jaccard(predicted, targets) == pytest.approx(11 / 18)


def test_jaccard_edge_cases():
    targets = multi_hot([{0}, set(), set(), {1, 2}, {2}], 3)
    predicted = [(), (), (1,), (2, 1, 2), {2}]
    # empty prediction -> 0; empty truth and empty prediction -> 0 (defined so); empty truth with
    # a prediction -> 0; a repeated id counts once (exact match -> 1); any collection works.
    np.testing.assert_array_equal(jaccard(predicted, targets), [0.0, 0.0, 0.0, 1.0, 1.0])
    bool_targets = targets.astype(bool)
    float_targets = targets.astype(np.float32)
    expected = jaccard(predicted, bool_targets)
    np.testing.assert_array_equal(jaccard(predicted, float_targets), expected)


def test_jaccard_rejects_bad_input():
    targets = multi_hot([{0}, {1}], 3)
    with pytest.raises(ValueError, match="predictions"):
        jaccard([(0,)], targets)
    with pytest.raises(ValueError, match="class ids"):
        jaccard([(0,), (3,)], targets)
    with pytest.raises(ValueError, match="class ids"):
        jaccard([(0,), (-1,)], targets)
    with pytest.raises(ValueError, match="multi-hot"):
        jaccard([(0,), (1,)], targets * 2)


# --- top-k hit -----------------------------------------------------------------------------


def test_top_k_hit_hand_example():
    scores = np.array(
        [
            [0.9, 0.1, 0.3, 0.2],  # ranking 0, 2, 3, 1; truth {0}: top-1 hit
            [0.5, 0.4, 0.3, 0.2],  # ranking 0, 1, 2, 3; truth {2}: hit only from top-3
            [0.1, 0.8, 0.7, 0.6],  # ranking 1, 2, 3, 0; truth {0, 3}: hit from top-3 (class 3)
        ]
    )
    targets = multi_hot([{0}, {2}, {0, 3}], 4)
    assert top_k_hit(scores, targets, 1) == pytest.approx(1 / 3)
    assert top_k_hit(scores, targets, 2) == pytest.approx(1 / 3)
    assert top_k_hit(scores, targets, 3) == pytest.approx(1.0)
    assert top_k_hit(scores, targets, 10) == pytest.approx(1.0)


def test_top_k_indices_break_ties_by_lower_id_and_match_a_full_sort():
    assert top_k_indices([[0.5, 0.7, 0.5, 0.7]], 3).tolist() == [[1, 3, 0]]
    rng = np.random.default_rng(1)
    scores = np.round(rng.random((300, 17)), 1)  # many ties
    for k in (1, 2, 3, 5, 8, 9, 16, 17, 40):
        expected = [sorted(range(17), key=lambda c: (-row[c], c))[:k] for row in scores]
        assert top_k_indices(scores, k).tolist() == expected


# --- average precision ---------------------------------------------------------------------


def test_average_precision_hand_example():
    # ranked: 0.9 (+), 0.8 (-), 0.7 (+), 0.1 (-): precision at the hits 1/1 and 2/3
    # AP = (1 + 2/3) / 2 = 5/6
    assert average_precision([0.1, 0.9, 0.7, 0.8], [0, 1, 1, 0]) == pytest.approx(5 / 6)


def test_average_precision_groups_ties_as_one_threshold():
    # 0.5 (+) and 0.5 (-) tie after 0.9 (+): the tie group ends at rank 3 with 2 hits, so
    # AP = (1/1 + 2/3) / 2 = 5/6, whichever order the tied pair is listed in.
    assert average_precision([0.9, 0.5, 0.5], [1, 1, 0]) == pytest.approx(5 / 6)
    assert average_precision([0.9, 0.5, 0.5], [1, 0, 1]) == pytest.approx(5 / 6)


def test_average_precision_matches_brute_force_on_random_data():
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(1, 40))
        scores = rng.random(n)
        if trial % 2:
            scores = np.round(scores, 1)
        labels = (rng.random(n) < 0.3).astype(int)
        if labels.sum() == 0:
            labels[int(rng.integers(n))] = 1
        expected = brute_force_ap(scores.tolist(), labels.tolist())
        assert average_precision(scores, labels) == pytest.approx(expected, abs=1e-12)


def test_per_class_ap_and_mean_ap():
    scores = np.array([[0.9, 0.2, 0.1], [0.8, 0.6, 0.3], [0.1, 0.7, 0.2]])
    targets = multi_hot([{0}, {1}, {1}], 3)
    # class 0: ranked + (0.9) - (0.8) - (0.1)          -> AP 1
    # class 1: ranked + (0.7) + (0.6) - (0.2)          -> AP 1
    # class 2: no positive video                       -> NaN, skipped by mean_ap
    aps = per_class_ap(scores, targets)
    np.testing.assert_allclose(aps[:2], [1.0, 1.0])
    assert np.isnan(aps[2])
    assert mean_ap(scores, targets) == pytest.approx(1.0)
    # moving class 1's second positive below its negative: ranked + (0.7) - (0.2) + (0.1)
    # AP = (1 + 2/3) / 2 = 5/6; mean over classes 0 and 1 = (1 + 5/6) / 2 = 11/12
    scores[1, 1] = 0.05
    assert mean_ap(scores, targets) == pytest.approx(11 / 12)


def test_average_precision_without_positives_is_nan():
    assert np.isnan(average_precision([0.3, 0.2], [0, 0]))


# --- GAP -----------------------------------------------------------------------------------


def test_gap_hand_example():
    scores = np.array([[0.9, 0.5, 0.1], [0.2, 0.7, 0.6]])
    targets = multi_hot([{0}, {0, 2}], 3)
    # top-2 pairs: v0 (0.9, +) (0.5, -); v1 (0.7, -) (0.6, +); v1's class 0 (0.2) is left out.
    # pooled ranking 0.9+ 0.7- 0.6+ 0.5-, 3 positives in all:
    # GAP@2 = (1/1 + 2/3) / 3 = 5/9
    assert gap_at_k(scores, targets, k=2) == pytest.approx(5 / 9)
    # with k=3 the ranking gains 0.2+ (rank 5) and 0.1- : GAP@3 = (1 + 2/3 + 3/5) / 3 = 34/45
    assert gap_at_k(scores, targets, k=3) == pytest.approx(34 / 45)
    assert gap_at_k(scores, targets) == pytest.approx(34 / 45)  # k=20 > C keeps every class


def test_gap_matches_the_starter_loop_on_random_data():
    rng = np.random.default_rng(2)
    scores = rng.random((50, 12))
    targets = (rng.random((50, 12)) < 0.15).astype(int)
    for k in (1, 3, 20):
        assert gap_at_k(scores, targets, k) == pytest.approx(brute_force_gap(scores, targets, k))


# --- confusions and timing -----------------------------------------------------------------


def test_confusion_pairs_counting_rule():
    targets = multi_hot([{0}, {0}, {2, 3}, {0}, {1, 2}], 4)
    predicted = [
        (1,),  # 0 missed, 1 wrong                  -> (0, 1)
        (1,),  # same                               -> (0, 1)
        (2, 1),  # 3 missed, 1 wrong                -> (3, 1)
        (0, 2),  # nothing missed: extra 2 is no confusion
        (0, 3),  # 1 and 2 missed, 0 and 3 wrong    -> (1, 0) (1, 3) (2, 0) (2, 3)
    ]
    expected = [(0, 1, 2), (1, 0, 1), (1, 3, 1), (2, 0, 1), (2, 3, 1), (3, 1, 1)]
    assert confusion_pairs(predicted, targets) == expected
    assert confusion_pairs(predicted, targets, top=2) == expected[:2]


def test_timing_summary():
    # median of 10 20 30 40 1000 is 30, mean 1100/5 = 220;
    # p95 interpolates at position 0.95 * 4 = 3.8: 40 + 0.8 * (1000 - 40) = 808
    summary = timing_summary([40.0, 10.0, 1000.0, 20.0, 30.0])
    assert summary == pytest.approx({"count": 5, "median": 30.0, "p95": 808.0, "mean": 220.0})
    assert timing_summary([]) == {"count": 0, "median": None, "p95": None, "mean": None}


def test_evaluation_report_is_json_ready_and_consistent():
    scores = np.array([[0.9, 0.5, 0.1], [0.2, 0.7, 0.6], [0.3, 0.4, 0.8]])
    targets = multi_hot([{0}, {0, 2}, {1}], 3)
    predicted = [(0,), (1, 2), (2,)]
    names = ["dog", "cat", "bird"]
    report = evaluation_report(scores, targets, predicted, names)
    json.dumps(report, allow_nan=False)
    assert report["mean_jaccard"] == pytest.approx(mean_jaccard(predicted, targets))
    assert report["top1_hit"] == pytest.approx(top_k_hit(scores, targets, 1))
    assert report["top5_hit"] == pytest.approx(1.0)
    assert report["mAP"] == pytest.approx(mean_ap(scores, targets))
    assert report["GAP@20"] == pytest.approx(gap_at_k(scores, targets, 20))
    cat_ap = average_precision(scores[:, 1], targets[:, 1])
    assert report["per_class_ap"]["cat"] == pytest.approx(cat_ap)
    # v1 misses 0 for 1; v2 misses 1 for 2 (v1's extra 2 is true, so no pair from it)
    assert report["confusions"] == [
        {"true": "dog", "predicted": "cat", "count": 1},
        {"true": "cat", "predicted": "bird", "count": 1},
    ]
    no_positives = evaluation_report(scores, multi_hot([{0}, {0}, {1}], 3), predicted)
    assert no_positives["per_class_ap"]["2"] is None
    json.dumps(no_positives, allow_nan=False)


# --- decision policy -----------------------------------------------------------------------

CRAFTED = np.array(
    [
        [0.9, 0.6, 0.55, 0.1],  # two more above 0.5
        [0.3, 0.8, 0.2, 0.1],  # nothing else above 0.5
        [0.7, 0.65, 0.6, 0.58],  # three more above 0.5
        [0.1, 0.2, 0.3, 0.4],  # nothing reaches 0.5, yet the top-1 is returned
    ]
)


def test_policy_returns_top1_then_labels_over_threshold_up_to_max_labels():
    assert DecisionPolicy(0.5, 3).apply(CRAFTED) == [(0, 1, 2), (1,), (0, 1, 2), (3,)]
    assert DecisionPolicy(0.5, 2).apply(CRAFTED) == [(0, 1), (1,), (0, 1), (3,)]
    assert DecisionPolicy(0.5, 1).apply(CRAFTED) == [(0,), (1,), (0,), (3,)]
    # the threshold is inclusive: 0.58 >= 0.58
    assert DecisionPolicy(0.58, 4).apply(CRAFTED) == [(0, 1), (1,), (0, 1, 2, 3), (3,)]
    assert DecisionPolicy(0.99, 3).apply(CRAFTED) == [(0,), (1,), (0,), (3,)]
    assert DecisionPolicy(0.5, 3).apply_one(CRAFTED[2]) == (0, 1, 2)


@pytest.mark.parametrize("relative", [False, True])
def test_apply_one_agrees_with_apply(relative):
    rng = np.random.default_rng(6)
    scores = np.round(rng.random((200, 9)), 1).astype(np.float32)  # ties and float32 input
    for policy in (DecisionPolicy(0.3, 3, relative), DecisionPolicy(0.7, 9, relative)):
        assert [policy.apply_one(row) for row in scores] == policy.apply(scores)


def test_relative_policy_compares_with_the_top_score():
    # cutoffs 0.8 * top: v0 0.72 (0.6 fails), v1 0.64 (0.3 fails),
    # v2 0.56 (0.65, 0.6, 0.58 pass; max 3 keeps two), v3 0.32 (0.3 fails)
    policy = DecisionPolicy(0.8, 3, relative=True)
    assert policy.apply(CRAFTED) == [(0,), (1,), (0, 1, 2), (3,)]


def test_policy_ties_and_shape():
    assert DecisionPolicy(0.5, 2).apply(np.array([[0.5, 0.5, 0.5]])) == [(0, 1)]
    assert DecisionPolicy(0.5, 1).apply(np.array([[0.5, 0.5, 0.5]])) == [(0,)]
    assert DecisionPolicy(0.5, 5).apply(np.array([[0.9, 0.8]])) == [(0, 1)]  # max_labels > C
    with pytest.raises(ValueError):
        DecisionPolicy(max_labels=0)


def test_policy_dict_round_trip():
    policy = DecisionPolicy(0.37, 2, relative=True)
    d = json.loads(json.dumps(policy.to_dict()))
    assert d == {"threshold": 0.37, "max_labels": 2, "relative": True}
    assert DecisionPolicy.from_dict(d) == policy
    assert DecisionPolicy.from_dict({}) == DecisionPolicy()
    with pytest.raises(ValueError, match="unknown"):
        DecisionPolicy.from_dict({"treshold": 0.3})


def separable_dataset(n: int = 400, c: int = 6, seed: int = 0):
    """Single-label videos have a runner-up score in [0.05, 0.30]; double-label videos have their
    second true class in [0.50, 0.80]; the third best is always in [0, 0.05]. Any threshold in
    (0.30, 0.50] with max_labels >= 2 is perfect."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0.0, 0.05, (n, c))
    targets = np.zeros((n, c), dtype=int)
    for v in range(n):
        first, second = rng.choice(c, 2, replace=False)
        scores[v, first] = 0.9
        targets[v, first] = 1
        if v % 3 == 0:
            scores[v, second] = rng.uniform(0.5, 0.8)
            targets[v, second] = 1
        else:
            scores[v, second] = rng.uniform(0.05, 0.3)
    return scores, targets


def test_fit_finds_the_separating_threshold():
    scores, targets = separable_dataset()
    policy, score = DecisionPolicy.fit(scores, targets)
    assert score == pytest.approx(1.0)
    assert policy.max_labels == 2  # 3 scores the same; fewer labels win the tie
    assert 0.30 < policy.threshold <= 0.50
    assert policy.threshold == pytest.approx(0.50)  # the highest threshold wins a tie
    assert mean_jaccard(policy.apply(scores), targets) == pytest.approx(1.0)

    policy, score = DecisionPolicy.fit(scores, targets, thresholds=[0.2, 0.4, 0.6])
    assert (policy.threshold, policy.max_labels) == (0.4, 2)
    # a single-label-only choice scores 1 on the 2/3 singles and 1/2 on the doubles
    _, only_one = DecisionPolicy.fit(scores, targets, max_labels=[1])
    one_label = DecisionPolicy(max_labels=1).apply(scores)
    assert only_one == pytest.approx(mean_jaccard(one_label, targets))
    assert only_one < 0.9


def test_fit_prefers_one_label_when_extra_labels_do_not_pay():
    rng = np.random.default_rng(3)
    scores = rng.random((300, 5))
    targets = np.zeros((300, 5), dtype=int)
    targets[np.arange(300), scores.argmax(axis=1)] = 1
    policy, score = DecisionPolicy.fit(scores, targets)
    assert policy.max_labels == 1
    assert score == pytest.approx(1.0)


@pytest.mark.parametrize("relative", [False, True])
def test_fit_agrees_with_an_exhaustive_search_through_apply(relative):
    rng = np.random.default_rng(4)
    scores = rng.random((120, 7))
    targets = (rng.random((120, 7)) < 0.2).astype(int)
    targets[np.arange(120), rng.integers(0, 7, 120)] = 1
    grid = np.round(np.linspace(0.1, 0.9, 17), 2)
    best = max(
        (mean_jaccard(DecisionPolicy(t, m, relative).apply(scores), targets), -m, t)
        for m in (1, 2, 3, 4)
        for t in grid
    )
    policy, score = DecisionPolicy.fit(
        scores, targets, thresholds=grid, max_labels=(1, 2, 3, 4), relative=relative
    )
    assert score == pytest.approx(best[0], abs=1e-12)
    assert score == pytest.approx(mean_jaccard(policy.apply(scores), targets), abs=1e-12)
    assert policy.max_labels == -best[1]
