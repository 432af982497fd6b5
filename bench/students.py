"""The student's backbone: timm's fast CPU nets as TSN students, ms/video and accuracy on `bench`.

Baseline: the current default student (``tsn_mobilenetv3`` = mobilenetv3_large_100 at 160 px), in
the same run. Prints, for ``--time``, a Markdown table: per candidate, parameters (M), the model
stage's median ms/video in ONNX Runtime and its ratio to the default; for ``--train``, each
candidate's mean Jaccard as it finishes, then (with timings from this run or ``--time-json``) the
Pareto table: time, accuracy, the change from the default and whether the row is on the front.

Two phases, each resumable:

- ``--time``: every candidate (a timm backbone at an input size) becomes a 3-frame TSN with the
  `bench` preset's classes, is exported to ONNX (``shortvid.export.export_model``) and timed in ONNX
  Runtime with shortvid's session (``OnnxBackend``), one video ``[1, 3, 3, S, S]`` per call. Rounds go
  over the candidates in a new shuffled order, one session alive at a time, so the machine's noise
  hits them alike. Weights are random: time does not depend on them.
- ``--train``: the chosen candidates are trained the same way as the default student (the
  ``mobilenet_cpu`` config: AdamW, BCE, the same epochs, frames cached at short side
  ``size * 182/160``; from scratch, or from timm's ImageNet weights with ``--pretrained``) and
  evaluated on the `bench` validation split through the serving path (``evaluate_run``, mean
  Jaccard). Each run is kept under ``--out``; a finished one is not redone.

    python bench/students.py --time [--rounds 8 --runs 15]
    python bench/students.py --train --data DATA --candidates lcnet_100@160,mobilenetv3_large_075@144 [--epochs 12]

DATA is a `bench` preset corpus (`shortvid synth DATA --preset bench`).
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from shortvid.export import INPUT_NAME, export_model
from shortvid.machine import describe
from shortvid.models import create_model

from common import DATA, make_parser, write_json

FRAMES, CLASSES = 3, 63
BASELINE = "mobilenetv3_large_100@160"
RESIZE_RATIO = 182 / 160  # the default student's short side over its crop
CANDIDATES = (
    "mobilenetv3_large_100@160", "mobilenetv3_large_100@128", "mobilenetv3_large_075@160",
    "mobilenetv3_large_075@128", "mobilenetv3_small_100@160", "mobilenetv3_small_075@160",
    "mobilenetv4_conv_small@160", "mobilenetv4_conv_small@128", "mobilenetv4_conv_small_050@160",
    "lcnet_100@160", "lcnet_075@160", "lcnet_050@160", "ghostnet_100@160", "ghostnet_050@160",
    "repghostnet_100@160", "efficientvit_m0@160", "efficientvit_m1@160", "fastvit_t8@160",
    "mnasnet_small@160", "tinynet_e@160", "regnetx_002@160", "mobileone_s0@160",
)


def parse(candidate: str) -> tuple[str, int]:
    """``name@size`` → (timm backbone, input size)."""
    name, _, size = candidate.partition("@")
    return name, int(size or 160)


def onnx_session(path: str):
    """The session shortvid serves with (``OnnxBackend``), on the CPU."""
    from shortvid.infer.backends import OnnxBackend

    return OnnxBackend(path, torch.device("cpu")).session


def time_candidates(candidates: list[str], rounds: int, runs: int) -> dict:
    """Median ms per video for each candidate, rounds over them in shuffled orders."""
    rng = np.random.default_rng(0)
    made, params, times = {}, {}, {c: [] for c in candidates}
    folder = tempfile.mkdtemp(prefix="students-")
    for candidate in candidates:
        name, size = parse(candidate)
        torch.manual_seed(0)
        try:
            model = create_model("tsn", backbone=name, num_classes=CLASSES, pretrained=False).eval()
            path = export_model(model, Path(folder) / f"{candidate}.onnx", size)
        except Exception as error:  # noqa: BLE001 - a backbone that does not build or export is reported, not fatal
            print(f"skipped {candidate}: {type(error).__name__}: {error}", flush=True)
            times.pop(candidate)
            continue
        made[candidate] = (str(path), rng.standard_normal((1, FRAMES, 3, size, size)).astype(np.float32))
        params[candidate] = sum(p.numel() for p in model.parameters()) / 1e6
    order = list(made)
    for _ in range(rounds):
        random.Random(len(times[order[0]])).shuffle(order)
        for candidate in order:
            path, frames = made[candidate]
            session = onnx_session(path)
            for _ in range(3):
                session.run(None, {INPUT_NAME: frames})
            for _ in range(runs):
                started = time.perf_counter()
                session.run(None, {INPUT_NAME: frames})
                times[candidate].append((time.perf_counter() - started) * 1000)
            del session
    base = statistics.median(times[BASELINE]) if BASELINE in times else None
    rows = {}
    for candidate, values in times.items():
        median = statistics.median(values)
        rows[candidate] = {"ms": median, "params_m": params[candidate],
                           "ratio": median / base if base else None}
    return rows


def cache_for(data: Path, size: int, root: Path) -> Path:
    """The frame cache of ``data`` at the short side the default student's ratio gives ``size``
    (182/160), extracted once."""
    resize = round(size * RESIZE_RATIO)
    cache = root / f"cache{resize}"
    if not (cache / "cache.json").exists():
        subprocess.run([sys.executable, "-m", "shortvid", "extract", str(data), "--out", str(cache),
                        "--size", str(resize), "--quiet"], check=True)
    return cache


def train_candidate(candidate: str, data: Path, root: Path, epochs: int, pretrained: bool = False) -> dict:
    """Train one candidate with the default student's recipe, evaluate it on the validation split."""
    from shortvid.evaluate.runner import evaluate_run

    name, size = parse(candidate)
    run = root / "runs" / candidate.replace("@", "-")
    result_file = run / "student.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    cache = cache_for(data, size, root)
    started = time.perf_counter()
    if not (run / "best.pt").exists():
        subprocess.run([sys.executable, "-m", "shortvid", "train", "--config", "mobilenet_cpu",
                        "model.name=tsn", f"model.args.backbone={name}", f"model.pretrained={str(pretrained).lower()}",
                        f"data.input_size={size}", f"data.resize={round(size * RESIZE_RATIO)}",
                        f"data.dataset={data}", f"data.cache={cache}", f"optim.epochs={epochs}", f"out={run}"],
                       check=True)
    trained_s = time.perf_counter() - started
    report = evaluate_run(run, data, "val", backend="onnx", progress=False)
    result = {"candidate": candidate, "epochs": epochs, "pretrained": pretrained, "train_s": trained_s,
              "mean_jaccard": report["mean_jaccard"], "top1": report["top1_hit"], "map": report["mAP"]}
    result_file.write_text(json.dumps(result, indent=2))
    return result


def print_pareto(timed: dict, trained: dict) -> None:
    """Time and accuracy of each trained candidate; a row is on the Pareto front when no other is both
    faster and more accurate."""
    rows = [(c, timed[c], trained[c]) for c in trained if c in timed]
    base = trained.get(BASELINE, {}).get("mean_jaccard")
    print("| student backbone @ px | params (M) | model ms/video | × default | mean Jaccard | Δ vs default | "
          "Pareto front |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for candidate, time_row, train_row in sorted(rows, key=lambda row: row[1]["ms"]):
        front = not any(other[1]["ms"] < time_row["ms"] and other[2]["mean_jaccard"] > train_row["mean_jaccard"]
                        for other in rows)
        delta = f"{train_row['mean_jaccard'] - base:+.3f}" if base is not None else ""
        print(f"| {candidate} | {time_row['params_m']:.2f} | {time_row['ms']:.2f} | {time_row['ratio']:.2f} | "
              f"{train_row['mean_jaccard']:.3f} | {delta} | {'yes' if front else ''} |")


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--time", action="store_true", help="time every candidate's model stage")
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--train", action="store_true", help="train and evaluate each candidate on --data")
    parser.add_argument("--data", type=Path, default=None, help="the `bench` corpus (shortvid synth --preset bench)")
    parser.add_argument("--out", type=Path, default=DATA / "students",
                        help="where the trained runs and their frame caches are kept (default: the data folder)")
    parser.add_argument("--epochs", type=int, default=12, help="the default student's recipe: 12 epochs")
    parser.add_argument("--pretrained", action="store_true",
                        help="start from timm's ImageNet weights (needs the hub; default: from scratch)")
    parser.add_argument("--time-json", type=Path, default=None,
                        help="with --train: the --json of an earlier --time run, for the Pareto table")
    args = parser.parse_args()
    candidates = [c for c in args.candidates.split(",") if c]
    result: dict = {"machine": describe()}
    if args.time:
        rows = time_candidates(candidates, args.rounds, args.runs)
        result["time"] = rows
        print("| student backbone @ px | params (M) | model ms/video (ONNX Runtime) | × default |")
        print("| --- | --- | --- | --- |")
        for candidate, row in sorted(rows.items(), key=lambda item: item[1]["ms"]):
            print(f"| {candidate} | {row['params_m']:.2f} | {row['ms']:.2f} | {row['ratio']:.2f} |")
    if args.train:
        if args.data is None:
            parser.error("--train needs --data")
        trained = {}
        for candidate in candidates:
            trained[candidate] = train_candidate(candidate, args.data, args.out, args.epochs, args.pretrained)
            row = trained[candidate]
            print(f"{candidate}: mean Jaccard {row['mean_jaccard']:.4f}, trained in {row['train_s'] / 60:.1f} min",
                  flush=True)
        result["train"] = trained
        timed = result.get("time") or (json.loads(args.time_json.read_text())["time"] if args.time_json else None)
        if timed:
            print_pareto(timed, trained)
    write_json(args.json, result)


if __name__ == "__main__":
    main()
