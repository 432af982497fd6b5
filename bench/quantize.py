"""Int8 and bf16 inference against fp32: model time per video and accuracy, per (backend, precision).

Baseline: fp32 on the same backend, in the same run. Prints each variant's accuracy as it is measured,
the report as JSON, the CPU's int8/bf16 features, then a Markdown table: per backend:precision, the
model stage's median (p95) ms/video, its ratio to fp32 on the same backend, mean Jaccard and its
change from fp32, top-1 hit and mAP.

For one trained run and a labelled split (default: val), every variant (``torch:fp32``,
``torch:bf16``, ``onnx:fp32``, ``onnx:int8`` (static, calibrated on the run's training frames),
``onnx:int8-dynamic`` by default) is measured twice:

- **accuracy**: ``evaluate_run(run, data, split, backend=, precision=)``, the serving path with the
  run's decision policy: mean Jaccard (the competition's accuracy), top-1 hit, mAP.
- **speed**: the model stage of ``Classifier.scores`` (the batch in, scores out; decoding and
  preprocessing are shared by every variant and left out), single stream, one video at a time, on
  the first ``--timing-videos`` videos decoded once; every variant runs on each video in turn
  (round-robin, so machine noise hits all alike), after a ``--settle-ms`` pause so the previous
  variant's spinning thread pool (ONNX Runtime's, OpenMP's) has gone idle.

The int8 files are made (``RUN/model.int8-static.onnx``, ``RUN/model.int8-dynamic.onnx``) before
anything is timed, when missing or older than the checkpoint; ``--calibration-videos`` remakes the
static one with that many training videos.

    python bench/quantize.py RUN --data DATA [--split val] [--limit N] [--timing-videos 50] [--repeats 3]
        [--variants torch:fp32,torch:bf16,onnx:fp32,onnx:int8,onnx:int8-dynamic] [--threads N] [--json out.json]
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch

from shortvid.data.annotations import load_dataset
from shortvid.errors import DecodeError
from shortvid.evaluate.runner import evaluate_run
from shortvid.infer.backends import check_backend
from shortvid.infer.classifier import Classifier
from shortvid.machine import cpu_features, describe
from shortvid.quantize import DEFAULT_CALIBRATION_VIDEOS, quantize_run

from common import make_parser, p95, write_json

DEFAULT_VARIANTS = "torch:fp32,torch:bf16,onnx:fp32,onnx:int8,onnx:int8-dynamic"


def parse_variants(text: str) -> list[tuple[str, str]]:
    variants = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        backend, _, precision = item.partition(":")
        precision = precision or "fp32"
        check_backend(backend, precision)
        variants.append((backend, precision))
    if not variants:
        raise ValueError("--variants: none given")
    return list(dict.fromkeys(variants))


def main() -> None:
    parser = make_parser(__doc__, data=False)
    parser.add_argument("run", type=Path, metavar="RUN")
    parser.add_argument("--data", required=True, help="the labelled dataset (any layout `shortvid evaluate` reads)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, default=None, help="accuracy on the first N videos only (default: all)")
    parser.add_argument("--timing-videos", type=int, default=50, help="videos timed (default: 50)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over those videos (default: 3)")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS,
                        help=f"comma-separated backend:precision pairs (default: {DEFAULT_VARIANTS})")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--settle-ms", type=float, default=100.0,
                        help="pause before each timed call (default: 100)")
    parser.add_argument("--calibration-videos", type=int, default=None,
                        help=f"remake RUN/model.int8-static.onnx calibrated on this many training videos "
                             f"(default: keep an up-to-date file, else make it with {DEFAULT_CALIBRATION_VIDEOS})")
    parser.add_argument("--no-accuracy", action="store_true", help="time only")
    args = parser.parse_args()
    try:
        variants = parse_variants(args.variants)
    except ValueError as error:
        parser.error(str(error))
    if args.threads:
        torch.set_num_threads(args.threads)

    made = {}
    if args.calibration_videos and ("onnx", "int8") in variants:
        started = time.perf_counter()
        quantize_run(args.run, "static", videos=args.calibration_videos)
        made["int8-static"] = round(time.perf_counter() - started, 1)
    # Loading makes missing or stale ONNX files: all of it before anything is timed.
    classifiers = {}
    for backend, precision in variants:
        started = time.perf_counter()
        classifiers[(backend, precision)] = Classifier.load(args.run, device=args.device, backend=backend,
                                                            precision=precision)
        made.setdefault(f"{backend}:{precision} load", round(time.perf_counter() - started, 1))
    files = {f"{b}:{p}": round(c.backend.path.stat().st_size / 2**20, 2)
             for (b, p), c in classifiers.items() if b == "onnx"}

    accuracy = {}
    if not args.no_accuracy:
        with tempfile.TemporaryDirectory() as folder:
            for backend, precision in variants:
                report = evaluate_run(args.run, args.data, args.split, device=args.device, limit=args.limit,
                                      out=Path(folder) / f"{backend}-{precision}.json", progress=False,
                                      backend=backend, precision=precision)
                accuracy[(backend, precision)] = {key: report[key] for key in
                                                  ("num_videos", "failed", "mean_jaccard", "top1_hit", "mAP")}
                print(f"accuracy {backend}:{precision}: mean Jaccard {report['mean_jaccard']:.4f} "
                      f"over {report['num_videos']} videos", flush=True)

    reader = next(iter(classifiers.values()))
    clips = []
    for sample in load_dataset(args.data, args.split, labels=reader.labels, on_error="skip").samples:
        if len(clips) >= args.timing_videos:
            break
        try:
            clips.append(reader.read(sample.path))
        except DecodeError:
            continue
    for classifier in classifiers.values():  # warm-up: first calls allocate
        for clip in clips[:2]:
            classifier.scores(clip)
    times: dict[tuple[str, str], list[float]] = {key: [] for key in classifiers}
    for _ in range(args.repeats):
        for clip in clips:
            for key, classifier in classifiers.items():  # round-robin: every variant on this video
                time.sleep(args.settle_ms / 1000)
                times[key].append(classifier.scores(clip)[1]["model"])

    median = {key: statistics.median(v) for key, v in times.items()}
    tail = {key: p95(v) for key, v in times.items()}
    rows = []
    for backend, precision in variants:
        key = (backend, precision)
        base = (backend, "fp32")
        row = {"variant": f"{backend}:{precision}", "model_ms_median": round(median[key], 2),
               "model_ms_p95": round(tail[key], 2),
               "speed_vs_fp32": round(median[key] / median[base], 3) if base in median else None}
        if key in accuracy:
            row.update(accuracy[key])
            if base in accuracy:
                row["jaccard_minus_fp32"] = round(accuracy[key]["mean_jaccard"] - accuracy[base]["mean_jaccard"], 4)
        rows.append(row)
    features = cpu_features()
    report = {"machine": describe(), "platform": platform.platform(), "cpu_features": features,
              "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
              "torch_threads": torch.get_num_threads(), "device": args.device, "run": str(args.run),
              "data": str(args.data), "split": args.split, "timing_videos": len(clips), "repeats": args.repeats,
              "calls_per_variant": len(clips) * args.repeats, "settle_ms": args.settle_ms,
              "onnx_file_mb": files, "setup_s": made, "rows": rows}
    print(json.dumps(report, indent=2))
    write_json(args.json, report)
    have = ", ".join(name for name, present in features.items() if present) or "unknown"
    print(f"\nCPU: {report['machine']['cpu']}; features: {have}; torch threads {torch.get_num_threads()}\n")
    print("| backend:precision | model ms/video median (p95) | × fp32, same backend | mean Jaccard | "
          "Δ vs fp32 | top-1 | mAP |\n| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        ratio = f"{row['speed_vs_fp32']:.2f}" if row["speed_vs_fp32"] is not None else "–"
        jaccard = f"{row['mean_jaccard']:.4f}" if "mean_jaccard" in row else "–"
        delta = f"{row['jaccard_minus_fp32']:+.4f}" if "jaccard_minus_fp32" in row else "–"
        top1 = f"{row['top1_hit']:.4f}" if "top1_hit" in row else "–"
        average = f"{row['mAP']:.4f}" if "mAP" in row else "–"
        print(f"| {row['variant']} | {row['model_ms_median']:.1f} ({row['model_ms_p95']:.1f}) | {ratio} | "
              f"{jaccard} | {delta} | {top1} | {average} |")


if __name__ == "__main__":
    main()
