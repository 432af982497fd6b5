"""Bad-case analysis of a trained run: which classes are mistaken for which, and by group.

The pure functions (numpy only) count confusions, per-class precision and recall, split the
errors into within-group and across-group ones, and propose groups from the confusions for a
dataset that has none. `analyze_run` classifies a split with a run and writes a browsable report
(``report.html``), the same tables in ``summary.md``, a confusion heatmap, thumbnails of the worst
errors and ``analysis.json``.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.labels import LabelMap
from ..files import atomic_write
from ..metrics import (
    confusion_pairs,
    jaccard,
    per_class_ap,
    predicted_matrix,
)

__all__ = [
    "analyze_run",
    "confusion_matrix",
    "group_confusions",
    "per_class_precision_recall",
    "propose_groups",
]

UNGROUPED = "(ungrouped)"
THUMB_HEIGHT = 112


def _as_bool_targets(targets, num_predictions: int) -> np.ndarray:
    t = np.asarray(targets)
    if t.ndim != 2:
        raise ValueError(f"targets must be 2-D [N, C], got shape {t.shape}")
    if t.shape[0] != num_predictions:
        raise ValueError(f"{num_predictions} predictions for {t.shape[0]} videos")
    if t.dtype != bool and not np.all((t == 0) | (t == 1)):
        raise ValueError("targets must be multi-hot: every entry 0 or 1")
    return t.astype(bool)


def confusion_matrix(predicted: Sequence[Collection[int]], targets, num_classes: int) -> np.ndarray:
    """Counts [C, C] int64, rows true class, columns predicted class.

    Off the diagonal, the rule of `confusion_pairs`: per video, each missed true label is paired
    with each wrongly predicted label. On the diagonal, the number of videos where the class was
    both true and predicted. So ``confusion_pairs`` equals the non-zero off-diagonal cells.
    """
    t = _as_bool_targets(targets, len(predicted))
    if t.shape[1] != num_classes:
        raise ValueError(f"targets have {t.shape[1]} classes, expected {num_classes}")
    p = predicted_matrix(predicted, num_classes)
    missed = (t & ~p).astype(np.int64)
    wrong = (p & ~t).astype(np.int64)
    matrix = missed.T @ wrong
    matrix[np.diag_indices(num_classes)] = np.count_nonzero(p & t, axis=0)
    return matrix


def per_class_precision_recall(predicted: Sequence[Collection[int]], targets) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall of each class [C] over label sets; NaN where never predicted / never true."""
    t = _as_bool_targets(targets, len(predicted))
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


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


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


def _frame_strip(frames: np.ndarray, height: int = THUMB_HEIGHT):
    """The frames side by side, each scaled to ``height`` pixels."""
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames]
    scaled = [image.resize((max(1, round(image.width * height / image.height)), height)) for image in images]
    strip = Image.new("RGB", (sum(image.width for image in scaled) + 2 * (len(scaled) - 1), height), "white")
    x = 0
    for image in scaled:
        strip.paste(image, (x, 0))
        x += image.width + 2
    return strip


def _class_order(label_map: LabelMap, groups: dict[str, list[int]]) -> tuple[list[int], list[int]]:
    """Class ids ordered by group (ungrouped last) and the sizes of those blocks."""
    order, sizes = [], []
    for members in groups.values():
        order += members
        sizes.append(len(members))
    placed = set(order)
    rest = [i for i in range(len(label_map)) if i not in placed]
    if rest:
        order += rest
        sizes.append(len(rest))
    return order, sizes


def _plot_confusion(matrix: np.ndarray, names: Sequence[str], order: list[int], sizes: list[int], path: Path) -> None:
    """Heatmap of row-normalised confusions, classes ordered by group, group boundaries drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = matrix[np.ix_(order, order)].astype(np.float64)
    totals = m.sum(axis=1, keepdims=True)
    rates = np.divide(m, totals, out=np.zeros_like(m), where=totals > 0)
    n = len(order)
    side = min(4 + 0.28 * n, 24)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=max(float(rates.max()), 1e-9))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class's row")
    if n <= 40:
        for i in range(n):
            for j in range(n):
                if m[i, j]:
                    ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.5 * rates.max() else "black")
    labels = [names[i] for i in order]
    ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    for edge in np.cumsum(sizes)[:-1]:
        ax.axhline(edge - 0.5, color="red", linewidth=1)
        ax.axvline(edge - 0.5, color="red", linewidth=1)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusions (diagonal: correct), classes by group")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
) -> dict:
    """Classify a split with a run and write the bad-case report into ``out``; returns analysis.json's dict.

    ``limit`` keeps the first videos only; ``worst`` is how many errors get thumbnails (lowest
    Jaccard first, then the highest score given to a wrong class). A video that fails to decode is
    listed under ``failures``. Groups come from the label map; ``proposed_groups`` clusters the
    confusions into ``num_groups`` groups (default: the map's group count, else round(sqrt(C))).
    """
    from ..data.annotations import load_dataset
    from ..errors import DecodeError
    from ..serve.classifier import Classifier

    out = Path(out)
    (out / "errors").mkdir(parents=True, exist_ok=True)
    for old in (out / "errors").glob("*.jpg"):
        old.unlink()
    classifier = Classifier.load(run_dir, device=device)
    label_map = classifier.labels
    num_classes = len(label_map)
    annotations = load_dataset(dataset, split, labels=label_map, on_error="skip")
    samples = annotations.samples[:limit] if limit is not None else annotations.samples

    kept, rows, predicted, failures, errors = [], [], [], [], []
    for sample in samples:
        try:
            clip = classifier.read(sample.path)
        except DecodeError as error:
            failures.append({"name": sample.name, "path": str(sample.path), "error": str(error)})
            continue
        scores, _ = classifier.scores(clip)
        labels, top = classifier.decide(scores)
        ids = [label.id for label in labels]
        index = len(kept)
        kept.append((sample, labels, top))
        rows.append(scores)
        predicted.append(ids)
        truth = set(sample.labels)
        score = float(jaccard([ids], [[c in truth for c in range(num_classes)]])[0])
        if score < 1.0 and worst > 0:
            wrong = np.delete(scores, list(truth))
            candidate = _Error(index, score, float(wrong.max()) if wrong.size else 0.0, None)
            if len(errors) < worst or candidate.key < errors[-1].key:
                candidate.strip = _frame_strip(clip.frames)
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
    order, sizes = _class_order(label_map, groups)

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
        "groups": groups,
        "proposed_groups": [[{"id": c, "name": label_map.name(c)} for c in members] for members in proposed],
        "confusion_matrix": {"class_order": order, "matrix": matrix.tolist()},
        "worst": worst_rows,
        "failures": failures,
        "annotation_problems": [str(problem) for problem in annotations.problems],
    }
    _plot_confusion(matrix, label_map.names, order, sizes, out / "confusion.png")
    atomic_write(out / "analysis.json", json.dumps(analysis, indent=2, ensure_ascii=False))
    atomic_write(out / "summary.md", _markdown(analysis))
    atomic_write(out / "report.html", _html(analysis))
    return analysis


def _summary_rows(analysis: dict) -> list[tuple[str, str]]:
    s = analysis["summary"]
    share = s["within_share"]
    return [
        ("run", analysis["run"]), ("dataset", f"{analysis['dataset']} ({analysis['split']})"),
        ("videos", str(s["videos"])), ("classified", str(s["classified"])), ("failed to decode", str(s["failed"])),
        ("skipped annotations", str(s["skipped_annotations"])),
        ("mean Jaccard", _fmt(s["mean_jaccard"], 4)), ("perfectly labelled", str(s["perfect"])),
        ("mAP", _fmt(s["mAP"], 4)),
        ("confusions within a group", str(s["errors_within_group"])),
        ("confusions across groups", str(s["errors_across_groups"])),
        ("confusions with an ungrouped class", str(s["errors_ungrouped"])),
        ("share within groups", "–" if share is None else f"{100 * share:.1f}%"),
    ]


def _group_pair_rows(analysis: dict) -> list[tuple[str, list[tuple[str, str, str, str]]]]:
    return [(group, [(row["true_name"], row["predicted_name"], row["predicted_group"], str(row["count"]))
                     for row in rows])
            for group, rows in analysis["group_confusions"]["by_group"].items()]


def _class_rows(analysis: dict) -> list[tuple[str, ...]]:
    return [(c["name"], c["group"], str(c["support"]), str(c["predicted"]),
             _fmt(c["precision"]), _fmt(c["recall"]), _fmt(c["ap"])) for c in analysis["classes"]]


CLASS_HEADER = ("class", "group", "true", "predicted", "precision", "recall", "AP")
PAIR_HEADER = ("true", "predicted as", "predicted's group", "count")


def _md_cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _markdown(analysis: dict) -> str:
    """summary.md: the report's tables, without images."""
    parts = ["# Bad-case analysis\n\n", _md_table(("metric", "value"), _summary_rows(analysis)), "\n## Confusions by group\n"]
    grouped = _group_pair_rows(analysis)
    if not grouped:
        parts.append("No confusions.\n")
    for group, rows in grouped:
        parts += [f"\n### {group}\n\n", _md_table(PAIR_HEADER, rows)]
    parts += ["\n## Per class\n\n", _md_table(CLASS_HEADER, _class_rows(analysis))]
    parts.append("\n## Proposed groups (clustered by confusion)\n\n")
    parts += [f"{i}. " + ", ".join(c["name"] for c in members) + "\n"
              for i, members in enumerate(analysis["proposed_groups"], 1)]
    parts.append("\n## Worst errors\n\n")
    parts.append(_md_table(("video", "true", "predicted", "Jaccard"), [
        (w["name"], ", ".join(t["name"] for t in w["true"]),
         ", ".join(f"{p['name']} {p['score']:.2f}" for p in w["predicted"]) or "(none)", _fmt(w["jaccard"], 2))
        for w in analysis["worst"]]))
    if analysis["failures"]:
        parts.append("\n## Failed to decode\n\n")
        parts += [f"- {f['name']}: {f['error']}\n" for f in analysis["failures"]]
    return "".join(parts)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n"


def _html(analysis: dict) -> str:
    """report.html: summary, confusions by group, per-class table, heatmap and worst-error thumbnails."""
    e = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Bad-case analysis</title><style>",
             "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:.5em 0}",
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}figure{margin:1em 0}",
             "img{max-width:100%}.score{color:#666}</style></head><body>",
             "<h1>Bad-case analysis</h1>", _html_table(("metric", "value"), _summary_rows(analysis)),
             "<h2>Confusions by group</h2>"]
    grouped = _group_pair_rows(analysis)
    if not grouped:
        parts.append("<p>No confusions.</p>")
    for group, rows in grouped:
        parts += [f"<h3>{e(group)}</h3>", _html_table(PAIR_HEADER, rows)]
    parts += ["<h2>Confusion matrix</h2><img src='confusion.png' alt='confusion heatmap'>",
              "<h2>Per class</h2>", _html_table(CLASS_HEADER, _class_rows(analysis)),
              "<h2>Proposed groups (clustered by confusion)</h2><ol>"]
    parts += ["<li>" + e(", ".join(c["name"] for c in members)) + "</li>" for members in analysis["proposed_groups"]]
    parts.append("</ol><h2>Worst errors</h2>")
    for w in analysis["worst"]:
        true = ", ".join(t["name"] for t in w["true"])
        pred = ", ".join(f"{p['name']} ({p['score']:.2f})" for p in w["predicted"]) or "(none)"
        top = ", ".join(f"{p['name']} {p['score']:.2f}" for p in w["top5"])
        parts.append(f"<figure><img src='{e(w['image'])}' alt='{e(w['name'])}'><figcaption>"
                     f"<b>{e(w['name'])}</b> — true: {e(true)}; predicted: {e(pred)}; Jaccard {w['jaccard']:.2f}"
                     f"<br><span class='score'>top 5: {e(top)}</span></figcaption></figure>")
    if analysis["failures"]:
        parts.append("<h2>Failed to decode</h2><ul>")
        parts += [f"<li>{e(f['name'])}: {e(f['error'])}</li>" for f in analysis["failures"]]
        parts.append("</ul>")
    parts.append("</body></html>\n")
    return "".join(parts)
