"""Decoding benchmark: the keyframe path against the floor, uniform seeking and full decoding.

On a generated realistic corpus (portrait 720x1280, 30 fps, a keyframe every 120 frames plus one
at each cut, 10-15 s, H.264 High + AAC, faststart), every way returns 3 RGB frames, short side
256, centre crop 224:

- keyframes:    shortvid's keyframe sampler (`read_frames`), the path training and serving use;
- floor:        the same 3 keyframe packets, read into memory beforehand: a fresh decoder,
                decode them, convert and resize: what no file-based way can beat;
- skip_nonkey:  FFmpeg's skip_frame=NONKEY over the whole file, 3 of the keyframes picked;
- uniform_seek: `read_frames(sampler="uniform")`: seek + decode forward to 3 segment centres;
- full_decode:  decode every frame, pick the 3 at the segment centres.

Methods run round-robin on each video, repeated, so machine noise hits them alike; the report
gives median ms/video and each method's ratio to the floor and to full decoding.

    python bench/decode.py [--videos 24] [--repeats 5] [--json results.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

import av
import numpy as np

from shortvid.decode import read_frames, segment_targets
from shortvid.machine import describe
from shortvid.synth.corpus import generate_corpus, preset

SIZE, CROP, K = 256, 224, 3
CACHE = Path(__file__).parent / ".cache"


def realistic_corpus(videos: int) -> list[Path]:
    """Competition-like videos, generated once and kept in bench/.cache."""
    spec = dataclasses.replace(
        preset("small"), name="decode-bench", num_classes=4, num_groups=2, num_videos=max(videos, 4), min_videos_per_class=1,
        sizes=((720, 1280),), legacy_share=0.0, vfr_share=0.0, rotated_share=0.0, audio_first_share=0.0,
        clip_name_share=0.0, duration=(10.0, 15.0), fps=30.0, gop=120, render_short_side=240, difficulty=0.3,
        seed=7,
    )
    out = CACHE / f"decode-corpus-{videos}"
    generate_corpus(out, spec, workers=os.cpu_count(), progress=True)
    return sorted((out / "videos").glob("*.mp4"))


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    """Short side SIZE, centre crop CROP, as read_frames does it (no rotation in this corpus)."""
    scale = SIZE / min(frame.width, frame.height)
    width, height = round(frame.width * scale), round(frame.height * scale)
    image = frame.to_ndarray(format="rgb24", width=width, height=height)
    top, left = (height - CROP) // 2, (width - CROP) // 2
    return np.ascontiguousarray(image[top:top + CROP, left:left + CROP])


def keyframes(path: Path) -> np.ndarray:
    return read_frames(path, K, size=SIZE, crop=CROP).frames


def uniform_seek(path: Path) -> np.ndarray:
    return read_frames(path, K, sampler="uniform", size=SIZE, crop=CROP).frames


def prepare_floor(path: Path) -> tuple[str, bytes | None, list[tuple[bytes, int]]]:
    """The packets the keyframe path picks, copied into memory with what a decoder needs."""
    chosen = {round(t, 4) for t in read_frames(path, K, size=SIZE).times}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [(bytes(p), p.pts) for p in container.demux(stream)
                   if p.is_keyframe and p.pts is not None and round(float(p.pts * stream.time_base), 4) in chosen]
        return stream.codec_context.name, stream.codec_context.extradata, packets


def floor(prepared: tuple[str, bytes | None, list[tuple[bytes, int]]]) -> np.ndarray:
    codec, extradata, packets = prepared
    context = av.CodecContext.create(codec, "r")
    if extradata:
        context.extradata = extradata
    context.thread_count = 1
    frames = []
    for data, pts in packets:
        packet = av.Packet(data)
        packet.pts = pts
        decoded = context.decode(packet) + context.decode(None)
        context.flush_buffers()
        frames.append(_rgb(decoded[0]))
    while len(frames) < K:
        frames.append(frames[-1])
    return np.stack(frames)


def skip_nonkey(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONKEY"
        decoded = [(frame.time, frame) for frame in container.decode(stream)]
    duration = float(stream.duration * stream.time_base)
    chosen = [min(decoded, key=lambda item: abs(item[0] - target))[1] for target in segment_targets(0.0, duration, K)]
    return np.stack([_rgb(frame) for frame in chosen])


def full_decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [(frame.time, frame) for frame in container.decode(stream)]
    times = np.array([t for t, _ in decoded])
    end = times[-1] + (times[-1] - times[-2])
    chosen = [decoded[max(0, int(np.searchsorted(times, target, side="right")) - 1)][1]
              for target in segment_targets(float(times[0]), float(end), K)]
    return np.stack([_rgb(frame) for frame in chosen])


def machine() -> str:
    m = describe()
    return f"{m['arch']}, {m['cores']} cores, {m['cpu']}; Python {m['python']}, PyAV {m['pyav']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    paths = realistic_corpus(args.videos)
    prepared = {path: prepare_floor(path) for path in paths}
    facts = [read_frames(path, K, size=SIZE) for path in paths]
    # Sanity: the keyframe path and the floor return the same pixels.
    for path in paths:
        assert np.array_equal(keyframes(path), floor(prepared[path])), path

    methods = {
        "floor": lambda path: floor(prepared[path]),
        "keyframes": keyframes,
        "skip_nonkey": skip_nonkey,
        "uniform_seek": uniform_seek,
        "full_decode": full_decode,
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.repeats):
        for path in paths:
            for name, method in methods.items():
                started = time.perf_counter()
                method(path)
                times[name].append((time.perf_counter() - started) * 1000)

    median = {name: statistics.median(values) for name, values in times.items()}
    results = {
        "machine": machine(),
        "videos": len(paths),
        "repeats": args.repeats,
        "keyframes_per_video": dict(sorted(
            {str(n): sum(f.info.keyframes == n for f in facts) for n in {f.info.keyframes for f in facts}}.items())),
        "median_ms": {name: round(value, 2) for name, value in median.items()},
        "x_floor": {name: round(value / median["floor"], 2) for name, value in median.items()},
        "full_decode_x": {name: round(median["full_decode"] / value, 1) for name, value in median.items()},
    }
    print(json.dumps(results, indent=2))
    print("\n| method | median ms/video | × floor | full decode ÷ method |\n| --- | --- | --- | --- |")
    for name in methods:
        print(f"| {name} | {results['median_ms'][name]:.1f} | {results['x_floor'][name]:.2f} | "
              f"{results['full_decode_x'][name]:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
