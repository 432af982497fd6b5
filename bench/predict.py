"""End-to-end prediction, video path -> labels, split by stage, one video at a time: the CPU-fast
student against the seed's net, and (`--backends torch,onnx`) ONNX Runtime against PyTorch.

Baseline: the seed's net (`tsn_resnet50` at 224 px) and, with two backends, PyTorch eager, in the same
run. Prints the report as JSON (machine, settings, median and p95 ms/video per stage for every (model,
backend) pair, each total as a ratio to the seed's net on the same backend, onnx / torch per stage),
then Markdown tables of the same.

The competition's timing: everything from the path to the labels, decoding included, videos one at
a time, model loading excluded. Measured through `Classifier.predict` (the serving path) for the
CPU-fast student (`tsn_mobilenetv3` at 160 px, the shipped `mobilenet_cpu` config; or a trained run,
`--student`) on a generated corpus (`--corpus`, default realistic-720: portrait 720x1280, 10-15 s;
3 keyframes decoded per video). Weights are random unless `--student` is given: the time does not
depend on them. Each model is loaded once per backend (the ONNX export happens at load, before any
timing), and every (model, backend) pair runs round-robin on each video after a `--settle-ms` pause,
so machine noise hits them alike.

ONNX Runtime sessions are loaded as `shortvid predict` and the competition kit load them, with
spinning pool threads (`Classifier.load(spin=True)`); `--no-spin` loads shortvid's default session
instead, whose threads sleep (the service's, `classify_many`'s).

    python bench/predict.py [--videos 24] [--repeats 3] [--threads N] [--backends torch,onnx] [--no-spin]
                            [--student RUN] [--no-seed] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from shortvid.infer.backends import BACKENDS
from shortvid.infer.classifier import Classifier
from shortvid.machine import describe

from common import MODELS, SEED, STUDENT, add_corpus_argument, corpus, machine, make_parser, make_run, p95, write_json

STAGES = ("decode", "preprocess", "model", "total")


def main() -> None:
    parser = make_parser(__doc__)
    add_corpus_argument(parser)
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--no-seed", action="store_true", help="time the student only, not the seed's ResNet50")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backends", default="torch",
                        help=f"comma-separated model backends to compare, of {', '.join(BACKENDS)} (default: torch)")
    parser.add_argument("--settle-ms", type=float, default=100.0,
                        help="pause before each timed call, so the previous backend's spinning thread pool "
                             "(ONNX Runtime's, OpenMP's) has gone idle and does not slow the next (default: 100)")
    parser.add_argument("--spin", action=argparse.BooleanOptionalAction, default=True,
                        help="onnx: ONNX Runtime's pool threads spin between runs, as `shortvid predict` loads "
                             "them; --no-spin: they sleep, shortvid's default session (default: --spin)")
    parser.add_argument("--student", type=Path, default=None,
                        help="a trained run to time as the student (default: random tsn_mobilenetv3 weights)")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        parser.error(f"--backends: unknown {unknown} (choose from {', '.join(BACKENDS)})")
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = corpus(args.corpus, args.videos)
    models = [label for label in MODELS if not (args.no_seed and label == SEED)]
    with tempfile.TemporaryDirectory() as folder:
        runs = {label: make_run(Path(folder) / str(i), label) for i, label in enumerate(models)}
        if args.student:
            runs[STUDENT] = args.student
        # Loading exports model.onnx for the onnx backend: done here, before any timing.
        classifiers = {(label, backend): Classifier.load(run, device=args.device, backend=backend, spin=args.spin)
                       for label, run in runs.items() for backend in backends}
        providers = {f"{label} / {backend}": list(getattr(c.backend, "providers", ())) or str(c.device)
                     for (label, backend), c in classifiers.items()}
        for classifier in classifiers.values():  # warm-up: first calls allocate
            for path in paths[:2]:
                classifier.predict(path)
        times: dict[tuple[str, str], dict[str, list[float]]] = {key: {} for key in classifiers}
        for _ in range(args.repeats):
            for path in paths:
                for key, classifier in classifiers.items():  # round-robin: every pair on this video
                    time.sleep(args.settle_ms / 1000)
                    for stage, ms in classifier.predict(path).timings.items():
                        times[key].setdefault(stage, []).append(ms)
    median = {key: {s: round(statistics.median(v), 2) for s, v in by.items()} for key, by in times.items()}
    tail = {key: {s: round(p95(v), 2) for s, v in by.items()} for key, by in times.items()}
    ratios = {label: {s: round(median[(label, "onnx")][s] / median[(label, "torch")][s], 3) for s in STAGES}
              for label in models if {"torch", "onnx"} <= set(backends)}
    ratios_p95 = {label: round(tail[(label, "onnx")]["total"] / tail[(label, "torch")]["total"], 3)
                  for label in ratios}
    vs_seed = {f"{label} / {backend}": round(median[(label, backend)]["total"] / median[(SEED, backend)]["total"], 3)
               if SEED in models else None for label, backend in classifiers}
    report = {"machine": machine(), "describe": describe(), "corpus": args.corpus, "device": args.device,
              "student": str(args.student or "random weights"),
              "torch_threads": torch.get_num_threads(), "videos": len(paths), "repeats": args.repeats,
              "calls_per_pair": len(paths) * args.repeats, "settle_ms": args.settle_ms, "spin": args.spin,
              "backends": backends, "providers": providers,
              "median_ms": {f"{label} / {backend}": r for (label, backend), r in median.items()},
              "p95_ms": {f"{label} / {backend}": r for (label, backend), r in tail.items()},
              "total_vs_seed_net_same_backend": vs_seed,
              "onnx_over_torch_median": ratios, "onnx_over_torch_p95_total": ratios_p95}
    print(json.dumps(report, indent=2))
    write_json(args.json, report)
    print("\nmedian ms/video (p95 in brackets)\n")
    print("| model | backend | decode | preprocess | model | total | total p95 | × seed net (same backend) |"
          "\n| --- | --- | --- | --- | --- | --- | --- | --- |")
    for (label, backend), r in median.items():
        t = tail[(label, backend)]
        print(f"| {label} | {backend} | {r['decode']:.1f} ({t['decode']:.1f}) | {r['preprocess']:.1f} "
              f"({t['preprocess']:.1f}) | {r['model']:.1f} ({t['model']:.1f}) | **{r['total']:.1f}** | "
              f"{t['total']:.1f} | {vs_seed[f'{label} / {backend}'] or float('nan'):.2f} |")
    if ratios:
        print("\n| model | onnx ÷ torch: decode | preprocess | model | total (median) | total (p95) |"
              "\n| --- | --- | --- | --- | --- | --- |")
        for label, r in ratios.items():
            print(f"| {label} | {r['decode']:.2f} | {r['preprocess']:.2f} | {r['model']:.2f} | **{r['total']:.2f}** | "
                  f"{ratios_p95[label]:.2f} |")


if __name__ == "__main__":
    main()
