"""Batch prediction throughput: one video at a time against the pipelined `classify_many`.

Baseline: `Classifier.predict` in a loop (decode, then model, one video after another), in the same
run. Prints the report as JSON, then a Markdown table: per way, videos/s, its ratio to the baseline,
and ms/video per stage (decode summed over threads; `wait` is the model thread idle, waiting for
decodes; preprocess; model).

The pipelined ways run `classify_many`: decode threads run ahead while the calling thread runs the
model on batches. Every way classifies the same videos (a generated corpus, `--corpus`, default
realistic-720: portrait 720x1280, 10-15 s); the ways alternate pass after pass so machine noise hits
them alike; medians over `--repeats` passes. Without `--run`, a randomly initialised CPU-fast
student (`tsn_mobilenetv3` at 160 px) is used: throughput does not depend on the weights.
`--compare-spinning` adds every way again with ONNX Runtime's spinning pool threads, interleaved.

    python bench/pipeline.py [--run RUN] [--videos 48] [--repeats 3] [--backend auto|torch|onnx]
                             [--corpus real-shaped] [--device cuda] [--compare-spinning] [--json out.json]
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from shortvid.infer.backends import BACKENDS
from shortvid.infer.batch import PipelineStats, classify_many
from shortvid.infer.classifier import Classifier

from common import add_corpus_argument, corpus, machine, make_parser, make_run, write_json

WAYS = {  # name: (batch size, decode threads); batch 0 is the one-at-a-time baseline
    "one at a time (predict loop)": (0, 0),
    "pipelined, batch 1, 1 decode thread": (1, 1),
    "pipelined, batch 8, 1 decode thread": (8, 1),
    "pipelined, batch 8, 2 decode threads": (8, 2),
    "pipelined, batch 16, 2 decode threads": (16, 2),
}
BASELINE = "one at a time (predict loop)"


def one_at_a_time(classifier: Classifier, paths: list[Path]) -> dict:
    stages = {"decode": 0.0, "wait": 0.0, "preprocess": 0.0, "model": 0.0}
    started = time.perf_counter()
    for path in paths:
        timings = classifier.predict(path).timings
        for stage in ("decode", "preprocess", "model"):
            stages[stage] += timings[stage]
    wall = time.perf_counter() - started
    stages["wait"] = stages["decode"]  # the model waits for every decode
    return {"videos_per_s": len(paths) / wall, "ms_per_video": {k: v / len(paths) for k, v in stages.items()}}


def pipelined(classifier: Classifier, paths: list[Path], batch: int, workers: int) -> dict:
    stats = PipelineStats()
    for outcome in classify_many(classifier, paths, batch_size=batch, workers=workers, stats=stats):
        if outcome.error is not None:
            raise outcome.error
    summary = stats.to_dict()
    return {"videos_per_s": stats.videos_per_s, "ms_per_video": summary["ms_per_video"]}


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--run", type=Path, default=None, help="a trained run (default: random CPU-fast student)")
    add_corpus_argument(parser)
    parser.add_argument("--videos", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", choices=BACKENDS, default="auto")
    parser.add_argument("--device", default="cpu", help="where the model runs (cpu, cuda)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--compare-spinning", action="store_true",
                        help="onnx: also run every way with ORT's spinning pool threads (its default), interleaved")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    paths = corpus(args.corpus, args.videos)
    with tempfile.TemporaryDirectory() as scratch:
        run = args.run or make_run(Path(scratch) / "student")
        classifier = Classifier.load(run, device=args.device, backend=args.backend)
        classifiers = {"": classifier}
        if args.compare_spinning and classifier.backend.name == "onnx":
            classifiers[", ORT threads spinning"] = Classifier.load(run, device=args.device, backend="onnx", spin=True)
        ways = {name + suffix: (batch, workers, made) for name, (batch, workers) in WAYS.items()
                for suffix, made in classifiers.items()}
        for made in classifiers.values():
            for path in paths[:4]:  # warm-up: page cache, allocator, thread pools
                made.predict(path)
        results: dict[str, list[dict]] = {name: [] for name in ways}
        for _ in range(args.repeats):
            for name, (batch, workers, made) in ways.items():
                results[name].append(one_at_a_time(made, paths) if batch == 0
                                     else pipelined(made, paths, batch, workers))

    def median(name: str, key: str, stage: str | None = None) -> float:
        values = [r[key][stage] if stage else r[key] for r in results[name]]
        return statistics.median(values)

    base = median(BASELINE, "videos_per_s")  # shortvid's session; the spinning rows are ratios to it too
    report = {
        "machine": machine(),
        "torch_threads": torch.get_num_threads(),
        "backend": classifier.backend.name,
        "device": args.device,
        "run": str(args.run) if args.run else "random tsn_mobilenetv3 @160",
        "corpus": args.corpus,
        "videos": len(paths),
        "repeats": args.repeats,
        "ways": {name: {
            "videos_per_s": round(median(name, "videos_per_s"), 2),
            "x_baseline": round(median(name, "videos_per_s") / base, 2),
            "ms_per_video": {stage: round(median(name, "ms_per_video", stage), 2)
                             for stage in ("decode", "wait", "preprocess", "model")},
        } for name in ways},
    }
    print(json.dumps(report, indent=2))
    print("\n| way | videos/s | × one at a time | decode | wait | preprocess | model (ms/video) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, way in report["ways"].items():
        ms = way["ms_per_video"]
        print(f"| {name} | {way['videos_per_s']:.1f} | {way['x_baseline']:.2f} | {ms['decode']:.1f} | "
              f"{ms['wait']:.1f} | {ms['preprocess']:.1f} | {ms['model']:.1f} |")
    write_json(args.json, report)


if __name__ == "__main__":
    main()
