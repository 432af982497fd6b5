"""The serving path's preprocessing on the CPU (centre crop + normalisation of 3 decoded frames):
shortvid's NumPy path (`VideoTransform.centre_crop`) against torchvision's v2 transforms.

Baseline: torchvision v2 (CenterCrop, ToDtype, Normalize), in the same run. Prints the machine, torch's
threads and the largest difference between the two outputs, then a Markdown table: per gap, the
median ms per call of each way and NumPy's ratio to v2.

Each call is preceded by a pause (`--gaps-ms`, several values): requests arrive with gaps, and after
one torch's intra-op thread pool has gone to sleep, so the next tensor operation pays for waking it.
Frames: `[3, 182, 242, 3]` uint8, the `mobilenet_cpu` student's decode of a 4:3 video, crop 160.
Ways alternate call by call; medians over `--calls` calls per (way, gap).

    python bench/preprocess.py [--calls 40] [--gaps-ms 0,10,100] [--json out.json]
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from shortvid.data.transforms import VideoTransform
from shortvid.machine import describe

from common import make_parser, write_json


def main() -> None:
    parser = make_parser(__doc__, data=False)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--gaps-ms", default="0,10,100")
    args = parser.parse_args()
    transform = VideoTransform(160, augment=False)
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 182, 242, 3), dtype=np.uint8))
    ways = {
        "torchvision v2 (CenterCrop, ToDtype, Normalize)":
            lambda: transform.test(frames.permute(0, 3, 1, 2)).contiguous(),
        "NumPy (shortvid on the CPU)": lambda: transform(frames, "test"),
    }
    first, second = (way() for way in ways.values())
    difference = float((first - second).abs().max())
    rows: dict = {}
    for gap in [float(g) for g in args.gaps_ms.split(",")]:
        times = {name: [] for name in ways}
        for _ in range(args.calls):
            for name, way in ways.items():
                time.sleep(gap / 1000)
                started = time.perf_counter()
                way()
                times[name].append((time.perf_counter() - started) * 1000)
        rows[str(gap)] = {name: statistics.median(values) for name, values in times.items()}
    print(f"machine: {describe()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"max abs difference {difference:.1e}")
    print("| gap before each call (ms) | " + " | ".join(ways) + " | × v2 |")
    print("| --- | " + " | ".join("---" for _ in ways) + " | --- |")
    for gap, row in rows.items():
        values = list(row.values())
        print(f"| {gap} | " + " | ".join(f"{v:.2f}" for v in values) + f" | {values[1] / values[0]:.2f} |")
    write_json(args.json, {"machine": describe(), "max_abs_difference": difference, "median_ms": rows})


if __name__ == "__main__":
    main()
