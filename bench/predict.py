"""End-to-end prediction benchmark: video path -> labels, split by stage, one video at a time.

The competition's timing: everything from the path to the labels, decoding included, videos one
at a time, model loading excluded. Measured through `Classifier.predict` (the serving path) for the
CPU-fast student (`tsn_mobilenetv3` at 160 px, the shipped `mobilenet_cpu` config) against the
seed's net (`tsn_resnet50` at 224 px) in the same run, on the decoding benchmark's realistic corpus
(portrait 720x1280, 10-15 s, 3 keyframes decoded per video). Weights are random (no download
here): the time does not depend on them.

    python bench/predict.py [--videos 24] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from decode import machine, realistic_corpus  # bench/decode.py
from shortvid.data.labels import LabelMap
from shortvid.decode import FrameSpec
from shortvid.models import create_model
from shortvid.serve.classifier import Classifier
from shortvid.train.run import Preprocess, RunDir

MODELS = {  # name: (model, short side decoded, input crop)
    "student tsn_mobilenetv3 @160": ("tsn_mobilenetv3", 182, 160),
    "seed tsn_resnet50 @224": ("tsn_resnet50", 256, 224),
}


def make_run(root: Path, model_name: str, resize: int, crop: int) -> Path:
    labels = LabelMap.aichallenger2018()
    model = create_model(model_name, num_classes=len(labels))
    RunDir(root).write_inference(model, labels, Preprocess(FrameSpec(k=3, size=resize), crop, "sigmoid"))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = realistic_corpus(args.videos)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        classifiers = {label: Classifier.load(make_run(Path(folder) / str(i), *spec), device=args.device)
                       for i, (label, spec) in enumerate(MODELS.items())}
        for classifier in classifiers.values():  # warm-up: first calls allocate
            for path in paths[:2]:
                classifier.predict(path)
        stages: dict[str, dict[str, list[float]]] = {label: {} for label in classifiers}
        for _ in range(args.repeats):
            for path in paths:
                for label, classifier in classifiers.items():
                    for stage, ms in classifier.predict(path).timings.items():
                        stages[label].setdefault(stage, []).append(ms)
    for label, by_stage in stages.items():
        results[label] = {stage: round(statistics.median(ms), 2) for stage, ms in by_stage.items()}
    baseline = results["seed tsn_resnet50 @224"]["total"]
    report = {"machine": machine(), "device": args.device, "torch_threads": torch.get_num_threads(),
              "videos": len(paths), "repeats": args.repeats, "median_ms": results,
              "total_vs_seed_net": {label: round(r["total"] / baseline, 3) for label, r in results.items()}}
    print(json.dumps(report, indent=2))
    print("\n| model | decode | preprocess | model | total (ms/video) | × seed net |\n| --- | --- | --- | --- | --- | --- |")
    for label, r in results.items():
        print(f"| {label} | {r['decode']:.1f} | {r['preprocess']:.1f} | {r['model']:.1f} | {r['total']:.1f} | "
              f"{report['total_vs_seed_net'][label]:.2f} |")


if __name__ == "__main__":
    main()
