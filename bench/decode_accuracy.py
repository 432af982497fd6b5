"""What cheaper decoding costs in accuracy: a trained run evaluated with each decode variant.

The decode variants that change pixels (`bench/decode.py --variants`) are faster; this measures
what they do to a trained model's answers on a labelled split: mean Jaccard, the share of videos
whose labels change against the default decode, and the mean decode time, per variant. The model
was trained on frames from the default decode, so this is the cost of switching at serving time.

    python bench/decode_accuracy.py RUN DATASET [--split val] [--limit N] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import numpy as np
from decode import machine  # bench/decode.py

from shortvid.data.annotations import load_dataset
from shortvid.decode import DEFAULT_TUNING
from shortvid.errors import DecodeError
from shortvid.metrics import mean_jaccard
from shortvid.serve.classifier import Classifier

VARIANTS = {  # name: (FrameSpec changes, reader tuning changes)
    "default": ({}, {}),
    "skip_loop_filter": ({"skip_loop_filter": True}, {}),
    "swscale FAST_BILINEAR": ({}, {"interpolation": "FAST_BILINEAR"}),
    "skip_loop_filter + FAST_BILINEAR": ({"skip_loop_filter": True}, {"interpolation": "FAST_BILINEAR"}),
}


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
    answers, report = {}, {}
    for name, (frame_changes, tuning_changes) in VARIANTS.items():
        spec = dataclasses.replace(classifier.preprocess.frames, **frame_changes)
        tuning = dataclasses.replace(DEFAULT_TUNING, **tuning_changes)
        predicted, decode_ms, failed = [], [], 0
        for sample in samples:
            try:
                clip = spec.read(sample.path, tuning=tuning)
            except DecodeError:
                predicted.append(())
                failed += 1
                continue
            decode_ms.append(clip.decode_ms)
            labels, _ = classifier.decide(classifier.scores(clip)[0])
            predicted.append(tuple(label.id for label in labels))
        answers[name] = predicted
        report[name] = {
            "mean_jaccard": round(mean_jaccard(predicted, targets), 4),
            "labels_changed": round(float(np.mean([a != b for a, b in zip(predicted, answers["default"])])), 4),
            "decode_ms_median": round(statistics.median(decode_ms), 2),
            "failed": failed,
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
