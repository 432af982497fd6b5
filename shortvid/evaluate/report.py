"""The bad-case report's rendering: ``summary.md`` and ``report.html`` from ``analysis.json``'s dict,
the confusion heatmap, the worst errors' frame strips, and the markdown and HTML tables other reports
use too (ABLATION.md). The analysis itself is ``shortvid.evaluate.analyze``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..plots import confusion_figure

THUMB_HEIGHT = 112


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def frame_strip(frames: np.ndarray, height: int = THUMB_HEIGHT):
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


def plot_confusion(matrix: np.ndarray, names: Sequence[str], order: list[int], sizes: list[int], path: Path) -> None:
    """``confusion_figure`` saved to ``path`` (PNG)."""
    fig = confusion_figure(matrix, names, order, sizes)  # checks that matplotlib is installed
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100)
    plt.close(fig)


def _summary_rows(analysis: dict) -> list[tuple[str, str]]:
    s = analysis["summary"]
    share = s["within_share"]
    return [
        ("run", analysis["run"]), ("dataset", f"{analysis['dataset']} ({analysis['split']})"),
        ("videos", str(s["videos"])), ("classified", str(s["classified"])), ("failed", str(s["failed"])),
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


MODALITY_HEADER = ("slice", "videos", "mean Jaccard")
_MODALITY_TITLES = {"kind": "class kind (what tells the classes apart)", "sound": "sound (what the video's audio was)"}


def _modality_rows(analysis: dict) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """Bad cases by modality: mean Jaccard by the classes' kind and by the sound's status, where known."""
    return [(_MODALITY_TITLES.get(name, name), [(key or "–", str(row["videos"]), _fmt(row["mean_jaccard"], 3))
                                                for key, row in slices.items()])
            for name, slices in analysis.get("by_modality", {}).items()]


def _md_cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def markdown_report(analysis: dict) -> str:
    """summary.md: the report's tables, without images."""
    parts = ["# Bad-case analysis\n\n", markdown_table(("metric", "value"), _summary_rows(analysis)),
             "\n## Confusions by group\n"]
    grouped = _group_pair_rows(analysis)
    if not grouped:
        parts.append("No confusions.\n")
    for group, rows in grouped:
        parts += [f"\n### {group}\n\n", markdown_table(PAIR_HEADER, rows)]
    for name, rows in _modality_rows(analysis):
        parts += [f"\n## By {name}\n\n", markdown_table(MODALITY_HEADER, rows)]
    parts += ["\n## Per class\n\n", markdown_table(CLASS_HEADER, _class_rows(analysis))]
    parts.append("\n## Proposed groups (clustered by confusion)\n\n")
    parts += [f"{i}. " + ", ".join(c["name"] for c in members) + "\n"
              for i, members in enumerate(analysis["proposed_groups"], 1)]
    parts.append("\n## Worst errors\n\n")
    parts.append(markdown_table(("video", "true", "predicted", "Jaccard"), [
        (w["name"], ", ".join(t["name"] for t in w["true"]),
         ", ".join(f"{p['name']} {p['score']:.2f}" for p in w["predicted"]) or "(none)", _fmt(w["jaccard"], 2))
        for w in analysis["worst"]]))
    if analysis["failures"]:
        parts.append("\n## Failed (the video, or the model on it)\n\n")
        parts += [f"- {f['name']}: {f['error']}\n" for f in analysis["failures"]]
    return "".join(parts)


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n"


def html_report(analysis: dict) -> str:
    """report.html: summary, confusions by group, per-class table, heatmap and worst-error thumbnails."""
    e = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Bad-case analysis</title><style>",
             "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:.5em 0}",
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}figure{margin:1em 0}",
             "img{max-width:100%}.score{color:#666}</style></head><body>",
             "<h1>Bad-case analysis</h1>", html_table(("metric", "value"), _summary_rows(analysis)),
             "<h2>Confusions by group</h2>"]
    grouped = _group_pair_rows(analysis)
    if not grouped:
        parts.append("<p>No confusions.</p>")
    for group, rows in grouped:
        parts += [f"<h3>{e(group)}</h3>", html_table(PAIR_HEADER, rows)]
    for name, rows in _modality_rows(analysis):
        parts += [f"<h2>By {e(name)}</h2>", html_table(MODALITY_HEADER, rows)]
    parts += ["<h2>Confusion matrix</h2><img src='confusion.png' alt='confusion heatmap'>",
              "<h2>Per class</h2>", html_table(CLASS_HEADER, _class_rows(analysis)),
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
        parts.append("<h2>Failed (the video, or the model on it)</h2><ul>")
        parts += [f"<li>{e(f['name'])}: {e(f['error'])}</li>" for f in analysis["failures"]]
        parts.append("</ul>")
    parts.append("</body></html>\n")
    return "".join(parts)
