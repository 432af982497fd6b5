"""Motion frames: what reading the frames after each keyframe costs over the keyframe path.

Baseline: `motion=0` (the keyframe sampler alone, `fill="repeat"`), in the same run. For each `--motion`
value, `read_frames(path, K, size=256, crop=224, motion=M)`: each chosen keyframe and the M frames after
it in presentation order, decoded forward from its GOP's prefix (docs/decoding.md, "Motion frames").
Prints the results as JSON, then a Markdown table: per setting, the median and p95 ms/video, the median
per-video ratio to `motion=0` (the issue's target: at most 1.3x) and the mean frames decoded a video.

Settings run round-robin on each video (a new shuffled order for every video), repeated, so machine
noise hits them alike. Corpora (`--corpus`, generated once): `real-shaped` (default; shaped like real
uploads, mostly 480x480, a keyframe every 5 s plus one per cut) and `realistic-540` (540x960, 10-15 s,
a keyframe every 120 frames plus one per cut).

    python bench/motion.py [--corpus real-shaped|realistic-540] [--videos 12] [--motion 1 2 3 4]
                           [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import json
import os
import statistics

from shortvid.decode import read_frames

from common import CROP, SIZE, K, add_corpus_argument, corpus, interleaved, machine, make_parser, p95, write_json


def main() -> None:
    parser = make_parser(__doc__)
    add_corpus_argument(parser, "real-shaped", choices=("real-shaped", "realistic-540"))
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--motion", type=int, nargs="+", default=[1, 2, 3, 4], help="motion values (default: 1-4)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    paths = corpus(args.corpus, args.videos)
    settings = [0, *sorted(set(args.motion) - {0})]
    calls = {f"motion={m}": (lambda path, m=m: read_frames(path, K, size=SIZE, crop=CROP, motion=m))
             for m in settings}
    decoded = {name: statistics.mean(call(path).decoded for path in paths) for name, call in calls.items()}
    load_before = os.getloadavg()[0]
    times = interleaved(calls, paths, args.repeats)
    medians = {name: {path: statistics.median(values) for path, values in per.items()} for name, per in times.items()}
    base = medians["motion=0"]
    rows = {
        name: {
            "median_ms": round(statistics.median(medians[name].values()), 2),
            "p95_ms": round(p95(list(medians[name].values())), 2),
            "x_keyframes": round(statistics.median(medians[name][p] / base[p] for p in paths), 2),
            "decoded": round(decoded[name], 1),
        }
        for name in calls
    }
    results = {
        "machine": machine(),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # 1-minute, before and after
        "corpus": args.corpus,
        "videos": len(paths),
        "k": K,
        "repeats": args.repeats,
        "settings": rows,
    }
    print(json.dumps(results, indent=2))
    print(f"\n{args.corpus}, {len(paths)} videos, k={K}, {SIZE}/{CROP}, load average {load_before:.1f}")
    print("| setting | median ms/video | p95 ms | x motion=0 (median per video) | frames decoded |")
    print("| --- | --- | --- | --- | --- |")
    for name, row in rows.items():
        print(f"| {name} | {row['median_ms']:.1f} | {row['p95_ms']:.1f} | {row['x_keyframes']:.2f}x | "
              f"{row['decoded']:g} |")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
