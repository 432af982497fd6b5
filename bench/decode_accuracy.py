"""What cheaper decoding costs in accuracy: a trained run evaluated with each decode variant.

Baseline: the default decode (bilinear swscale on the deblocked keyframe), in the same run. Prints
the report as JSON, then a Markdown table: per variant, the mean Jaccard, the share of videos whose
labels change against the default decode, the median decode ms/video and its ratio to the default.

The decode variants that change pixels (`bench/decode.py --variants`) are faster; this measures what
they do to a trained model's answers on a labelled split (RUN's classifier, DATASET in any layout
`shortvid evaluate` reads). The model was trained on frames from the default decode, so this is the
cost of switching at serving time.

    python bench/decode_accuracy.py RUN DATASET [--split val] [--limit N] [--json out.json]
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

import numpy as np

from shortvid.data.annotations import load_dataset
from shortvid.decode import DEFAULT_TUNING, read_frames
from shortvid.errors import DecodeError
from shortvid.infer.classifier import Classifier
from shortvid.metrics import mean_jaccard

from common import machine, make_parser, write_json

VARIANTS = {  # name: (FrameSpec changes, reader tuning changes)
    "default": ({}, {}),
    "skip_loop_filter": ({"skip_loop_filter": True}, {}),
    "swscale FAST_BILINEAR": ({}, {"interpolation": "FAST_BILINEAR"}),
    "skip_loop_filter + FAST_BILINEAR": ({"skip_loop_filter": True}, {"interpolation": "FAST_BILINEAR"}),
}


def main() -> None:
    parser = make_parser(__doc__, data=False)
    parser.add_argument("run", type=Path)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, default=None)
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
                clip = read_frames(sample.path, spec, tuning=tuning)
            except DecodeError:
                predicted.append(())
                failed += 1
                continue
            decode_ms.append(clip.decode_ms)
            labels, _ = classifier.decide(classifier.scores(clip)[0])
            predicted.append(tuple(label.id for label in labels))
        answers[name] = predicted
        changed = [a != b for a, b in zip(predicted, answers["default"], strict=True)]
        report[name] = {
            "mean_jaccard": round(mean_jaccard(predicted, targets), 4),
            "labels_changed": round(float(np.mean(changed)), 4),
            "decode_ms_median": round(statistics.median(decode_ms), 2),
            "failed": failed,
        }
    base = report["default"]["decode_ms_median"]
    for values in report.values():
        values["decode_x_default"] = round(values["decode_ms_median"] / base, 2)
    result = {"machine": machine(), "run": str(args.run), "dataset": str(args.dataset), "split": args.split,
              "videos": len(samples), "variants": report}
    print(json.dumps(result, indent=2))
    print("\n| decode | mean Jaccard | labels changed | decode ms (median) | × default |\n"
          "| --- | --- | --- | --- | --- |")
    for name, values in report.items():
        print(f"| {name} | {values['mean_jaccard']:.4f} | {values['labels_changed']:.1%} | "
              f"{values['decode_ms_median']:.1f} | {values['decode_x_default']:.2f} |")
    write_json(args.json, result)


if __name__ == "__main__":
    main()
