"""Training throughput with one and with several processes (torchrun + DDP, gloo on the CPU).

Baseline: the first count of `--processes` (default: 1, the plain path: `python -m shortvid train`,
no process group), in the same run. Prints the settings, the machine and a Markdown table: per
process count, threads each, videos a step, steps an epoch, steps/s, videos/s and its ratio to the
baseline (best repeat), and the median videos/s with its ratio.

The same corpus (the `tiny` preset, `--videos` videos, generated once), frame cache and config train
once as one process and once per process count under torchrun (`torchrun --nproc-per-node N -m
shortvid train`); the cores are shared out (one process: all of them; N: cores / N threads each),
each process takes batches of `--batch`, so N processes take N x batch videos a step. Timed: the
epochs' training steps alone (`train_seconds` in metrics.jsonl, validation and start-up left out),
the first epoch dropped as warm-up; the counts alternate repeat after repeat so machine noise hits
them alike. The best repeat is the steadiest figure on a shared machine (noise only slows a run).

    python bench/ddp.py [--processes 1,2] [--videos 120] [--epochs 3] [--batch 8] [--repeats 2] [--json out.json]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from shortvid.data.annotations import load_dataset
from shortvid.data.cache import extract
from shortvid.decode import FrameSpec
from shortvid.evaluate.report import markdown_table
from shortvid.machine import describe
from shortvid.synth.corpus import preset

from common import DATA, generated, make_parser, write_json

RESIZE, INPUT = 128, 112  # the tiny config's


def corpus(videos: int) -> tuple[Path, Path]:
    """A `tiny`-preset corpus of ``videos`` videos and its frame cache, made once in the data folder."""
    root, cache = DATA / "ddp" / f"tiny-{videos}", DATA / "ddp" / f"tiny-{videos}-cache"
    generated(f"ddp/tiny-{videos}", preset("tiny", seed=0, num_videos=videos), progress=False)
    names = [(s.name, s.path) for split in ("train", "val") for s in load_dataset(root, split)]
    extract(names, cache, FrameSpec(k=3, size=RESIZE), workers=os.cpu_count() or 1, progress=False)  # resumable
    return root, cache


def train_once(processes: int, data: Path, cache: Path, out: Path, epochs: int, batch: int) -> dict:
    """One training run; its steps a process and epoch, and the training seconds of the timed epochs."""
    cores = os.cpu_count() or 1
    overrides = [f"data.dataset={data}", f"data.cache={cache}", f"out={out}", "progress=false", "data.workers=0",
                 f"data.resize={RESIZE}", f"data.input_size={INPUT}", f"data.batch_size={batch}",
                 f"optim.epochs={epochs}", "device=cpu"]
    if processes == 1:
        command = [sys.executable, "-m", "shortvid"]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                   "-m", "shortvid"]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // processes))}
    result = subprocess.run([*command, "train", "--config", "tiny", *overrides], capture_output=True, text=True,
                            env=env, timeout=3600, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{processes} process(es): training failed:\n{result.stderr[-3000:]}")
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    timed = metrics[1:] or metrics  # the first epoch warms up
    return {"seconds": sum(m["train_seconds"] for m in timed), "epochs": len(timed)}


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--processes", default="1,2", help="process counts to compare (default: 1,2)")
    parser.add_argument("--videos", type=int, default=120, help="corpus size, a quarter for validation (default: 120)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs a run, the first not timed (default: 3)")
    parser.add_argument("--batch", type=int, default=8, help="videos a process takes a step (default: 8)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    counts = [int(n) for n in args.processes.split(",")]
    data, cache = corpus(args.videos)
    train_videos = len(load_dataset(data, "train"))
    rates: dict[int, list[float]] = {n: [] for n in counts}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            for n in counts:
                timed = train_once(n, data, cache, Path(folder) / f"r{repeat}-{n}", args.epochs, args.batch)
                steps = (train_videos // n) // args.batch  # a process's steps an epoch (drop_last)
                rates[n].append(steps * timed["epochs"] / timed["seconds"])
    cores = os.cpu_count() or 1
    base = max(rates[counts[0]]) * args.batch * counts[0]
    base_median = statistics.median(rates[counts[0]]) * args.batch * counts[0]
    rows, results = [], []
    for n in counts:
        best, median = max(rates[n]), statistics.median(rates[n])
        videos_per_s, videos_median = best * args.batch * n, median * args.batch * n
        results.append({"processes": n, "threads_per_process": max(1, cores // n), "batch_per_process": args.batch,
                        "steps_per_epoch": (train_videos // n) // args.batch, "steps_per_s": rates[n],
                        "videos_per_s_best": videos_per_s, "videos_per_s_median": videos_median,
                        "ratio_best": videos_per_s / base, "ratio_median": videos_median / base_median})
        rows.append([str(n), str(max(1, cores // n)), f"{args.batch} x {n} = {args.batch * n}",
                     str((train_videos // n) // args.batch), f"{best:.2f}", f"{videos_per_s:.1f}",
                     f"{videos_per_s / base:.2f}", f"{videos_median:.1f} ({videos_median / base_median:.2f})"])
    machine = describe()
    print(f"DDP training throughput: tiny config (tsn_tiny, {INPUT} px, 3 frames), {train_videos} training videos, "
          f"gloo on the CPU, best and median of {args.repeats}, first epoch of {args.epochs} not timed")
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}\n")
    print(markdown_table(["processes", "threads each", "videos a step", "steps an epoch", "steps/s", "videos/s",
                          f"vs {counts[0]}", f"median videos/s (vs {counts[0]})"], rows))
    write_json(args.json, {"machine": machine, "train_videos": train_videos, "epochs": args.epochs,
                           "repeats": args.repeats, "results": results})


if __name__ == "__main__":
    main()
