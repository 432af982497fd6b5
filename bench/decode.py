"""Decoding 3 frames per video: shortvid's keyframe path against the floor (what no file-based way can
beat), uniform seeking, full decoding, decoder variants and the libraries a user would pick instead.

Baseline: the floor, and full decoding, in the same run. Prints the results as JSON (machine, versions,
corpus shapes, median ms/video, each method's ratio to the floor and to full decoding, mean absolute
pixel difference from the keyframe path, skipped peers with their reason), then a Markdown table.

Corpora (`--corpus`, generated once and reused): `realistic-720` (default) and `realistic-540`,
portrait 720x1280 or 540x960, 30 fps, a keyframe every 120 frames plus one at each cut, 10-15 s,
H.264 High + AAC, faststart; `real-shaped`, like the real uploads issue 14 measured (mostly 480x480
square, portrait 540x954-720x1282, one 1280x720 in 25; 6-15 s, AAC interleaved, 2-4 keyframes
mostly; half with `moov` at the end, a third without edit lists); `bench`, the `bench` preset's
shapes (`--videos` of them generated, or sampled with seed 0 from the corpus in `--bench-dir`).
Every way returns 3 RGB frames, short side 256, centre crop 224:

- keyframes:    shortvid's keyframe sampler (`read_frames`), the path training and serving use;
- floor:        the same keyframe packets, read into memory beforehand: a fresh decoder, decode
                them, convert and resize with shortvid's scaler;
- skip_nonkey:  FFmpeg's skip_frame=NONKEY over the whole file, 3 of the keyframes picked;
- uniform_seek: `read_frames(sampler="uniform")`: seek + decode forward to 3 segment centres;
- full_decode:  decode every frame, pick the 3 at the segment centres.

`--variants` adds decoder and scaler variants, each twice: on the in-memory floor (`floor+NAME`) and
through `read_frames` on the file (`file+NAME`, shortvid's tuning swapped for the call); see VARIANTS.
`--peers` adds decord, torchcodec, OpenCV and the `ffmpeg` CLI (`pip install -e .[bench]`); a peer
that is not installed, fails to import, or fails on any video (checked, then timed), is skipped with
its reason; the others go on. Peers resize with their own scaler to the output size shortvid
computes for the video (short side 256, same rounding) and take the same centre crop; OpenCV, which
has no decoder-side scaling, resizes with `cv2.resize(INTER_LINEAR)`. `ffmpeg_cli` returns the first
3 keyframes, so other frames. Methods run round-robin on each video (in a new shuffled order for
every video), repeated, so machine noise hits them alike.

    python bench/decode.py [--corpus realistic-720|realistic-540|real-shaped|bench] [--videos 24] [--repeats 5]
                           [--variants] [--peers] [--json results.json]
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import shutil
import statistics
import subprocess
from collections import Counter
from pathlib import Path

import av
import numpy as np

from shortvid.decode import (
    DEFAULT_TUNING,
    DecoderTuning,
    match_to_targets,
    read_frames,
    segment_targets,
)
from shortvid.decode.scaling import center_crop, output_size, scale_frame

from common import (
    CROP,
    GENERATED,
    SIZE,
    K,
    add_corpus_argument,
    container_shapes,
    corpus,
    interleaved,
    machine,
    make_parser,
    write_json,
)


def _output(frame: av.VideoFrame) -> tuple[int, int, int]:
    """(rotation, height, width) of the upright frame scaled to short side SIZE, as read_frames does."""
    rotation = int(frame.rotation or 0) % 360
    quarter = rotation in (90, 270)
    up_w, up_h = (frame.height, frame.width) if quarter else (frame.width, frame.height)
    height, width = output_size(up_h, up_w, SIZE)
    return rotation, height, width


def _finish(image: np.ndarray, rotation: int) -> np.ndarray:
    if rotation:
        image = np.rot90(image, k=rotation // 90)
    return np.ascontiguousarray(center_crop(image, CROP))


def _rgb(frame: av.VideoFrame, tuning: DecoderTuning = DEFAULT_TUNING) -> np.ndarray:
    """Short side SIZE, upright, centre crop CROP: read_frames' pixels (its scaler and tuning)."""
    rotation, height, width = _output(frame)
    if rotation in (90, 270):
        height, width = width, height
    return _finish(scale_frame(frame, width, height, tuning), rotation)


def keyframes(path: Path) -> np.ndarray:
    return read_frames(path, K, size=SIZE, crop=CROP).frames


def uniform_seek(path: Path) -> np.ndarray:
    return read_frames(path, K, sampler="uniform", size=SIZE, crop=CROP).frames


@dataclasses.dataclass
class Prepared:
    """What the floor and the peers get for free, measured once per video (not timed)."""

    codec: str
    extradata: bytes | None
    packets: dict[int, bytes]  # pts -> data of each chosen keyframe packet
    order: list[int]  # the pts of the frames read_frames returns, in its order
    times: list[float]  # their times, seconds
    fps: float | None  # None: the video declares no frame rate
    start: float
    height: int  # upright, short side SIZE
    width: int


def prepare(path: Path) -> Prepared:
    """The packets the keyframe path picks, copied into memory with what a decoder needs."""
    clip = read_frames(path, K, size=SIZE)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        tb = stream.time_base
        by_time = {}
        for p in container.demux(stream):
            if p.is_keyframe and p.pts is not None and p.size:
                by_time.setdefault(round(float(p.pts * tb), 4), (p.pts, bytes(p)))
        order = [by_time[round(t, 4)][0] for t in clip.times]
        packets = {pts: data for pts, data in by_time.values() if pts in order}
        height, width = clip.frames.shape[1:3]
        return Prepared(stream.codec_context.name, stream.codec_context.extradata, packets, order,
                        list(clip.times), clip.info.fps, clip.info.start, height, width)


_DECODERS: dict = {}


def floor(prepared: Prepared, *, tuning: DecoderTuning = DEFAULT_TUNING, reuse: bool = False) -> np.ndarray:
    """Decode the chosen packets with a fresh decoder (or, `reuse`, one kept across videos)."""
    key = (prepared.codec, prepared.extradata, tuning)
    context = _DECODERS.get(key) if reuse else None
    if context is None:
        context = av.CodecContext.create(prepared.codec, "r")
        if prepared.extradata:
            context.extradata = prepared.extradata
        context.thread_count = tuning.thread_count
        if tuning.thread_type:
            context.thread_type = tuning.thread_type
        if tuning.options:
            context.options = dict(tuning.options)
        if reuse:
            _DECODERS[key] = context
    images = {}
    for pts, data in prepared.packets.items():
        packet = av.Packet(data)
        packet.pts = pts
        decoded = context.decode(packet) + context.decode(None)
        context.flush_buffers()
        images[pts] = _rgb(decoded[0], tuning)
    return np.stack([images[pts] for pts in prepared.order])


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


# -- decoder and scaler variants ----------------------------------------------------------------
# Each is a change to shortvid's DecoderTuning. (Crop-before-scale, measured in issue 5 and no faster
# once the cropped planes are copied, is no longer a variant: docs/decoding.md.)
VARIANTS: dict[str, dict] = {
    "sws_auto_fresh": {"tuning": {"sws_threads": None, "reuse_scaler": False}},  # PyAV's to_ndarray defaults
    "sws_1_fresh": {"tuning": {"reuse_scaler": False}},  # one scaler thread, a new scaler per frame
    "threads2_slice": {"tuning": {"thread_count": 2, "thread_type": "SLICE"}},
    "threads2_frame": {"tuning": {"thread_count": 2, "thread_type": "FRAME"}},
    "threads2_auto": {"tuning": {"thread_count": 2, "thread_type": "AUTO"}},
    "skip_loop_filter": {"tuning": {"options": (("skip_loop_filter", "all"),)}},
    "skip_idct": {"tuning": {"options": (("skip_idct", "all"),)}},
    "flags2_fast": {"tuning": {"options": (("flags2", "+fast"),)}},
    "interp_fast_bilinear": {"tuning": {"interpolation": "FAST_BILINEAR"}},
    "interp_area": {"tuning": {"interpolation": "AREA"}},
    "interp_point": {"tuning": {"interpolation": "POINT"}},
    "interp_bicubic": {"tuning": {"interpolation": "BICUBIC"}},
    "reuse_decoder": {"reuse": True},  # floor only: a bare decoder kept across files loses rotation
}


def variant_methods(prepared: dict[Path, Prepared]) -> dict:
    methods = {}
    for name, spec in VARIANTS.items():
        tuning = dataclasses.replace(DEFAULT_TUNING, **spec.get("tuning", {}))
        reuse = bool(spec.get("reuse"))

        def on_floor(path, tuning=tuning, reuse=reuse):
            return floor(prepared[path], tuning=tuning, reuse=reuse)

        def on_file(path, tuning=tuning):
            return read_frames(path, K, size=SIZE, crop=CROP, tuning=tuning).frames

        methods[f"floor+{name}"] = on_floor
        if not reuse:  # a decoder kept across files would lose each stream's rotation: floor only
            methods[f"file+{name}"] = on_file
    return methods


# -- the libraries a user would pick instead ----------------------------------------------------
def _repeat(frames: list[np.ndarray]) -> np.ndarray:
    while len(frames) < K:
        frames.append(frames[-1])
    return np.stack(frames[:K])


def _choose(times: list[float], start: float, end: float) -> list[int]:
    """shortvid's choice among keyframes at `times`: nearest the segment centres."""
    return match_to_targets(times, segment_targets(start, end, K))


def peer_methods(prepared: dict[Path, Prepared]) -> tuple[dict, dict[str, str]]:
    """Each peer returns K RGB frames, short side SIZE, centre crop CROP, of the same keyframes where
    it can. Returns the methods and, for each skipped peer, why."""
    methods, skipped = {}, {}
    sample = next(iter(prepared))

    def check(name, method):
        try:
            out = method(sample)
            assert out.shape == (K, CROP, CROP, 3), out.shape
        except Exception as error:  # noqa: BLE001 - any failure: skip with its reason
            skipped[name] = f"fails on {sample.name}: {type(error).__name__}: {error}"
            return
        methods[name] = method

    try:
        import decord
    except Exception as error:  # noqa: BLE001
        skipped["decord"] = f"import failed: {type(error).__name__}: {error}"
    else:
        def decord_keyframes(path: Path) -> np.ndarray:
            p = prepared[path]
            video = decord.VideoReader(str(path), ctx=decord.cpu(0), width=p.width, height=p.height)
            keys = list(video.get_key_indices())
            fps = video.get_avg_fps()
            chosen = [keys[i] for i in _choose([i / fps for i in keys], 0.0, len(video) / fps)]
            batch = video.get_batch(chosen).asnumpy()
            return np.stack([center_crop(image, CROP) for image in batch])

        check("decord", decord_keyframes)

    try:
        from torchcodec.decoders import VideoDecoder
        from torchcodec.transforms import Resize
    except Exception as error:  # noqa: BLE001
        skipped["torchcodec"] = f"import failed: {type(error).__name__}: {error}"
    else:
        def torchcodec_keyframes(path: Path, seek_mode: str = "exact") -> np.ndarray:
            # No public keyframe list (only the private `_get_key_frame_indices`): the frames
            # played at the keyframe times shortvid picks.
            p = prepared[path]
            decoder = VideoDecoder(str(path), dimension_order="NHWC", seek_mode=seek_mode,
                                   transforms=[Resize((p.height, p.width))])
            batch = decoder.get_frames_played_at(p.times).data.numpy()
            return np.stack([center_crop(image, CROP) for image in batch])

        check("torchcodec", torchcodec_keyframes)
        check("torchcodec_approx", lambda path: torchcodec_keyframes(path, "approximate"))

    try:
        import cv2
    except Exception as error:  # noqa: BLE001
        skipped["opencv"] = f"import failed: {type(error).__name__}: {error}"
    else:
        def opencv_keyframes(path: Path) -> np.ndarray:
            p = prepared[path]
            if p.fps is None:
                raise RuntimeError("the video declares no frame rate, and OpenCV seeks by frame index")
            capture = cv2.VideoCapture(str(path))
            frames = []
            try:
                for t in p.times:
                    capture.set(cv2.CAP_PROP_POS_FRAMES, round((t - p.start) * p.fps))
                    ok, bgr = capture.read()
                    if not ok:
                        raise RuntimeError(f"no frame at {t:.3f} s")
                    image = cv2.resize(bgr, (p.width, p.height), interpolation=cv2.INTER_LINEAR)
                    frames.append(np.ascontiguousarray(center_crop(image, CROP)[..., ::-1]))
            finally:
                capture.release()
            return np.stack(frames)

        check("opencv", opencv_keyframes)

    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        skipped["ffmpeg_cli"] = "no `ffmpeg` on PATH"
    else:
        def ffmpeg_cli(path: Path) -> np.ndarray:
            # The seed's way: the first K keyframes (not chosen per segment), one process per video.
            p = prepared[path]
            command = [ffmpeg, "-v", "error", "-skip_frame", "nokey", "-i", str(path), "-vsync", "0",
                       "-frames:v", str(K), "-vf", f"scale={p.width}:{p.height}:flags=bilinear",
                       "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
            raw = subprocess.run(command, capture_output=True, check=True, timeout=60).stdout
            images = np.frombuffer(raw, np.uint8).reshape(-1, p.height, p.width, 3)
            return _repeat([np.ascontiguousarray(center_crop(image, CROP)) for image in images])

        check("ffmpeg_cli", ffmpeg_cli)
    return methods, skipped


def _versions() -> dict[str, str]:
    found = {}
    for module in ("av", "decord", "torchcodec", "cv2"):
        try:
            found[module] = str(importlib.import_module(module).__version__)
        except Exception as error:  # noqa: BLE001 - not installed or broken: say so
            found[module] = f"unavailable ({type(error).__name__})"
    return found


def main() -> None:
    parser = make_parser(__doc__)
    add_corpus_argument(parser, choices=(*GENERATED, "bench"))
    parser.add_argument("--bench-dir", type=Path, default=None,
                        help="--corpus bench: sample the videos from this folder of a `bench` preset corpus "
                             "(default: generate --videos of the preset's shapes)")
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--variants", action="store_true", help="add decoder and scaler variants")
    parser.add_argument("--peers", action="store_true", help="add decord, torchcodec, OpenCV and the ffmpeg CLI")
    args = parser.parse_args()

    paths = corpus(args.corpus, args.videos, args.bench_dir)
    prepared = {path: prepare(path) for path in paths}
    facts = [read_frames(path, K, size=SIZE) for path in paths]
    # Sanity: the keyframe path and the floor return the same pixels.
    reference = {path: keyframes(path) for path in paths}
    differ = [path.name for path in paths if not np.array_equal(reference[path], floor(prepared[path]))]
    if differ:
        print(f"warning: keyframe path and floor differ on {len(differ)} videos: {differ[:5]}")
        if args.corpus != "bench":
            raise SystemExit(1)

    methods = {
        "floor": lambda path: floor(prepared[path]),
        "keyframes": keyframes,
        "skip_nonkey": skip_nonkey,
        "uniform_seek": uniform_seek,
        "full_decode": full_decode,
    }
    skipped: dict[str, str] = {}
    if args.variants:
        methods.update(variant_methods(prepared))
    peers: set[str] = set()
    if args.peers:
        found, skipped = peer_methods(prepared)
        methods.update(found)
        peers = set(found)
        for name, why in skipped.items():
            print(f"skipping {name}: {why}")

    def run(name: str, path: Path) -> np.ndarray | None:
        """The method's frames; None once a peer fails, which is then skipped with its reason."""
        if name not in methods:  # a peer dropped on an earlier video
            return None
        try:
            return methods[name](path)
        except Exception as error:  # any failure of a peer: skip it, say why (others are raised)
            if name not in peers:
                raise
            skipped[name] = f"fails on {path.name}: {type(error).__name__}: {error}"
            print(f"skipping {name}: {skipped[name]}")
            del methods[name]
            return None

    # Pixels: mean absolute difference from the keyframe path's frames (untimed pass). It also runs
    # every peer on every video once, so a peer that fails on any of them is dropped before timing.
    diff = {}
    for name in list(methods):
        differences = []
        for path in paths:
            frames = run(name, path)
            if frames is None:
                break
            differences.append(np.abs(frames.astype(np.int16) - reference[path]).mean())
        else:
            diff[name] = float(np.mean(differences))
    _DECODERS.clear()

    calls = {name: lambda path, name=name: run(name, path) for name in methods}
    times = {name: [ms for by_video in per_video.values() for ms in by_video]
             for name, per_video in interleaved(calls, paths, args.repeats).items()}

    median = {name: statistics.median(values) for name, values in times.items() if name in methods}
    results = {
        "machine": machine(),
        "versions": _versions(),
        "corpus": args.corpus,
        "videos": len(paths),
        "repeats": args.repeats,
        "sizes": dict(sorted(Counter(f"{f.info.width}x{f.info.height}" for f in facts).items())),
        "containers": container_shapes(paths) if args.corpus == "real-shaped" else None,
        "keyframes_per_video": dict(sorted(Counter(str(f.info.keyframes) for f in facts).items())),
        "median_ms": {name: round(value, 2) for name, value in median.items()},
        "x_floor": {name: round(value / median["floor"], 2) for name, value in median.items()},
        "full_decode_x": {name: round(median["full_decode"] / value, 1) for name, value in median.items()},
        "mean_abs_diff": {name: round(value, 3) for name, value in diff.items()},
        "skipped": skipped,
    }
    print(json.dumps(results, indent=2))
    print("\n| method | median ms/video | × floor | full decode ÷ method | mean abs diff |\n"
          "| --- | --- | --- | --- | --- |")
    for name in methods:
        print(f"| {name} | {results['median_ms'][name]:.1f} | {results['x_floor'][name]:.2f} | "
              f"{results['full_decode_x'][name]:.1f} | {results['mean_abs_diff'][name]:.3f} |")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
