"""What cheaper decoding costs in accuracy: a trained run evaluated with each decode variant.

The decode variants that change pixels (`bench/decode.py --variants`) are faster; this measures
what they do to a trained model's answers on a labelled split: mean Jaccard, the share of videos
whose labels change against the default decode, and the mean decode time, per variant. The model
was trained on frames from the default decode, so this is the cost of switching at serving time.

    python bench/decode_accuracy.py RUN DATASET [--split val] [--limit N] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
from pathlib import Path

import numpy as np
from decode import machine  # bench/decode.py

from shortvid.data.annotations import load_dataset
from shortvid.decode import reader
from shortvid.metrics import mean_jaccard
from shortvid.serve.batch import classify_many
from shortvid.serve.classifier import Classifier

VARIANTS = {  # name: (FrameSpec changes, reader tuning changes)
    "default": ({}, {}),
    "skip_loop_filter": ({"skip_loop_filter": True}, {}),
    "swscale FAST_BILINEAR": ({}, {"interpolation": "FAST_BILINEAR"}),
    "skip_loop_filter + FAST_BILINEAR": ({"skip_loop_filter": True}, {"interpolation": "FAST_BILINEAR"}),
}


@contextlib.contextmanager
def tuning(changes: dict):
    saved = reader._TUNING
    reader._TUNING = dataclasses.replace(saved, **changes)
    try:
        yield
    finally:
        reader._TUNING = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    classifier = Classifier.load(args.run, device="cpu")
    samples = load_dataset(args.dataset, args.split, labels=classifier.labels).samples[:args.limit]
    targets = np.zeros((len(samples), len(classifier.labels)), dtype=np.int8)
    for row, sample in enumerate(samples):
        targets[row, list(sample.labels)] = 1
    spec = classifier.preprocess.frames
    answers, report = {}, {}
    for name, (frame_changes, tuning_changes) in VARIANTS.items():
        classifier.preprocess = dataclasses.replace(
            classifier.preprocess, frames=dataclasses.replace(spec, **frame_changes))
        with tuning(tuning_changes):
            # one decode thread: decode times are then per-video times, comparable across variants
            outcomes = list(classify_many(classifier, [s.path for s in samples], batch_size=16, workers=1))
        predicted = [tuple(o.prediction.ids) if o.error is None else () for o in outcomes]
        answers[name] = predicted
        report[name] = {
            "mean_jaccard": round(mean_jaccard(predicted, targets), 4),
            "labels_changed": round(float(np.mean([a != b for a, b in zip(predicted, answers["default"])])), 4),
            "decode_ms_median": round(statistics.median(
                o.prediction.timings["decode"] for o in outcomes if o.error is None), 2),
            "failed": sum(o.error is not None for o in outcomes),
        }
    base = report["default"]["decode_ms_median"]
    for values in report.values():
        values["decode_x_default"] = round(values["decode_ms_median"] / base, 2)
    result = {"machine": machine(), "run": str(args.run), "dataset": str(args.dataset), "split": args.split,
              "videos": len(samples), "variants": report}
    print(json.dumps(result, indent=2))
    print("\n| decode | mean Jaccard | labels changed | decode ms (median) | × default |\n| --- | --- | --- | --- | --- |")
    for name, values in report.items():
        print(f"| {name} | {values['mean_jaccard']:.4f} | {values['labels_changed']:.1%} | "
              f"{values['decode_ms_median']:.1f} | {values['decode_x_default']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
