"""Fuzzing the decoder at scale: many damaged copies of real-shaped videos, every outcome typed.

Baseline: none to compare with; the goal is that every failure is a typed `DecodeError` (the exit
status is 1 otherwise). Prints the files by kind of damage, each pass's outcomes by type with its
seconds, the in-process pass's RSS growth, the five slowest files, and any untyped failure.

The suite's fuzz test (tests/test_fuzz.py) runs ~100 files; this runs `--files` of them (default
2,000): damaged copies (`shortvid.synth.damage`, every kind in turn, seeded) of the soak benchmark's
good videos (the `bench` preset's shapes, bench/soak.py), kept in the data folder. Two passes:

1. isolated: `shortvid.data.cache.extract` over all of them, in worker processes with a hard time
   limit, so a file that crashed or hung its worker would be reported (`WorkerCrashed`) instead of
   ending the run;
2. in-process: `read_frames` on each file in this one process, timed, with RSS before and after.

    python bench/fuzz.py [--files 2000] [--seed 0] [--json out.json]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

from shortvid import errors
from shortvid.data.cache import extract
from shortvid.decode import DecodeError, FrameSpec, read_frames
from shortvid.machine import describe
from shortvid.synth.damage import MUTATIONS

from common import DATA, damaged, make_parser, originals, write_json

TYPED = {name for name, value in vars(errors).items() if isinstance(value, type) and issubclass(value, DecodeError)}
TYPED.add("WorkerCrashed")  # extract's report of a worker that died or hung on a file


def make_files(count: int, seed: int) -> list[Path]:
    """``count`` damaged copies of the good videos, every kind in turn, made once."""
    good = originals()
    return damaged(good, DATA / "fuzz" / f"seed{seed}", -(-count // len(good)), seed=seed * 1000)[:count]


def main() -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    files = make_files(args.files, args.seed)
    kinds = Counter(path.stem.split("-", 2)[-1].split("-")[0].split("@")[0] for path in files)
    print(f"{len(files)} damaged files ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}); "
          f"mutations: {', '.join(MUTATIONS)}", flush=True)
    spec = FrameSpec(k=3, size=256, crop=224)

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        summary = extract([(path.name, path) for path in files], Path(folder) / "cache", spec, workers=2,
                          timeout=10, progress=False)
        isolated_s = time.perf_counter() - started
        records = [json.loads(line) for line in (Path(folder) / "cache" / "manifest.jsonl").read_text().splitlines()]
    isolated = Counter(record["error"]["type"] if "error" in record else "frames" for record in records)
    print(f"isolated ({isolated_s:.1f} s): {dict(isolated.most_common())}", flush=True)

    process = psutil.Process()
    before = process.memory_info().rss
    inprocess: Counter = Counter()
    untyped, times = [], []
    started = time.perf_counter()
    for path in files:
        t0 = time.perf_counter()
        try:
            read_frames(path, 3, size=256, crop=224, timeout=10)
            inprocess["frames"] += 1
        except DecodeError as error:
            inprocess[type(error).__name__] += 1
        except Exception as error:  # noqa: BLE001 - what this benchmark exists to find
            inprocess[type(error).__name__] += 1
            untyped.append(f"{path.name}: {type(error).__name__}: {error}")
        times.append((time.perf_counter() - t0, path.name))
    inprocess_s = time.perf_counter() - started
    growth = (process.memory_info().rss - before) / 2**20
    print(f"in-process ({inprocess_s:.1f} s): {dict(inprocess.most_common())}; RSS +{growth:.1f} MB", flush=True)
    slowest = sorted(times, reverse=True)[:5]
    print("slowest: " + ", ".join(f"{name} {seconds * 1000:.0f} ms" for seconds, name in slowest))
    untyped += [f"isolated: {record['path']}: {record['error']}" for record in records
                if "error" in record and record["error"]["type"] not in TYPED]
    if untyped:
        print(f"{len(untyped)} untyped failures:\n  " + "\n  ".join(untyped[:20]))
    else:
        print("every failure was a typed DecodeError")
    write_json(args.json, {
        "machine": describe(), "files": len(files), "mutations": dict(kinds), "isolated": dict(isolated),
        "isolated_seconds": round(isolated_s, 1), "in_process": dict(inprocess),
        "in_process_seconds": round(inprocess_s, 1), "rss_growth_mb": round(growth, 1),
        "slowest_ms": [(name, round(seconds * 1000, 1)) for seconds, name in slowest], "untyped": untyped,
        "extract_summary": summary.to_dict()})
    return 1 if untyped else 0


if __name__ == "__main__":
    sys.exit(main())
