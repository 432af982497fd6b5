"""Soak: resident memory of one long-lived process over many decodes of good and damaged files.

Baseline: the same calls through `read_frames` as it was at `--baseline-rev` (default: the commit
before issue 10's fix), in the same run. Prints one line per scenario as it ends (seconds; RSS at the
start, after warm-up and at the end; growth after warm-up, in all and per 1,000 decodes); `--json`
adds every scenario's RSS samples and its failed and untyped-error counts.

A platform's decode workers and services live for days and see broken uploads all the time; memory
that grows per call ends them. Each scenario runs in a fresh subprocess (same start for all) and
decodes `--decodes` times, cycling through a mix of good videos (the `bench` preset's shapes: 270x480
and 360x640 portrait H.264 + AAC, 4-10 s) and damaged copies of them (`shortvid.synth.damage`:
truncations, flips, box damage, swapped moov/mdat, huge claimed sizes), `--broken` of the calls on
damaged files. RSS is sampled every 1% of the run; warm-up is the first `--warmup` decodes.

Scenarios, in the same run:
- `read_frames / mix`: shortvid's decoder, one thread;
- `read_frames x4 threads / mix`: the same calls from 4 threads, as the service's decode pool makes them;
- `... / swapped moov+mdat`: the good videos with their moov and mdat boxes swapped (offsets left as
  they were), decoded in turn over and over: the report's case (it grew the report's process 165 KB a
  call: the leaked blocks are small, the heap they pin is not);
- `baseline / ...`: `read_frames` at `--baseline-rev`, checked out as a git worktree under the data
  folder and imported from there in its own process. That `read_frames` left each `container.demux()`
  generator it stopped early (having found its packet) to the garbage collector instead of closing
  it, and PyAV then never frees the generator's read packet.

    python bench/soak.py [--decodes 10000] [--broken 0.5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import DATA, baseline_tree, damaged, make_parser, originals, write_json

BEFORE_THE_FIX = "7e59c37"  # the last commit before issue 10 closed the demux generators
# name: (this code or the baseline revision's, decode threads, files)
SCENARIOS = {
    "read_frames / mix": ("current", 1, "mix"),
    "read_frames x4 threads / mix": ("current", 4, "mix"),
    "baseline / mix": ("baseline", 1, "mix"),
    "read_frames / swapped moov+mdat": ("current", 1, "swapped"),
    "baseline / swapped moov+mdat": ("baseline", 1, "swapped"),
}


def swapped(good: Path) -> Path:
    """`good` with its moov and mdat boxes swapped, offsets left as they were (the report's file)."""
    from shortvid.synth.damage import with_boxes_swapped

    target = DATA / "soak" / "swapped" / good.name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(with_boxes_swapped(good.read_bytes()))
    return target


def corpus(broken: int = 60) -> tuple[list[Path], list[Path]]:
    """The good videos and about ``broken`` damaged copies of them, made once in the data folder."""
    good = originals()
    return good, damaged(good, DATA / "soak" / "broken", max(1, broken // len(good)))


def calls(files: str, decodes: int, broken_share: float) -> list[str]:
    """The paths one scenario decodes, in order."""
    good, damaged = corpus()
    if files == "swapped":
        broken = [str(swapped(path)) for path in good]
        return [broken[index % len(broken)] for index in range(decodes)]
    rng = random.Random(0)
    return [str(rng.choice(damaged if rng.random() < broken_share else good)) for _ in range(decodes)]


def run(paths: list[str], threads: int, warmup: int) -> dict:
    """Decode ``paths`` with whichever ``shortvid`` this process imports; RSS over the calls."""
    import psutil

    import shortvid
    from shortvid.decode import DecodeError, read_frames

    decodes = len(paths)

    untyped = []

    def shortvid_decode(path: str) -> bool:
        try:
            read_frames(path, 3, size=256, crop=224, timeout=10)
            return True
        except DecodeError:
            return False
        except Exception as error:  # noqa: BLE001 - the baseline's read_frames raised untyped errors
            untyped.append(type(error).__name__)
            return False

    process = psutil.Process()
    samples, failed = [], 0
    step = max(1, decodes // 100)
    start = process.memory_info().rss
    started = time.perf_counter()
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            for index, ok in enumerate(pool.map(shortvid_decode, paths), 1):
                failed += not ok
                if index % step == 0:
                    samples.append((index, process.memory_info().rss))
    else:
        for index, path in enumerate(paths, 1):
            failed += not shortvid_decode(path)
            if index % step == 0:
                samples.append((index, process.memory_info().rss))
    seconds = time.perf_counter() - started
    after_warmup = next(rss for index, rss in samples if index >= warmup)
    end = samples[-1][1]
    mb = 2 ** 20
    return {"shortvid": str(Path(shortvid.__file__).parent), "decodes": decodes, "failed": failed,
            "untyped_errors": len(untyped),
            "seconds": round(seconds, 1), "rss_start_mb": round(start / mb, 1),
            "rss_after_warmup_mb": round(after_warmup / mb, 1), "rss_end_mb": round(end / mb, 1),
            "growth_after_warmup_mb": round((end - after_warmup) / mb, 1),
            "growth_kb_per_1000": round((end - after_warmup) / 1024 / max(1, decodes - warmup) * 1000, 1),
            "samples_mb": [(index, round(rss / mb, 1)) for index, rss in samples]}


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--decodes", type=int, default=10_000)
    parser.add_argument("--broken", type=float, default=0.5, help="share of calls on damaged files (default 0.5)")
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated names (default: all)")
    parser.add_argument("--baseline-rev", default=BEFORE_THE_FIX, help=f"git revision (default: {BEFORE_THE_FIX})")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # a JSON file of paths to decode
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run(json.loads(Path(args.child).read_text()), args.threads, args.warmup)))
        return

    from shortvid.machine import describe

    good, damaged = corpus()
    print(f"{len(good)} good videos, {len(damaged)} damaged copies; {args.decodes} decodes per scenario, "
          f"{args.broken:.0%} on damaged files", flush=True)
    results = []
    for scenario in args.scenarios.split(","):
        code, threads, files = SCENARIOS[scenario]
        environment = dict(os.environ)
        if code == "baseline":
            environment["PYTHONPATH"] = str(baseline_tree(args.baseline_rev))
        with tempfile.NamedTemporaryFile("w", suffix=".json") as listing:
            json.dump(calls(files, args.decodes, args.broken), listing)
            listing.flush()
            output = subprocess.run([sys.executable, __file__, "--child", listing.name, "--threads", str(threads),
                                     "--warmup", str(args.warmup)], capture_output=True, text=True, check=True,
                                    env=environment)
        result = {"scenario": scenario, **json.loads(output.stdout.strip().splitlines()[-1])}
        results.append(result)
        print(f"{scenario:32s} {result['seconds']:7.1f} s  RSS start {result['rss_start_mb']:7.1f} MB, after warm-up "
              f"{result['rss_after_warmup_mb']:7.1f}, end {result['rss_end_mb']:7.1f}: "
              f"+{result['growth_after_warmup_mb']:.1f} MB after warm-up "
              f"({result['growth_kb_per_1000']:.0f} KB per 1,000 decodes)", flush=True)
    write_json(args.json, {"machine": describe(), "results": results})


if __name__ == "__main__":
    main()
