"""Evaluation metrics for multi-label video classification, in plain numpy.

Inputs share one layout: `scores` is a float array [N, C] (sigmoid or softmax outputs, or any
monotone score), `targets` a multi-hot array [N, C] of {0, 1} (bool, int or float), and predicted
label sets a sequence of N collections of class ids.

Tie rule used wherever a ranking of classes is needed (top-k, GAP's top-k, the decision policy):
scores descending, equal scores by ascending class id.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from itertools import chain

import numpy as np

__all__ = [
    "average_precision",
    "confusion_matrix",
    "confusion_pairs",
    "evaluation_report",
    "gap_at_k",
    "jaccard",
    "mean_ap",
    "mean_jaccard",
    "per_class_ap",
    "predicted_matrix",
    "timing_summary",
    "top_k_hit",
    "top_k_indices",
]


def as_targets(targets, videos: int | None = None) -> np.ndarray:
    """Validate a multi-hot matrix (of ``videos`` rows, when given) and return it as bool [N, C]."""
    t = np.asarray(targets)
    if t.ndim != 2:
        raise ValueError(f"targets must be 2-D [N, C], got shape {t.shape}")
    if videos is not None and t.shape[0] != videos:
        raise ValueError(f"{videos} predictions for {t.shape[0]} videos")
    if t.dtype != bool:
        if not np.all((t == 0) | (t == 1)):
            raise ValueError("targets must be multi-hot: every entry 0 or 1")
        t = t.astype(bool)
    return t


def as_scores(scores, ndim: int = 2) -> np.ndarray:
    """Validate scores and return them as float64 (so comparisons agree across callers)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != ndim:
        raise ValueError(f"scores must be {ndim}-D, got shape {s.shape}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return s


def _check_same_shape(scores: np.ndarray, targets: np.ndarray) -> None:
    if scores.shape != targets.shape:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} differ in shape")


def top_k_indices(scores, k: int) -> np.ndarray:
    """Class ids of each row's k best scores [N, min(k, C)], best first, ties by lower id.

    Selects with a partition (linear time), resolving ties at the k-th value by lower id, and
    sorts only the k selected columns, which is several times faster than a full sort.
    """
    s = as_scores(scores)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n, c = s.shape
    k = min(k, c)
    if 2 * k >= c or n == 0:
        return np.argsort(-s, axis=1, kind="stable")[:, :k]
    kth = -np.partition(-s, k - 1, axis=1)[:, k - 1 : k]
    above = s > kth
    at = s == kth
    room = k - np.count_nonzero(above, axis=1, keepdims=True)
    chosen = above | (at & (np.cumsum(at, axis=1) <= room))
    ids = np.nonzero(chosen)[1].reshape(n, k)
    order = np.argsort(-np.take_along_axis(s, ids, axis=1), axis=1, kind="stable")
    return np.take_along_axis(ids, order, axis=1)


def predicted_matrix(predicted: Sequence[Collection[int]], num_classes: int) -> np.ndarray:
    """Label sets as a bool multi-hot matrix [N, num_classes]; duplicate ids count once."""
    lengths = np.fromiter((len(p) for p in predicted), dtype=np.int64, count=len(predicted))
    flat = np.fromiter(chain.from_iterable(predicted), dtype=np.int64, count=int(lengths.sum()))
    if flat.size and (flat.min() < 0 or flat.max() >= num_classes):
        raise ValueError(f"predicted class ids must lie in [0, {num_classes})")
    out = np.zeros((len(predicted), num_classes), dtype=bool)
    out[np.repeat(np.arange(len(predicted)), lengths), flat] = True
    return out


def _predicted_and_targets(
    predicted: Sequence[Collection[int]], targets
) -> tuple[np.ndarray, np.ndarray]:
    t = as_targets(targets, len(predicted))
    return predicted_matrix(predicted, t.shape[1]), t


def jaccard(predicted: Sequence[Collection[int]], targets) -> np.ndarray:
    """Per-video Jaccard index |P ∩ G| / |P ∪ G| [N], the competition's accuracy per video.

    An empty prediction scores 0, whatever the truth; in particular an empty prediction for a
    video with no true labels scores 0 too (0/0 is defined as 0), matching the rule that an empty
    answer earns nothing. Predicted sets are sets: a repeated id counts once.
    """
    p, t = _predicted_and_targets(predicted, targets)
    inter = np.count_nonzero(p & t, axis=1)
    union = np.count_nonzero(p | t, axis=1)
    return np.divide(inter, union, out=np.zeros(len(inter), dtype=np.float64), where=union > 0)


def mean_jaccard(predicted: Sequence[Collection[int]], targets) -> float:
    """The competition's accuracy: mean per-video Jaccard index (NaN for zero videos)."""
    per_video = jaccard(predicted, targets)
    return float(per_video.mean()) if per_video.size else float("nan")


def top_k_hit(scores, targets, k: int) -> float:
    """Share of videos whose k best-scored classes include at least one true label."""
    s, t = as_scores(scores), as_targets(targets)
    _check_same_shape(s, t)
    if s.shape[0] == 0:
        return float("nan")
    top = top_k_indices(s, k)
    return float(np.take_along_axis(t, top, axis=1).any(axis=1).mean())


def _ranked_ap(ranked_scores: np.ndarray, ranked_hits: np.ndarray, num_positives: int) -> float:
    """Non-interpolated AP of a list already sorted by score descending.

    Tied scores form one threshold: every positive in a tie group gets the precision measured at
    the end of its group, which is sklearn's step-wise AP = sum_n (R_n - R_{n-1}) P_n over
    distinct thresholds. The result does not depend on the order inside a tie group.
    """
    n = ranked_scores.size
    if n == 0:
        return 0.0
    tps = np.cumsum(ranked_hits, dtype=np.int64)
    group_ends = np.flatnonzero(np.append(ranked_scores[1:] != ranked_scores[:-1], True))
    end_of = group_ends[np.searchsorted(group_ends, np.arange(n))]
    precision = tps[end_of] / (end_of + 1.0)
    return float(precision[ranked_hits].sum() / num_positives)


def average_precision(scores_c, targets_c) -> float:
    """Average precision of one class over N videos, as sklearn's `average_precision_score`.

    Non-interpolated, ties grouped as one threshold (deterministic). A class with no positive
    video has no defined AP: the result is NaN, and `mean_ap` skips it.
    """
    s = as_scores(scores_c, ndim=1)
    t = np.asarray(targets_c)
    if t.shape != s.shape:
        raise ValueError(f"scores {s.shape} and targets {t.shape} differ in shape")
    t = as_targets(t[:, None])[:, 0]
    num_positives = int(t.sum())
    if num_positives == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    return _ranked_ap(s[order], t[order], num_positives)


def confusion_matrix(predicted: Sequence[Collection[int]], targets, num_classes: int) -> np.ndarray:
    """Counts [C, C] int64, rows true class, columns predicted class.

    Off the diagonal, the rule of `confusion_pairs`: per video, each missed true label is paired
    with each wrongly predicted label. On the diagonal, the number of videos where the class was
    both true and predicted. So ``confusion_pairs`` equals the non-zero off-diagonal cells.
    """
    t = as_targets(targets, len(predicted))
    if t.shape[1] != num_classes:
        raise ValueError(f"targets have {t.shape[1]} classes, expected {num_classes}")
    p = predicted_matrix(predicted, num_classes)
    missed = (t & ~p).astype(np.int64)
    wrong = (p & ~t).astype(np.int64)
    matrix = missed.T @ wrong
    matrix[np.diag_indices(num_classes)] = np.count_nonzero(p & t, axis=0)
    return matrix


def per_class_ap(scores, targets) -> np.ndarray:
    """Average precision of each class [C]; NaN for classes with no positive video."""
    s, t = as_scores(scores), as_targets(targets)
    _check_same_shape(s, t)
    return np.array([average_precision(s[:, c], t[:, c]) for c in range(s.shape[1])])


def mean_ap(scores, targets) -> float:
    """Mean of the per-class APs over the classes that have positives (NaN if none has)."""
    aps = per_class_ap(scores, targets)
    defined = aps[~np.isnan(aps)]
    return float(defined.mean()) if defined.size else float("nan")


def gap_at_k(scores, targets, k: int = 20) -> float:
    """Global Average Precision at k, the YouTube-8M challenge metric.

    Each video contributes its k best (score, is-true) pairs; the N*k pairs are pooled and ranked
    by score, and AP is taken over that list with recall normalised by *all* true labels in
    `targets`, so true labels left outside a video's top k count as misses. Ties are grouped as
    in `average_precision` (the YT8M starter instead shuffles with a fixed seed). NaN when
    `targets` has no positive at all (the starter returns 0 there).
    """
    s, t = as_scores(scores), as_targets(targets)
    _check_same_shape(s, t)
    num_positives = int(t.sum())
    if num_positives == 0:
        return float("nan")
    top = top_k_indices(s, k)
    pooled_scores = np.take_along_axis(s, top, axis=1).ravel()
    pooled_hits = np.take_along_axis(t, top, axis=1).ravel()
    order = np.argsort(-pooled_scores, kind="stable")
    return _ranked_ap(pooled_scores[order], pooled_hits[order], num_positives)


def confusion_pairs(
    predicted: Sequence[Collection[int]], targets, *, top: int | None = None
) -> list[tuple[int, int, int]]:
    """Counted confusions (true class, wrongly predicted class, count), most frequent first.

    Counting rule, per video: every true label the prediction missed is paired with every
    predicted label that is not true, and each such pair counts once. So a single-label video
    predicted as another class gives one pair true -> predicted; a video whose truth is fully
    predicted gives no pair even if an extra label was added (nothing was mistaken for it); a
    video with two missed and two wrong labels gives four pairs. Ties in count are ordered by
    true id, then predicted id. `top` keeps only the first `top` pairs.
    """
    p, t = _predicted_and_targets(predicted, targets)
    missed = (t & ~p).astype(np.float64)
    wrong = (p & ~t).astype(np.float64)
    counts = np.rint(missed.T @ wrong).astype(np.int64)
    true_ids, pred_ids = np.nonzero(counts)
    values = counts[true_ids, pred_ids]
    order = np.lexsort((pred_ids, true_ids, -values))
    if top is not None:
        order = order[: max(top, 0)]
    return [(int(true_ids[i]), int(pred_ids[i]), int(values[i])) for i in order]


def timing_summary(ms: Sequence[float]) -> dict:
    """Median, 95th percentile (linear interpolation) and mean of per-video times, with the count.

    With no measurements the statistics are None, so the summary stays JSON-ready.
    """
    values = np.asarray(ms, dtype=np.float64).ravel()
    if values.size == 0:
        return {"count": 0, "median": None, "p95": None, "mean": None}
    return {
        "count": int(values.size),
        "median": float(np.median(values)),
        "p95": float(np.percentile(values, 95)),
        "mean": float(values.mean()),
    }


def by_slice(keys: Sequence[str], per_video: np.ndarray) -> dict:
    """Videos and mean of ``per_video`` (a video's Jaccard, say) for each distinct key, in key order: the
    evaluation's breakdowns by class kind, sound status and keyframe count."""
    values = np.asarray(per_video, dtype=np.float64)
    keyed = np.asarray(list(keys), dtype=object)
    return {key: {"videos": int((keyed == key).sum()), "mean_jaccard": float(values[keyed == key].mean())}
            for key in sorted(set(keyed.tolist()))}


def video_kind(labels: Collection[int], class_kinds: Sequence[str]) -> str:
    """What tells a video's classes apart (appearance, motion, sound; ``LabelMap.class_kinds``): its classes'
    kind, "mixed" when they differ, "" when the label map has no kinds."""
    kinds = {class_kinds[c] for c in labels} if class_kinds else set()
    return kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "")


def _json_float(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def evaluation_report(
    scores,
    targets,
    predicted: Sequence[Collection[int]],
    names: Sequence[str] | Mapping[int, str] | None = None,
    *,
    confusions: int = 20,
) -> dict:
    """Every metric above in one JSON-ready dict (undefined values are None, not NaN).

    `predicted` are the label sets the decision policy returned for these scores. Classes are
    named by `names[id]` when given, else by their id as a string. `confusions` caps the list of
    confusion pairs.
    """
    s, t = as_scores(scores), as_targets(targets)
    _check_same_shape(s, t)
    p, _ = _predicted_and_targets(predicted, t)
    num_classes = t.shape[1]

    def name(c: int) -> str:
        return str(names[c]) if names is not None else str(c)

    aps = per_class_ap(s, t)
    per_video = jaccard(predicted, t)
    return {
        "num_videos": int(t.shape[0]),
        "num_classes": int(num_classes),
        "mean_jaccard": _json_float(float(per_video.mean()) if per_video.size else float("nan")),
        "exact_match": _json_float(float((p == t).all(axis=1).mean()) if t.shape[0] else np.nan),
        "mean_predicted_labels": _json_float(float(p.sum(axis=1).mean()) if t.shape[0] else np.nan),
        "mean_true_labels": _json_float(float(t.sum(axis=1).mean()) if t.shape[0] else np.nan),
        "top1_hit": _json_float(top_k_hit(s, t, 1)),
        "top5_hit": _json_float(top_k_hit(s, t, 5)),
        "mAP": _json_float(float(np.nanmean(aps)) if (~np.isnan(aps)).any() else float("nan")),
        "GAP@20": _json_float(gap_at_k(s, t, 20)),
        "per_class_ap": {name(c): _json_float(aps[c]) for c in range(num_classes)},
        "confusions": [
            {"true": name(tc), "predicted": name(pc), "count": n}
            for tc, pc, n in confusion_pairs(predicted, t, top=confusions)
        ],
    }
