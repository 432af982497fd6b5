"""End-to-end prediction benchmark: video path -> labels, split by stage, one video at a time.

The competition's timing: everything from the path to the labels, decoding included, videos one
at a time, model loading excluded. Measured through `Classifier.predict` (the serving path) for the
CPU-fast student (`tsn_mobilenetv3` at 160 px, the shipped `mobilenet_cpu` config) against the
seed's net (`tsn_resnet50` at 224 px) in the same run, on the decoding benchmark's realistic corpus
(portrait 720x1280, 10-15 s, 3 keyframes decoded per video). Weights are random (no download
here): the time does not depend on them.

`--backends torch,onnx` also compares the model backends: each model is loaded once per backend
(PyTorch eager, and ONNX Runtime on the run's exported `model.onnx`; the export happens at load,
before any timing), and every (model, backend) pair runs round-robin on each video, so machine
noise hits them alike. The report gives median and p95 ms/video per stage and, per model, the
ratio onnx / torch.

ONNX Runtime sessions are loaded as `shortvid predict` and the competition kit load them, with
spinning pool threads (`Classifier.load(spin=True)`); `--no-spin` loads shortvid's default session
instead, whose threads sleep (the service's, `classify_many`'s).

    python bench/predict.py [--videos 24] [--repeats 3] [--threads N] [--backends torch,onnx] [--no-spin]
                            [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from decode import add_corpus_argument, corpus, machine  # bench/decode.py

from shortvid.backends import BACKENDS
from shortvid.data.labels import LabelMap
from shortvid.decode import FrameSpec
from shortvid.machine import describe
from shortvid.models import create_model
from shortvid.run import Preprocess, RunDir
from shortvid.serve.classifier import Classifier

MODELS = {  # name: (model, short side decoded, input crop)
    "student tsn_mobilenetv3 @160": ("tsn_mobilenetv3", 182, 160),
    "seed tsn_resnet50 @224": ("tsn_resnet50", 256, 224),
}
SEED = "seed tsn_resnet50 @224"
STUDENT = "student tsn_mobilenetv3 @160"
STAGES = ("decode", "preprocess", "model", "total")


def make_run(root: Path, model_name: str, resize: int, crop: int) -> Path:
    labels = LabelMap.aichallenger2018()
    model = create_model(model_name, num_classes=len(labels))
    RunDir(root).write_inference(model, labels, Preprocess(FrameSpec(k=3, size=resize), crop, "sigmoid"))
    return root


def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        parser.error(f"--backends: unknown {unknown} (choose from {', '.join(BACKENDS)})")
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = corpus(args.corpus, args.videos)
    models = {label: spec for label, spec in MODELS.items() if not (args.no_seed and label == SEED)}
    with tempfile.TemporaryDirectory() as folder:
        runs = {label: make_run(Path(folder) / str(i), *spec) for i, (label, spec) in enumerate(models.items())}
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
    report = {"machine": machine(), "describe": describe(), "corpus": args.corpus, "device": args.device, "student": str(args.student or "random weights"),
              "torch_threads": torch.get_num_threads(), "videos": len(paths), "repeats": args.repeats,
              "calls_per_pair": len(paths) * args.repeats, "settle_ms": args.settle_ms, "spin": args.spin,
              "backends": backends, "providers": providers,
              "median_ms": {f"{label} / {backend}": r for (label, backend), r in median.items()},
              "p95_ms": {f"{label} / {backend}": r for (label, backend), r in tail.items()},
              "total_vs_seed_net_same_backend": vs_seed,
              "onnx_over_torch_median": ratios, "onnx_over_torch_p95_total": ratios_p95}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
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
