"""Frame policies for videos with fewer keyframes than segments: what each costs, by keyframe count.

Baseline: `repeat` (the keyframes only, a keyframe repeated to fill a segment), in the same run.
Prints the results as JSON, then a Markdown table: per keyframe count (1, 2, >=3) and over all
videos, each policy's median ms/video and its ratio to `repeat` (the issue's budget: at most 1.5x),
the mean frames decoded, the mean distinct frames and the mean distance of the frames from their
segment centres (seconds; test mode). The 1-minute load average before and after is in the JSON.

`read_frames(..., fill=POLICY)` with K segments (default 3), short side 256, centre crop 224, as
bench/decode.py reads: `repeat`, `near` at several caps (`--caps`, frames decoded past a keyframe per
filled segment, at most) and `seek` (a decode from the keyframe before each empty segment's centre to
the frame on screen there). Corpora (`--corpus`, generated once):

- `bench` (default): the `bench` preset's shapes (270x480 and 360x640 portrait, 240x240 legacy,
  4-10 s, VFR, rotated, ...) in a small corpus of `--videos` (default 48), `--gop` frames between
  forced keyframes (default: the preset's 120; a GOP longer than the videos leaves the keyframes at
  the cuts, as many uploads have them);
- `realistic-540`: bench/decode.py's realistic videos (540x960, 10-15 s, a keyframe every 120
  frames plus one at each cut).

Policies run round-robin on each video (a new shuffled order for every video), repeated, so machine
noise hits them alike.

    python bench/frame_policy.py [--corpus realistic-540|bench] [--videos 24] [--k 3]
                                 [--caps 4 8 16] [--repeats 5] [--gop 120] [--json out.json]
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import numpy as np

from shortvid.decode import DEFAULT_MAX_DECODE, read_frames, segment_targets

from common import CROP, SIZE, add_corpus_argument, bench_corpus, corpus, interleaved, machine, make_parser, write_json

BUCKETS = ("1", "2", ">=3")


def bucket(keyframes: int) -> str:
    return str(keyframes) if keyframes < 3 else ">=3"


def policies(k: int, caps: list[int]) -> dict:
    options = {"repeat": {"fill": "repeat"}}
    options.update({f"near{cap}": {"fill": "near", "max_decode": cap} for cap in caps})
    options["seek"] = {"fill": "seek"}
    return {name: (lambda path, o=o: read_frames(path, k, size=SIZE, crop=CROP, **o)) for name, o in options.items()}


def main() -> None:
    parser = make_parser(__doc__)
    add_corpus_argument(parser, "bench", choices=("realistic-540", "bench"))
    parser.add_argument("--videos", type=int, default=None, help="default: 24 realistic, 48 bench")
    parser.add_argument("--gop", type=int, default=120, help="bench corpus: frames between forced keyframes")
    parser.add_argument("--k", type=int, default=3, help="segments (default: 3)")
    parser.add_argument("--caps", type=int, nargs="+", default=[4, DEFAULT_MAX_DECODE, 16],
                        help=f"near's max_decode values (default: 4 {DEFAULT_MAX_DECODE} 16)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    if args.corpus == "bench":
        paths = bench_corpus(args.videos or 48, args.gop)
    else:
        paths = corpus(args.corpus, args.videos or 24)
    methods = policies(args.k, sorted(set(args.caps)))

    # Untimed pass: keyframe counts, frames decoded, distinct frames, distance from the centres.
    facts: dict[str, dict[Path, dict]] = {name: {} for name in methods}
    groups: dict[Path, str] = {}
    for path in paths:
        for name, method in methods.items():
            clip = method(path)
            centres = segment_targets(clip.info.start, clip.info.start + clip.info.duration, args.k)
            facts[name][path] = {
                "decoded": clip.decoded,
                "distinct": len(set(clip.times)),
                "distance": float(np.mean(np.abs(np.asarray(clip.times) - centres))),
            }
            groups[path] = bucket(clip.info.keyframes)

    load_before = os.getloadavg()[0]  # other work on the machine shows in the medians: reported with them
    times = interleaved(methods, paths, args.repeats)

    def summary(members: list[Path]) -> dict:
        if not members:
            return {}
        median = {name: statistics.median(t for path in members for t in times[name][path]) for name in methods}
        return {
            "videos": len(members),
            "median_ms": {name: round(value, 2) for name, value in median.items()},
            "x_repeat": {name: round(value / median["repeat"], 2) for name, value in median.items()},
            "decoded": {name: round(statistics.mean(facts[name][p]["decoded"] for p in members), 1)
                        for name in methods},
            "distinct": {name: round(statistics.mean(facts[name][p]["distinct"] for p in members), 2)
                         for name in methods},
            "distance_s": {name: round(statistics.mean(facts[name][p]["distance"] for p in members), 3)
                           for name in methods},
        }

    by_count = {group: summary([p for p in paths if groups[p] == group]) for group in BUCKETS}
    results = {
        "machine": machine(),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # 1-minute, before and after
        "corpus": args.corpus,
        "gop": args.gop if args.corpus == "bench" else None,
        "videos": len(paths),
        "k": args.k,
        "repeats": args.repeats,
        "by_keyframes": by_count,
        "all": summary(paths),
    }
    print(json.dumps(results, indent=2))
    print(f"\n{args.corpus}, k={args.k}, load average {load_before:.1f}: median ms/video (x repeat); frames decoded; "
          "distinct frames; distance from centres (s)")
    print("| keyframes | videos | " + " | ".join(methods) + " |\n| --- | --- |" + " --- |" * len(methods))
    for group, row in (*by_count.items(), ("all", results["all"])):
        if not row:
            continue
        cells = [f"{row['median_ms'][n]:.1f} ({row['x_repeat'][n]:.2f}x); {row['decoded'][n]:g}; "
                 f"{row['distinct'][n]:g}; {row['distance_s'][n]:.2f}" for n in methods]
        print(f"| {group} | {row['videos']} | " + " | ".join(cells) + " |")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
