"""Motion frames: what reading the frames after each keyframe costs over the keyframe path.

Baseline: `motion=0` (the keyframe sampler alone, `fill="repeat"`), in the same run. For each `--motion`
value M and each `--order` (docs/decoding.md, "Motion frames"), `read_frames(path, K, size=256, crop=224,
motion=M, motion_order=ORDER)`: each chosen keyframe and M frames after it, decoded forward from its GOP's
prefix; "decoded" (the default) takes the next M frames in decode order, "shown" the next M shown. Prints
the results as JSON, then a Markdown table: per setting, the median and p95 ms/video, the median per-video
ratio to `motion=0` (the issue's target: at most 1.3x), the mean frames decoded a video and the mean gap
from a keyframe to its last motion frame (frames at 30 fps).

`--variants` adds, for each M with the default order, decoder settings that are not the default: `nonkey`
(FFmpeg `skip_loop_filter=nokey`: no deblocking on the motion frames, the keyframes' pixels unchanged;
the motion frames' mean absolute pixel difference from the default is reported) and `threads` (2 frame
threads: the motion frames decode while the keyframe converts, on a second core; `motion=0 threads` is
its baseline, as a keyframe alone gains nothing from them).

Settings run round-robin on each video (a new shuffled order for every video), repeated, so machine
noise hits them alike. Corpora (`--corpus`, generated once): `real-shaped` (default; shaped like real
uploads, mostly 480x480, a keyframe every 5 s plus one per cut) and `realistic-540` (540x960, 10-15 s,
a keyframe every 120 frames plus one per cut).

    python bench/motion.py [--corpus real-shaped|realistic-540] [--videos 12] [--motion 1 2 3 4]
                           [--order decoded shown] [--repeats 3] [--variants] [--json out.json]
"""

from __future__ import annotations

import json
import os
import statistics

import numpy as np

from shortvid.decode import DecoderTuning, FrameSpec, read_frames

from common import CROP, SIZE, K, add_corpus_argument, corpus, interleaved, machine, make_parser, p95, write_json

VARIANTS = {
    "nonkey": DecoderTuning(options=(("skip_loop_filter", "nokey"),)),
    "threads": DecoderTuning(thread_count=2, thread_type="FRAME"),
}


def main() -> None:
    parser = make_parser(__doc__)
    add_corpus_argument(parser, "real-shaped", choices=("real-shaped", "realistic-540"))
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--motion", type=int, nargs="+", default=[1, 2, 3, 4], help="motion values (default: 1-4)")
    parser.add_argument("--order", nargs="+", default=["decoded", "shown"], choices=["decoded", "shown"],
                        help="motion orders (default: both)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", action="store_true", help="add the nonkey and threads decoder settings")
    args = parser.parse_args()

    paths = corpus(args.corpus, args.videos)
    motions = sorted(set(args.motion) - {0})
    specs = {"motion=0": (FrameSpec(K, size=SIZE, crop=CROP), None)}
    for order in args.order:
        for m in motions:
            specs[f"motion={m} {order}"] = (FrameSpec(K, size=SIZE, crop=CROP, motion=m, motion_order=order), None)
    if args.variants:
        specs["motion=0 threads"] = (FrameSpec(K, size=SIZE, crop=CROP), VARIANTS["threads"])
        for name, tuning in VARIANTS.items():
            for m in motions:
                specs[f"motion={m} {args.order[0]} {name}"] = (
                    FrameSpec(K, size=SIZE, crop=CROP, motion=m, motion_order=args.order[0]), tuning)
    calls = {name: (lambda path, spec=spec, tuning=tuning: read_frames(path, spec, tuning=tuning))
             for name, (spec, tuning) in specs.items()}
    clips = {name: [call(path) for path in paths] for name, call in calls.items()}
    decoded = {name: statistics.mean(clip.decoded for clip in made) for name, made in clips.items()}
    gaps = {name: statistics.mean((times[-1] - key) * 30 for clip in made for key, times in
                                  zip(clip.times, clip.motion_times or (), strict=False))
            for name, made in clips.items() if made[0].motion_times}
    pixels = {}  # a variant's motion frames against the same setting's default ones: mean absolute difference
    for name, made in clips.items():
        plain = name.rsplit(" ", 1)[0]
        if name.endswith(tuple(VARIANTS)) and plain in clips and clips[plain][0].motion is not None:
            pixels[name] = round(float(np.mean([np.abs(a.motion.astype(np.int16) - b.motion).mean()
                                                for a, b in zip(made, clips[plain], strict=True)])), 3)
    load_before = os.getloadavg()[0]
    times = interleaved(calls, paths, args.repeats)
    medians = {name: {path: statistics.median(values) for path, values in per.items()} for name, per in times.items()}

    def baseline(name: str) -> dict:
        return medians["motion=0 threads" if name.endswith("threads") else "motion=0"]

    rows = {
        name: {
            "median_ms": round(statistics.median(medians[name].values()), 2),
            "p95_ms": round(p95(list(medians[name].values())), 2),
            "x_keyframes": round(statistics.median(medians[name][p] / baseline(name)[p] for p in paths), 2),
            "decoded": round(decoded[name], 1),
            "gap_frames": round(gaps[name], 2) if name in gaps else None,
            "pixel_difference": pixels.get(name),
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
    print("| setting | median ms/video | p95 ms | x motion=0 (median per video) | frames decoded | gap (frames) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, row in rows.items():
        gap = "" if row["gap_frames"] is None else f"{row['gap_frames']:g}"
        print(f"| {name} | {row['median_ms']:.1f} | {row['p95_ms']:.1f} | {row['x_keyframes']:.2f}x | "
              f"{row['decoded']:g} | {gap} |")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
