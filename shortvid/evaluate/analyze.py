"""Bad-case analysis of a trained run: which classes are mistaken for which, and by group.

The pure functions (numpy only) count confusions, per-class precision and recall, split the
errors into within-group and across-group ones, and propose groups from the confusions for a
dataset that has none. `analyze_run` classifies a split with a run (``classify_split``), computes
``analysis.json`` and has ``shortvid.evaluate.report`` render it: a browsable ``report.html``, the same
tables in ``summary.md``, a confusion heatmap and thumbnails of the worst errors.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.labels import LabelMap
from ..decode import DecodeLimits
from ..files import atomic_write
from ..metrics import (
    as_targets,
    by_slice,
    confusion_matrix,
    confusion_pairs,
    jaccard,
    per_class_ap,
    predicted_matrix,
    video_kind,
)
from .report import frame_strip, html_report, markdown_report, plot_confusion

__all__ = [
    "analyze_run",
    "confusion_matrix",
    "group_confusions",
    "per_class_precision_recall",
    "propose_groups",
]

UNGROUPED = "(ungrouped)"


def per_class_precision_recall(predicted: Sequence[Collection[int]], targets) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall of each class [C] over label sets; NaN where never predicted / never true."""
    t = as_targets(targets, len(predicted))
    p = predicted_matrix(predicted, t.shape[1])
    hits = np.count_nonzero(p & t, axis=0).astype(np.float64)
    chosen = np.count_nonzero(p, axis=0)
    true = np.count_nonzero(t, axis=0)
    precision = np.divide(hits, chosen, out=np.full(hits.shape, np.nan), where=chosen > 0)
    recall = np.divide(hits, true, out=np.full(hits.shape, np.nan), where=true > 0)
    return precision, recall


def group_confusions(pairs: Sequence[tuple[int, int, int]], label_map: LabelMap) -> dict:
    """Split counted confusions (true, predicted, count) by the label map's groups.

    A pair is ``within`` when both classes share a (non-empty) group, ``across`` when both have
    groups that differ, and ``ungrouped`` when either class has none. ``within_share`` is
    within / (within + across), None without grouped errors. ``by_group`` lists the pairs under
    the true class's group (groups in the map's order, then UNGROUPED), most frequent first.
    """
    counts = {"within": 0, "across": 0, "ungrouped": 0}
    by_group: dict[str, list[dict]] = {group: [] for group in label_map.groups}
    for true, pred, count in sorted(pairs, key=lambda pair: (-pair[2], pair[0], pair[1])):
        true_group, pred_group = label_map.group(true), label_map.group(pred)
        kind = "ungrouped" if not (true_group and pred_group) else "within" if true_group == pred_group else "across"
        counts[kind] += int(count)
        by_group.setdefault(true_group or UNGROUPED, []).append({
            "true": int(true), "true_name": label_map.name(true),
            "predicted": int(pred), "predicted_name": label_map.name(pred),
            "predicted_group": pred_group or UNGROUPED, "count": int(count), "kind": kind,
        })
    grouped = counts["within"] + counts["across"]
    return {**counts, "within_share": counts["within"] / grouped if grouped else None,
            "by_group": {group: rows for group, rows in by_group.items() if rows}}


def propose_groups(confusion: np.ndarray, num_groups: int) -> list[list[int]]:
    """Cluster classes into ``num_groups`` groups of mutually confused classes.

    Rule: confusion rates R[i, j] = confusion[i, j] / (row i's total), so frequent classes do not
    dominate; similarity S = R + R.T with a zero diagonal. Agglomerative merging with average
    linkage: starting from singletons, repeatedly merge the two clusters with the highest mean S
    between their members; ties go to the smaller merged cluster, then to the lower smallest ids.
    Deterministic. Groups come back as sorted id lists, ordered by their smallest id.
    """
    c = np.asarray(confusion, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"confusion must be square [C, C], got shape {c.shape}")
    n = c.shape[0]
    if not 1 <= num_groups <= n:
        raise ValueError(f"num_groups must lie in [1, {n}], got {num_groups}")
    totals = c.sum(axis=1, keepdims=True)
    rates = np.divide(c, totals, out=np.zeros_like(c), where=totals > 0)
    similarity = rates + rates.T
    np.fill_diagonal(similarity, 0.0)
    clusters = [[i] for i in range(n)]
    while len(clusters) > num_groups:
        best: tuple | None = None
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                link = similarity[np.ix_(clusters[a], clusters[b])].mean()
                key = (-link, len(clusters[a]) + len(clusters[b]), clusters[a][0], clusters[b][0])
                if best is None or key < best[0]:
                    best = (key, a, b)
        _, a, b = best
        clusters[a] = sorted(clusters[a] + clusters[b])
        del clusters[b]
    return sorted(clusters, key=lambda members: members[0])


def _nan_to_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


@dataclass
class _Error:
    """A misclassified video kept for the report, with a strip of the frames the model saw."""

    index: int
    jaccard: float
    wrong_score: float
    strip: object  # PIL.Image.Image

    @property
    def key(self) -> tuple:
        return (self.jaccard, -self.wrong_score, self.index)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60] or "video"


def analyze_run(
    run_dir: str | os.PathLike,
    dataset: str | os.PathLike,
    split: str = "val",
    out: str | os.PathLike = "analysis",
    *,
    limit: int | None = None,
    worst: int = 12,
    device: str = "auto",
    num_groups: int | None = None,
    adaptive: bool = False,
    backend: str | None = "auto",
    precision: str | None = "fp32",
    limits: DecodeLimits | None = None,
    progress: bool = False,
) -> dict:
    """Classify a split with a run and write the bad-case report into ``out``; returns analysis.json's dict.

    ``limit`` keeps the first videos only; ``worst`` is how many errors get thumbnails (lowest
    Jaccard first, then the highest score given to a wrong class). A video that fails to decode, or
    that the model fails on, is listed under ``failures`` with its typed error, and the report is
    written from the others. Groups come from the label map; ``proposed_groups`` clusters the
    confusions into ``num_groups`` groups (default: the map's group count, else round(sqrt(C))).
    ``adaptive``, ``backend``, ``precision`` and ``limits``: how the run classifies, as in
    ``Classifier.load``.
    """
    from ..data.annotations import load_dataset
    from ..infer.batch import classify_split
    from ..infer.classifier import Classifier

    out = Path(out)
    (out / "errors").mkdir(parents=True, exist_ok=True)
    for old in (out / "errors").glob("*.jpg"):
        old.unlink()
    classifier = Classifier.load(run_dir, device=device, adaptive=adaptive, backend=backend, precision=precision,
                                 limits=limits)
    label_map = classifier.labels
    num_classes = len(label_map)
    annotations = load_dataset(dataset, split, labels=label_map, on_error="skip")
    samples = annotations.samples[:limit] if limit is not None else annotations.samples

    kept, rows, predicted, failures, errors, sounds = [], [], [], [], [], []
    for video in classify_split(classifier, samples, progress=progress, desc="analyze"):
        sample = video.sample
        if video.error is not None:
            failures.append({"name": sample.name, "path": str(sample.path), "type": type(video.error).__name__,
                             "error": str(video.error)})
            continue
        scores = video.scores
        labels, top = classifier.decide(scores)
        ids = [label.id for label in labels]
        index = len(kept)
        kept.append((sample, labels, top))
        sounds.append(video.clip.sound.status if video.clip.sound is not None else "")
        rows.append(scores)
        predicted.append(ids)
        truth = set(sample.labels)
        score = float(jaccard([ids], [[c in truth for c in range(num_classes)]])[0])
        if score < 1.0 and worst > 0:
            wrong = np.delete(scores, list(truth))
            candidate = _Error(index, score, float(wrong.max()) if wrong.size else 0.0, None)
            if len(errors) < worst or candidate.key < errors[-1].key:
                candidate.strip = frame_strip(video.clip.frames)
                errors = sorted([*errors, candidate], key=lambda e: e.key)[:worst]

    scores = np.array(rows, dtype=np.float64).reshape(len(rows), num_classes)
    targets = np.zeros((len(kept), num_classes), dtype=bool)
    for i, (sample, _, _) in enumerate(kept):
        targets[i, list(sample.labels)] = True
    per_video = jaccard(predicted, targets)
    matrix = confusion_matrix(predicted, targets, num_classes)
    pairs = confusion_pairs(predicted, targets)
    precision, recall = per_class_precision_recall(predicted, targets)
    aps = per_class_ap(scores, targets)
    groups = label_map.groups
    by_groups = group_confusions(pairs, label_map)
    if num_groups is None:
        num_groups = len(groups) or max(1, round(math.sqrt(num_classes)))
    proposed = propose_groups(matrix, min(num_groups, num_classes))
    order, sizes = label_map.group_order()

    worst_rows = []
    for rank, error in enumerate(errors, 1):
        sample, labels, top = kept[error.index]
        image = f"errors/{rank:02d}_{_safe_name(Path(sample.name).stem)}.jpg"
        error.strip.save(out / image, quality=85)
        worst_rows.append({
            "rank": rank, "name": sample.name, "path": str(sample.path), "image": image,
            "jaccard": error.jaccard, "wrong_score": error.wrong_score,
            "true": [{"id": c, "name": label_map.name(c)} for c in sample.labels],
            "predicted": [{"id": lab.id, "name": lab.name, "score": lab.score} for lab in labels],
            "top5": [{"id": lab.id, "name": lab.name, "score": lab.score} for lab in top],
        })

    defined_aps = aps[~np.isnan(aps)]
    analysis = {
        "run": str(run_dir), "dataset": str(dataset), "split": split,
        "summary": {
            "videos": len(samples), "classified": len(kept), "failed": len(failures),
            "skipped_annotations": len(annotations.problems),
            "mean_jaccard": _nan_to_none(float(per_video.mean())) if per_video.size else None,
            "perfect": int(np.count_nonzero(per_video == 1.0)),
            "mAP": _nan_to_none(float(defined_aps.mean())) if defined_aps.size else None,
            "errors_within_group": by_groups["within"], "errors_across_groups": by_groups["across"],
            "errors_ungrouped": by_groups["ungrouped"], "within_share": by_groups["within_share"],
        },
        "classes": [
            {"id": c, "name": label_map.name(c), "group": label_map.group(c) or UNGROUPED,
             "support": int(targets[:, c].sum()), "predicted": int(sum(c in p for p in predicted)),
             "precision": _nan_to_none(precision[c]), "recall": _nan_to_none(recall[c]), "ap": _nan_to_none(aps[c])}
            for c in range(num_classes)
        ],
        "confusion_pairs": [
            {"true": t, "true_name": label_map.name(t), "predicted": p, "predicted_name": label_map.name(p), "count": n}
            for t, p, n in pairs
        ],
        "group_confusions": by_groups,
        # bad cases by modality: the classes' kind (what tells them apart) and, for a run that hears, the sound
        "by_modality": {name: by_slice(keys, per_video) for name, keys in (
            ("kind", [video_kind(sample.labels, label_map.class_kinds) for sample, _, _ in kept]),
            ("sound", sounds)) if any(keys)},
        "groups": groups,
        "proposed_groups": [[{"id": c, "name": label_map.name(c)} for c in members] for members in proposed],
        "confusion_matrix": {"class_order": order, "matrix": matrix.tolist()},
        "worst": worst_rows,
        "failures": failures,
        "annotation_problems": [str(problem) for problem in annotations.problems],
    }
    plot_confusion(matrix, label_map.names, order, sizes, out / "confusion.png")
    atomic_write(out / "analysis.json", json.dumps(analysis, indent=2, ensure_ascii=False))
    atomic_write(out / "summary.md", markdown_report(analysis))
    atomic_write(out / "report.html", html_report(analysis))
    return analysis


