"""Motion and sound on the serving path: what they cost a video, path -> labels, against keyframes only.

Baseline: the CPU-fast student (`tsn_mobilenetv3` at 160 px, random weights) on keyframes only, in the same
run. Each variant is the same student with the motion encoder (`motion=M` frames after each keyframe,
`motion_order` shown or decoded), the audio encoder (1 s of 16 kHz mono, 64-band log-mel: `AudioSpec()`), or
both, written as a run (`make_run`) whose `preprocess.json` makes `Classifier.read` decode what the model
takes from the one open file (docs/motion-and-sound.md, "The contract between the layers"). The "cheap"
variants shrink the encoders: the motion differences pooled to a quarter of the size (`scale=0.25`, the
default 0.5) and `mobilenetv3_small_050` encoder backbones (the default `mobilenetv3_small_100`).

Three measurements, on the default backend (ONNX Runtime, exported at load, before any timing):
- **Single stream**: `Classifier.predict` one video at a time, loaded as `shortvid predict` loads it
  (`spin=True`), every variant on each video in a new shuffled order (seed 0) after a `--settle-ms` pause,
  `--repeats` passes over the videos. Median and p95 ms/video per stage: decode (of which `sound`, the
  audio read and resampling: `Clip.sound.decode_ms`), preprocess (crop and normalisation of the frames and
  motion frames, and the log-mel), model, total; each total as a ratio to keyframes only. Also the p10 (the
  tenth of the calls least disturbed by other work on a shared machine) and its ratio.
- **CPU work**: the CPU ms (`time.thread_time`) of `Classifier.read`, `Classifier.prepare` and the model on a
  one-thread ONNX Runtime session of the same file (so all its work is on the calling thread), every variant
  on each video in a shuffled order, `--cpu-repeats` passes. Other jobs on a shared machine take the cores
  but not this thread's CPU time, so these ratios hold under load better than wall times; `cores` x 1000 /
  the mean CPU ms is the throughput bound the work allows on this machine's cores.
- **Pipelined**: `classify_many(batch_size=8, workers=2)` (`shortvid predict --batch-size 8 --workers 2`;
  shortvid's default session, whose threads sleep) over `--pipeline-videos` videos (the same videos, cycled),
  every variant once a pass in a new shuffled order, `--passes` passes; the median videos/s and its ratio to
  keyframes only.

Issue 21's targets, on 2 CPU cores: single stream at most 20 ms a video with motion and sound on, and the
pipelined throughput at least 80 videos/s. Prints the report as JSON (machine, load averages, settings,
per-variant stages, ratios, sound statuses), then two Markdown tables: the single stream; the CPU work and
the throughput.

    python bench/senses.py [--corpus real-shaped] [--videos 25] [--repeats 4] [--cpu-repeats 2] [--passes 5]
                           [--pipeline-videos 50] [--variants keyframes,m1-decoded,...] [--json out.json]
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import random
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from shortvid.decode import AudioSpec
from shortvid.infer.backends import OnnxBackend
from shortvid.infer.batch import PipelineStats, classify_many
from shortvid.infer.classifier import Classifier
from shortvid.machine import describe

from common import add_corpus_argument, corpus, machine, make_parser, make_run, p95, write_json

SMALL = "mobilenetv3_small_050"
CHEAP_MOTION = {"scale": 0.25}
CHEAPEST_MOTION = {"backbone": SMALL, "scale": 0.25}
VARIANTS = {  # key: (what, create_model's extra arguments, motion_order)
    "keyframes": ("keyframes only (baseline)", {}, "shown"),
    "m1-shown": ("+ motion M=1, shown", {"motion": 1}, "shown"),
    "m1-decoded": ("+ motion M=1, decoded", {"motion": 1}, "decoded"),
    "m2-shown": ("+ motion M=2, shown", {"motion": 2}, "shown"),
    "m2-decoded": ("+ motion M=2, decoded", {"motion": 2}, "decoded"),
    "sound": ("+ sound 1 s", {"audio": True}, "shown"),
    "m1-decoded+sound": ("both: motion M=1 decoded + sound 1 s", {"motion": 1, "audio": True}, "decoded"),
    "m2-shown+sound": ("both: motion M=2 shown + sound 1 s", {"motion": 2, "audio": True}, "shown"),
    "m1-decoded+sound-m0.25": ("both, M=1 decoded, motion scale 0.25",
                               {"motion": 1, "motion_args": CHEAP_MOTION, "audio": True}, "decoded"),
    "m1-decoded+sound-small": (f"both, M=1 decoded, motion scale 0.25, {SMALL} encoders",
                               {"motion": 1, "motion_args": CHEAPEST_MOTION, "audio": True,
                                "audio_args": {"backbone": SMALL}}, "decoded"),
    "m2-shown+sound-small": (f"both, M=2 shown, motion scale 0.25, {SMALL} encoders",
                             {"motion": 2, "motion_args": CHEAPEST_MOTION, "audio": True,
                              "audio_args": {"backbone": SMALL}}, "shown"),
}
BASELINE = "keyframes"
STAGES = ("decode", "sound", "preprocess", "model", "total")
CPU_STAGES = ("decode", "preprocess", "model", "total")
TARGET_MS, TARGET_VIDEOS_PER_S = 20.0, 80.0


def capturing(classifier: Classifier) -> dict:
    """Make ``classifier.read`` keep the last clip it read (for its sound's decode time) in the returned
    dict, ``predict`` still timing it: an instance attribute in front of the method, one call more."""
    seen: dict = {}
    read = classifier.read

    def keep(source, timeout=10.0, limits=None):
        seen["clip"] = clip = read(source, timeout, limits)
        return clip

    classifier.read = keep
    return seen


def single_stream(classifiers: dict[str, Classifier], paths: list[Path], repeats: int,
                  settle_ms: float) -> tuple[dict[str, dict[str, list[float]]], dict[str, Counter]]:
    """Per variant, the ms of every stage of every `predict` call, and the sound statuses it read."""
    seen = {key: capturing(classifier) for key, classifier in classifiers.items()}
    times: dict[str, dict[str, list[float]]] = {key: {stage: [] for stage in STAGES} for key in classifiers}
    sounds: dict[str, Counter] = {key: Counter() for key in classifiers}
    order = list(classifiers)
    shuffle = random.Random(0).shuffle
    for _ in range(repeats):
        for path in paths:
            shuffle(order)
            for key in order:
                time.sleep(settle_ms / 1000)
                timings = classifiers[key].predict(path).timings
                sound = seen[key]["clip"].sound
                timings = {**timings, "sound": 0.0 if sound is None else sound.decode_ms}
                sounds[key][sound.status if sound is not None else "not read"] += 1
                for stage in STAGES:
                    times[key][stage].append(timings[stage])
    return times, sounds


def pipelined(classifiers: dict[str, Classifier], paths: list[Path], passes: int) -> dict[str, list[dict]]:
    """Per variant, one `classify_many` (batch 8, 2 decode threads) summary a pass."""
    results: dict[str, list[dict]] = {key: [] for key in classifiers}
    order = list(classifiers)
    shuffle = random.Random(1).shuffle
    for _ in range(passes):
        shuffle(order)
        for key in order:
            stats = PipelineStats()
            for outcome in classify_many(classifiers[key], paths, batch_size=8, workers=2, stats=stats):
                if outcome.error is not None:
                    raise outcome.error
            results[key].append(stats.to_dict())
    return results


def single_thread(classifier: Classifier) -> OnnxBackend:
    """A copy of ``classifier``'s ONNX backend on a session of one thread, nothing spinning: the model runs on
    the calling thread, so `time.thread_time` counts all of its work."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    backend = copy.copy(classifier.backend)
    backend.session = ort.InferenceSession(str(backend.path), sess_options=options, providers=["CPUExecutionProvider"])
    return backend


def cpu_work(classifiers: dict[str, Classifier], paths: list[Path], repeats: int) -> dict[str, dict[str, list[float]]]:
    """Per variant, the CPU ms (`time.thread_time`) of every stage of every video: `read`, `prepare`, and the
    model on a one-thread session (`single_thread`). The work a video costs, which the machine's other jobs
    slow less than its wall time (they take the cores, not this thread's CPU time)."""
    backends = {key: single_thread(classifier) for key, classifier in classifiers.items()}
    cpu: dict[str, dict[str, list[float]]] = {key: {s: [] for s in CPU_STAGES} for key in classifiers}
    for key, classifier in classifiers.items():  # warm-up: the new sessions' first runs allocate
        frames, _, extra = classifier.prepare([classifier.read(paths[0])])
        backends[key].run(frames, **extra)
    order = list(classifiers)
    shuffle = random.Random(2).shuffle
    for _ in range(repeats):
        for path in paths:
            shuffle(order)
            for key in order:
                classifier = classifiers[key]
                started = time.thread_time()
                clip = classifier.read(path)
                decoded = time.thread_time()
                with torch.inference_mode():
                    frames, _, extra = classifier.prepare([clip])
                    prepared = time.thread_time()
                    backends[key].run(frames, **extra)
                done = time.thread_time()
                for stage, ms in zip(CPU_STAGES, (decoded - started, prepared - decoded, done - prepared,
                                                  done - started), strict=True):
                    cpu[key][stage].append(ms * 1000)
    return cpu


def paired(times: dict[str, dict[str, list[float]]], key: str, stage: str, videos: int) -> float:
    """The median over videos of a video's median ``stage`` time under ``key`` over its median under the
    baseline: calls are listed pass by pass, each pass over the same ``videos`` videos."""
    def per_video(name: str) -> list[float]:
        values = times[name][stage]
        return [statistics.median(values[i::videos]) for i in range(videos)]

    return statistics.median(v / b for v, b in zip(per_video(key), per_video(BASELINE), strict=True) if b > 0)


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages (`uptime`), rounded."""
    return [round(value, 2) for value in os.getloadavg()]


def main() -> None:
    parser = make_parser(__doc__)
    add_corpus_argument(parser, "real-shaped")
    parser.add_argument("--videos", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=4, help="single stream: passes over the videos (default: 4)")
    parser.add_argument("--settle-ms", type=float, default=100.0,
                        help="single stream: pause before each call, so the previous session's spinning threads "
                             "have gone idle (default: 100)")
    parser.add_argument("--cpu-repeats", type=int, default=2,
                        help="CPU work: passes over the videos (default: 2; 0: not measured)")
    parser.add_argument("--passes", type=int, default=5, help="pipelined: passes, every variant in each (default: 5)")
    parser.add_argument("--pipeline-videos", type=int, default=50,
                        help="pipelined: videos a pass, the corpus's cycled (default: 50)")
    parser.add_argument("--seconds", type=float, default=AudioSpec().seconds,
                        help=f"seconds of sound the hearing variants read (default: {AudioSpec().seconds:g})")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated variants, of: {', '.join(VARIANTS)} (default: all; "
                             f"{BASELINE} is always run)")
    args = parser.parse_args()
    chosen = [key.strip() for key in args.variants.split(",") if key.strip()]
    unknown = [key for key in chosen if key not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown} (choose from {', '.join(VARIANTS)})")
    chosen = [BASELINE] + [key for key in chosen if key != BASELINE]
    audio = AudioSpec(seconds=args.seconds)

    paths = corpus(args.corpus, args.videos)
    cycled = list(itertools.islice(itertools.cycle(paths), args.pipeline_videos))
    loads = {"start": load()}
    with tempfile.TemporaryDirectory() as folder:
        runs = {key: make_run(Path(folder) / str(index), model_args=VARIANTS[key][1], motion_order=VARIANTS[key][2],
                              audio=audio)
                for index, key in enumerate(chosen)}
        # Loading exports model.onnx: done here, before any timing.
        spinning = {key: Classifier.load(run, device="cpu", spin=True) for key, run in runs.items()}
        sleeping = {key: Classifier.load(run, device="cpu") for key, run in runs.items()}
        backends = {key: c.backend.name for key, c in spinning.items()}
        inputs = {key: list(c.inputs) for key, c in spinning.items()}
        for classifier in [*spinning.values(), *sleeping.values()]:  # warm-up: first calls allocate
            for path in paths[:2]:
                classifier.predict(path)
        loads["warm"] = load()
        times, sounds = single_stream(spinning, paths, args.repeats, args.settle_ms)
        loads["after single stream"] = load()
        cpu = cpu_work(sleeping, paths, args.cpu_repeats) if args.cpu_repeats else None
        loads["after CPU work"] = load()
        passes = pipelined(sleeping, cycled, args.passes)
        loads["after pipelined"] = load()

    def summary(values: list[float]) -> dict[str, float]:
        return {"median": round(statistics.median(values), 2), "p10": round(float(np.percentile(values, 10)), 2),
                "p95": round(p95(values), 2)}

    rate = {key: statistics.median(r["videos_per_s"] for r in runs) for key, runs in passes.items()}
    cores = os.cpu_count() or 1
    report = {
        "machine": machine(), "describe": describe(), "load_average_1_5_15": loads, "corpus": args.corpus,
        "videos": len(paths), "repeats": args.repeats, "settle_ms": args.settle_ms, "cpu_repeats": args.cpu_repeats,
        "passes": args.passes, "pipeline_videos": len(cycled), "audio": audio.to_dict(), "backends": backends,
        "inputs": inputs, "variants": {},
    }
    for key in chosen:
        row = {
            "what": VARIANTS[key][0], "model_args": VARIANTS[key][1], "motion_order": VARIANTS[key][2],
            "sound": dict(sounds[key]),
            "single_stream_ms": {stage: summary(times[key][stage]) for stage in STAGES},
            "total_x_keyframes": round(statistics.median(times[key]["total"])
                                       / statistics.median(times[BASELINE]["total"]), 3),
            "total_x_keyframes_paired": round(paired(times, key, "total", len(paths)), 3),
            "p10_total_x_keyframes": round(np.percentile(times[key]["total"], 10)
                                           / np.percentile(times[BASELINE]["total"], 10), 3),
            "pipelined_videos_per_s": round(rate[key], 2),
            "pipelined_x_keyframes": round(rate[key] / rate[BASELINE], 3),
            "pipelined_ms_per_video": {stage: round(statistics.median(r["ms_per_video"][stage] for r in passes[key]), 2)
                                       for stage in ("decode", "wait", "preprocess", "model")},
        }
        if cpu is not None:
            row["cpu_ms"] = {stage: {"median": round(statistics.median(cpu[key][stage]), 2),
                                     "mean": round(statistics.fmean(cpu[key][stage]), 2)} for stage in CPU_STAGES}
            row["cpu_total_x_keyframes_paired"] = round(paired(cpu, key, "total", len(paths)), 3)
            row["cpu_bound_videos_per_s"] = round(cores * 1000 / statistics.fmean(cpu[key]["total"]), 1)
        report["variants"][key] = row
    print(json.dumps(report, indent=2))
    write_json(args.json, report)
    print(f"\nSingle stream, median ms/video (p95); target: total <= {TARGET_MS:g} ms\n")
    print("| variant | decode | of which sound | preprocess | model | total | × keyframes | p10 total (×) |"
          "\n| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in report["variants"].values():
        ms = row["single_stream_ms"]
        cells = " | ".join(f"{ms[s]['median']:.1f} ({ms[s]['p95']:.1f})" for s in ("decode", "sound", "preprocess",
                                                                                   "model"))
        total = ms["total"]
        print(f"| {row['what']} | {cells} | **{total['median']:.1f}** ({total['p95']:.1f}) | "
              f"{row['total_x_keyframes_paired']:.2f} | {total['p10']:.1f} ({row['p10_total_x_keyframes']:.2f}) |")
    print(f"\nCPU work, median ms/video (one-thread model), and throughput; target: pipelined >= "
          f"{TARGET_VIDEOS_PER_S:g} videos/s\n")
    print(f"| variant | CPU decode | CPU preprocess | CPU model | CPU total | × keyframes | {cores} cores' bound "
          "videos/s | pipelined videos/s | × keyframes |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in report["variants"].values():
        work = " | ".join(f"{row['cpu_ms'][s]['median']:.1f}" if cpu is not None else "" for s in CPU_STAGES)
        print(f"| {row['what']} | {work} | {row.get('cpu_total_x_keyframes_paired', float('nan')):.2f} | "
              f"{row.get('cpu_bound_videos_per_s', float('nan')):.1f} | **{row['pipelined_videos_per_s']:.1f}** | "
              f"{row['pipelined_x_keyframes']:.2f} |")


if __name__ == "__main__":
    main()
