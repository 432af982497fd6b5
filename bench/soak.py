"""Soak: resident memory of one long-lived process over many decodes of good and damaged files.

A platform's decode workers and services live for days and see broken uploads all the time; memory
that grows per call ends them. Each scenario runs in a fresh subprocess (same start for all) and
decodes `--decodes` times, cycling through a mix of good videos (the `bench` preset's shapes: 270x480
and 360x640 portrait H.264 + AAC, 4-10 s) and damaged copies of them (`shortvid.synth.damage`:
truncations, flips, box damage, swapped moov/mdat, huge claimed sizes), `--broken` of the calls on
damaged files. RSS is sampled every 1% of the run; the report gives RSS at the start, after warm-up
(the first `--warmup` decodes), at the end, and the growth after warm-up per 1,000 decodes.

Scenarios, in the same run:
- `read_frames`: shortvid's decoder, one thread;
- `read_frames x4 threads`: the same calls from 4 threads, as the service's decode pool makes them;
- `baseline: demux dropped`: the PyAV pattern read_frames used before issue 10 (open, read the first
  keyframe packet from `container.demux()`, decode it, `break`, leaving the generator to the garbage
  collector), on the same files: PyAV then never frees the generator's read packet.

    python bench/soak.py [--decodes 10000] [--broken 0.5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CACHE = Path(__file__).parent / ".cache" / "soak"
SCENARIOS = ("read_frames", "read_frames x4 threads", "baseline: demux dropped")


def corpus(broken: int = 60) -> tuple[list[Path], list[Path]]:
    """Good videos (generated once into bench/.cache/soak) and `broken` damaged copies of them."""
    from shortvid.synth.corpus import generate_corpus, preset
    from shortvid.synth.damage import damaged_copies

    spec = preset("bench", num_videos=24, num_classes=4, num_groups=2, min_videos_per_class=1, seed=11)
    generate_corpus(CACHE / "good", spec, workers=2, progress=False)
    good = sorted((CACHE / "good" / "videos").glob("*.mp4"))
    folder = CACHE / "broken"
    folder.mkdir(parents=True, exist_ok=True)
    damaged = []
    for index, path in enumerate(good):
        for name, data in damaged_copies(path.read_bytes(), max(1, broken // len(good)), seed=index):
            target = folder / f"{path.stem}-{name}.mp4"
            if not target.exists():
                target.write_bytes(data)
            damaged.append(target)
    return good, damaged


def baseline_decode(path: str) -> None:
    """The dropped-generator pattern: the first keyframe packet, decoded, then `break`."""
    import av

    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                if packet.is_keyframe:
                    stream.codec_context.decode(packet)
                    break
    except Exception:  # noqa: BLE001 - damaged files fail; only memory is measured here
        pass


def run(scenario: str, decodes: int, broken_share: float, warmup: int) -> dict:
    """One scenario in this process: RSS over `decodes` calls."""
    import psutil

    from shortvid.decode import DecodeError, read_frames

    good, damaged = corpus()
    rng = random.Random(0)
    calls = [str(rng.choice(damaged if rng.random() < broken_share else good)) for _ in range(decodes)]

    def shortvid_decode(path: str) -> bool:
        try:
            read_frames(path, 3, size=256, crop=224, timeout=10)
            return True
        except DecodeError:
            return False

    decode = baseline_decode if scenario.startswith("baseline") else shortvid_decode
    process = psutil.Process()
    samples, failed = [], 0
    step = max(1, decodes // 100)
    start = process.memory_info().rss
    started = time.perf_counter()
    if "threads" in scenario:
        with ThreadPoolExecutor(4) as pool:
            for index, ok in enumerate(pool.map(decode, calls), 1):
                failed += ok is False
                if index % step == 0:
                    samples.append((index, process.memory_info().rss))
    else:
        for index, path in enumerate(calls, 1):
            failed += decode(path) is False
            if index % step == 0:
                samples.append((index, process.memory_info().rss))
    seconds = time.perf_counter() - started
    after_warmup = next(rss for index, rss in samples if index >= warmup)
    end = samples[-1][1]
    mb = 2 ** 20
    return {"scenario": scenario, "decodes": decodes, "failed": failed if decode is shortvid_decode else None,
            "seconds": round(seconds, 1), "rss_start_mb": round(start / mb, 1),
            "rss_after_warmup_mb": round(after_warmup / mb, 1), "rss_end_mb": round(end / mb, 1),
            "growth_after_warmup_mb": round((end - after_warmup) / mb, 1),
            "growth_kb_per_1000": round((end - after_warmup) / 1024 / max(1, decodes - warmup) * 1000, 1),
            "samples_mb": [(index, round(rss / mb, 1)) for index, rss in samples]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decodes", type=int, default=10_000)
    parser.add_argument("--broken", type=float, default=0.5, help="share of calls on damaged files (default 0.5)")
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run(args.child, args.decodes, args.broken, args.warmup)))
        return

    from shortvid.machine import describe

    good, damaged = corpus()
    print(f"{len(good)} good videos, {len(damaged)} damaged copies; {args.decodes} decodes per scenario, "
          f"{args.broken:.0%} on damaged files", flush=True)
    results = []
    for scenario in args.scenarios.split(","):
        output = subprocess.run([sys.executable, __file__, "--child", scenario, "--decodes", str(args.decodes),
                                 "--broken", str(args.broken), "--warmup", str(args.warmup)],
                                capture_output=True, text=True, check=True)
        result = json.loads(output.stdout.strip().splitlines()[-1])
        results.append(result)
        print(f"{scenario:26s} {result['seconds']:7.1f} s  RSS start {result['rss_start_mb']:7.1f} MB, after warm-up "
              f"{result['rss_after_warmup_mb']:7.1f}, end {result['rss_end_mb']:7.1f}: "
              f"+{result['growth_after_warmup_mb']:.1f} MB after warm-up "
              f"({result['growth_kb_per_1000']:.0f} KB per 1,000 decodes)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": describe(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
