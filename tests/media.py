"""Tiny edge-case videos and broken files for the decoder tests, generated on the fly.

Every good video shows the same test pattern: a moving gradient, the frame index written as
eight black/white cells along the bottom (`read_index` reads it back), and a red square at the
top-left of the upright picture (`marker_corner` finds it), so tests can tell which frame they
got and whether it was turned upright. `reference_keyframes` is an independent full decode.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from shortvid.synth.encode import EncodedVideo, EncodeSpec, encode_video

INDEX_BITS = 8
MARKER_RGB = (255, 0, 0)


def pattern_frame(index: int, width: int, height: int) -> np.ndarray:
    """The upright test picture for frame `index`, RGB uint8 [height, width, 3]."""
    y, x = np.mgrid[0:height, 0:width]
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = 40
    frame[..., 1] = (60 + 40 * np.sin((x + y + 2 * index) / 6.0)).astype(np.uint8)
    frame[..., 2] = 140
    side = max(2, min(width, height) // 4)
    frame[:side, :side] = MARKER_RGB
    top = height - max(2, height // 4)
    for bit in range(INDEX_BITS):
        left, right = bit * width // INDEX_BITS, (bit + 1) * width // INDEX_BITS
        frame[top:, left:right] = 255 if index >> bit & 1 else 0
    return frame


def read_index(rgb: np.ndarray) -> int:
    """The frame index (mod 256) that `pattern_frame` wrote into an upright picture; reliable from 64x48 up."""
    height, width = rgb.shape[:2]
    top = height - max(2, height // 4)
    margin = (height - top) // 4
    band = rgb[top + margin: height - margin].astype(float).mean(axis=(0, 2))
    index = 0
    for bit in range(INDEX_BITS):
        left, right = bit * width // INDEX_BITS, (bit + 1) * width // INDEX_BITS
        inset = (right - left) // 4
        index |= int(band[left + inset: right - inset].mean() > 128) << bit
    return index


def marker_corner(rgb: np.ndarray) -> str:
    """Which corner holds the red marker: 'top_left' for an upright picture."""
    height, width = rgb.shape[:2]
    side = max(1, min(width, height) // 8)
    redness = rgb[..., 0].astype(float) - rgb[..., 1:].astype(float).mean(axis=-1)
    corners = {
        "top_left": redness[:side, :side],
        "top_right": redness[:side, -side:],
        "bottom_left": redness[-side:, :side],
        "bottom_right": redness[-side:, -side:],
    }
    return max(corners, key=lambda name: corners[name].mean())


def stored_frames(n_frames: int, width: int, height: int, rotation: int) -> Iterator[np.ndarray]:
    """Pictures as stored in a file whose display rotation is `rotation` (counter-clockwise degrees).

    A player turns the stored picture counter-clockwise by `rotation`, so it is stored turned the
    other way; the upright picture is `height` x `width` for 90 and 270.
    """
    turns = rotation // 90 % 4
    upright_w, upright_h = (height, width) if turns % 2 else (width, height)
    for index in range(n_frames):
        yield np.ascontiguousarray(np.rot90(pattern_frame(index, upright_w, upright_h), -turns))


def make_video(
    dir: str | Path,
    name: str,
    *,
    codec: str = "libx264",
    container_suffix: str = ".mp4",
    size: tuple[int, int] = (64, 48),
    n_frames: int = 30,
    fps: float = 30.0,
    gop: int = 15,
    keyframes: Collection[int] = (),
    bframes: int | None = None,
    profile: str | None = None,
    audio: bool = False,
    audio_first: bool = False,
    rotation: int = 0,
    times: Sequence[float] | None = None,
    faststart: bool = True,
    pix_fmt: str = "yuv420p",
    scenecut: bool = False,
) -> EncodedVideo:
    """Encode the test pattern into dir/name + container_suffix.

    `size` is the stored picture size (width, height), before display rotation. Scene-cut detection
    is off by default, so keyframes fall only at 0, at `keyframes` and where the GOP length runs out.
    """
    spec = EncodeSpec(
        codec=codec, profile=profile, fps=fps, gop=gop, scenecut=scenecut, bframes=bframes, pix_fmt=pix_fmt,
        audio=audio, audio_first=audio_first, faststart=faststart, rotation=rotation,
    )
    path = Path(dir) / f"{name}{container_suffix}"
    frames = stored_frames(n_frames, size[0], size[1], rotation)
    return encode_video(path, frames, spec, times=times, keyframes=keyframes)


def _vfr_times(n_frames: int) -> tuple[float, ...]:
    """Irregular gaps in whole milliseconds, so mkv/webm (1 ms clock) keep them exactly."""
    gaps = (0.04, 0.02, 0.1, 0.03, 0.25)
    return tuple(round(sum(gaps[i % len(gaps)] for i in range(k)), 3) for k in range(n_frames))


@dataclass(frozen=True)
class VideoCase:
    """A named test video: the arguments of `make_video`, less the directory."""

    name: str
    options: dict = field(default_factory=dict)

    def make(self, dir: str | Path) -> EncodedVideo:
        return make_video(dir, self.name, **self.options)

    def get(self, key: str):
        """The option's value, or make_video's default for it."""
        return self.options.get(key, make_video.__kwdefaults__[key])


def _case(name: str, **options) -> VideoCase:
    return VideoCase(name, options)


CODEC_CASES: list[VideoCase] = [
    _case("h264_baseline_mp4", profile="baseline", audio=True),
    _case("h264_high_bframes_mp4", profile="high", bframes=3, audio=True),
    _case("h264_main_mov", container_suffix=".mov", profile="main", audio=True),
    _case("h264_mkv", container_suffix=".mkv", bframes=2, audio=True),
    _case("hevc_mp4", codec="libx265", bframes=3, audio=True),
    _case("hevc_mkv", codec="libx265", container_suffix=".mkv"),
    _case("vp9_webm", codec="libvpx-vp9", container_suffix=".webm", audio=True),
    _case("mpeg4_avi", codec="mpeg4", container_suffix=".avi", audio=True),
    _case("mpeg4_bframes_mp4", codec="mpeg4", bframes=2),
    _case("vfr_h264_mp4", n_frames=24, times=_vfr_times(24), keyframes=(10,), audio=True),
    _case("vfr_vp9_webm", codec="libvpx-vp9", container_suffix=".webm", n_frames=24, times=_vfr_times(24)),
    _case("vfr_h264_mkv", container_suffix=".mkv", n_frames=24, times=_vfr_times(24), bframes=2),
    _case("rotate90_mp4", rotation=90),
    _case("rotate270_mov", container_suffix=".mov", rotation=270),
    _case("rotate180_mkv", container_suffix=".mkv", rotation=180),
    _case("rotate90_hevc_mp4", codec="libx265", rotation=90),
    _case("odd_33x17_vp9_webm", codec="libvpx-vp9", container_suffix=".webm", size=(33, 17)),
    _case("odd_33x17_mpeg4_avi", codec="mpeg4", container_suffix=".avi", size=(33, 17)),
    _case("odd_33x17_h264_444_mkv", container_suffix=".mkv", size=(33, 17), pix_fmt="yuv444p"),
    _case("tiny_16x16_h264_mp4", size=(16, 16)),
    _case("one_frame_mp4", n_frames=1, audio=True),
    _case("audio_first_mp4", bframes=2, audio=True, audio_first=True),
    _case("audio_first_mkv", container_suffix=".mkv", audio=True, audio_first=True),
    _case("single_keyframe_mp4", n_frames=90, gop=1000),
    _case("keyframe_per_second_mp4", n_frames=90, gop=30),
    _case("forced_keyframes_mp4", n_frames=40, gop=1000, keyframes=(7, 8, 23)),
    _case("non_faststart_mp4", faststart=False, audio=True),
]
"""Codecs, containers and edge cases. Keyframes fall at frame 0, at `keyframes` and wherever `gop` frames
have passed since the previous keyframe (mpeg4 with B-frames may also make its last frame an I-frame)."""

CASES: dict[str, VideoCase] = {case.name: case for case in CODEC_CASES}


def _write_audio_only(path: Path, seconds: float = 1.0) -> None:
    """An AAC-in-mp4 file with no video stream."""
    rate = 48000
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        size = stream.codec_context.frame_size or 1024
        for start in range(0, int(seconds * rate), size):
            t = (start + np.arange(size)) / rate
            frame = av.AudioFrame.from_ndarray(
                (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :], format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _damage_non_key_packets(source: Path, target: Path, every: int = 2) -> int:
    """Copy `source`, overwriting the payload middle of every `every`-th non-key video packet.

    The first 8 bytes of each damaged packet (NAL length and header) are kept, so the stream still
    parses and the decoder meets broken slice data. Returns how many packets were damaged.
    """
    spans = []
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        non_key = [p for p in container.demux(stream) if p.size > 24 and not p.is_keyframe and p.pos is not None]
        for packet in non_key[::every]:
            spans.append((packet.pos + 8, packet.size - 8))
    data = bytearray(source.read_bytes())
    rng = np.random.default_rng(7)
    for start, length in spans:
        data[start:start + length] = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
    target.write_bytes(bytes(data))
    return len(spans)


def make_bad_inputs(dir: str | Path) -> dict[str, Path]:
    """Broken or video-less files, all named *.mp4 so a suffix check cannot tell them apart.

    empty; truncated_faststart (index intact, media data cut in half); truncated_no_faststart
    (cut before its index: unreadable); random_bytes; text; audio_only (no video stream);
    damaged_packets (payload of some non-key H.264 packets overwritten, keyframes intact).
    """
    dir = Path(dir)
    paths = {name: dir / f"{name}.mp4" for name in (
        "empty", "truncated_faststart", "truncated_no_faststart", "random_bytes", "text", "audio_only",
        "damaged_packets")}
    paths["empty"].write_bytes(b"")
    for name, faststart in (("truncated_faststart", True), ("truncated_no_faststart", False)):
        whole = make_video(dir, f"{name}_whole", size=(96, 64), n_frames=60, audio=True, faststart=faststart).path
        data = whole.read_bytes()
        paths[name].write_bytes(data[: len(data) // 2])
        whole.unlink()
    paths["random_bytes"].write_bytes(np.random.default_rng(3).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    paths["text"].write_text("this is not a video\n" * 50)
    _write_audio_only(paths["audio_only"])
    intact = make_video(dir, "damaged_packets_intact", size=(128, 96), n_frames=60, gop=30, bframes=0)
    _damage_non_key_packets(intact.path, paths["damaged_packets"])
    intact.path.unlink()
    return paths


def reference_keyframes(path: str | Path) -> list[tuple[float, np.ndarray]]:
    """Every frame the decoder marks as a keyframe, in display order: (time in s, upright RGB).

    A full decode of the first video stream; each picture is turned upright with numpy by its
    `frame.rotation` (counter-clockwise degrees, as a player applies it: np.rot90 by the same angle).
    """
    keyframes = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if not frame.key_frame:
                continue
            rgb = frame.to_ndarray(format="rgb24")
            keyframes.append((float(frame.time), np.ascontiguousarray(np.rot90(rgb, frame.rotation // 90 % 4))))
    return keyframes
