"""Sound: per-video milliseconds of reading the audio track (`read_audio`) and its log-mel features
(`log_mel`), against the keyframe path's `read_frames` on the same files.

Each video is read, in-process, by every method in turn (round-robin, a new shuffled order per video,
repeated): `frames` is `read_frames(path, 3, size=256, crop=224)`, the decode training and serving
use; `audio-PLACEMENT-Ns` is `read_audio` with `AudioSpec(seconds=N, placement=PLACEMENT)` (16 kHz mono;
"spread": 4 windows, a seek each) followed by `log_mel` (64 bands, 25 ms windows every 10 ms); `read-Ns`
is `read_audio` alone ("start"), the decode's share; `mel-Ns` is `log_mel` alone on N seconds of samples,
the features' share. Prints JSON (machine, corpus, median and p95 ms/video of each method, its ratio to
`frames`, the Sound statuses), then a Markdown table. The issue's target: audio decode + features at most
1.5 ms a video.

    python bench/audio.py [--corpus real-shaped] [--videos 25] [--repeats 3] [--seconds 2 4 8] [--json out.json]
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from datetime import date
from functools import partial
from pathlib import Path

import numpy as np

from shortvid.decode import AudioSpec, log_mel, read_audio, read_frames

from common import CROP, SIZE, K, add_corpus_argument, corpus, interleaved, machine, make_parser, write_json

TARGET_MS = 1.5


def main() -> None:
    parser = make_parser(__doc__)
    add_corpus_argument(parser, default="real-shaped")
    parser.add_argument("--videos", type=int, default=25, help="videos of the corpus (default 25)")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the videos (default 3)")
    parser.add_argument("--seconds", type=float, nargs="+", default=[2.0, 4.0, 8.0],
                        help="seconds of audio a video (default 2 4 8)")
    args = parser.parse_args()
    paths = corpus(args.corpus, args.videos)
    specs = {f"audio-{placement}-{seconds:g}s": AudioSpec(seconds=seconds, placement=placement)
             for seconds in args.seconds for placement in ("start", "spread")}
    statuses = {name: Counter(read_audio(path, spec).status for path in paths) for name, spec in specs.items()}

    def sound_and_features(spec: AudioSpec):
        def call(path: Path):
            sound = read_audio(path, spec)
            return log_mel(sound.samples, sound.sample_rate)
        return call

    waves = {seconds: np.random.default_rng(0).uniform(-0.1, 0.1, round(16000 * seconds)).astype(np.float32)
             for seconds in args.seconds}
    calls = {"frames": lambda path: read_frames(path, K, size=SIZE, crop=CROP)}
    calls.update({name: sound_and_features(spec) for name, spec in specs.items()})
    calls.update({f"read-{seconds:g}s": partial(read_audio, spec=specs[f"audio-start-{seconds:g}s"])
                  for seconds in args.seconds})
    calls.update({f"mel-{seconds:g}s": (lambda path, wave=wave: log_mel(wave, 16000))
                  for seconds, wave in waves.items()})
    for call in calls.values():  # warm-up: imports, caches, the filterbank
        call(paths[0])
    times = interleaved(calls, paths, args.repeats)
    medians = {name: statistics.median(statistics.median(t) for t in per.values()) for name, per in times.items()}
    p95s = {name: float(np.percentile([x for t in per.values() for x in t], 95)) for name, per in times.items()}
    report = {
        "machine": machine(), "date": date.today().isoformat(), "corpus": args.corpus, "videos": len(paths),
        "repeats": args.repeats,
        "methods": {name: {"median_ms": round(medians[name], 3), "p95_ms": round(p95s[name], 3),
                           "ratio_to_frames": round(medians[name] / medians["frames"], 3),
                           **({"statuses": dict(statuses[name])} if name in statuses else {})} for name in calls},
    }
    print(json.dumps(report, indent=2))
    write_json(args.json, report)
    print(f"\n| method | median ms/video | p95 ms | × frames | ≤ {TARGET_MS} ms |\n|---|---|---|---|---|")
    for name in calls:
        target = "" if name == "frames" else ("yes" if medians[name] <= TARGET_MS else "no")
        ratio = medians[name] / medians["frames"]
        print(f"| {name} | {medians[name]:.2f} | {p95s[name]:.2f} | {ratio:.2f} | {target} |")


if __name__ == "__main__":
    main()
