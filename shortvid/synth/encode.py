"""Write RGB frames to a video file with PyAV, with control over the properties decoders trip on.

Used to build the synthetic corpus and the decoder test media: codec and profile, GOP and forced
keyframes, B-frames, variable frame rate, display rotation, an optional audio track (optionally
muxed first) and mp4 faststart. Frames are streamed: nothing holds more than one input frame.

libx264 output is reproducible: the same frames and spec give the same video stream whatever the
process did before and whichever x86 SIMD level the CPU has (x264 `cpu-independent`, one thread).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.frame import PictureType

CONTAINER_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}
"""Output container (FFmpeg muxer name) per file suffix."""

ROTATION_CONTAINERS = frozenset({".mp4", ".mov", ".mkv", ".webm"})
"""Suffixes whose muxer stores display rotation (a display matrix) so that it reads back."""

AUDIO_RATE = 48000
"""Sample rate (Hz) of the audio track, mono; `encode_video`'s `audio_samples` are at this rate."""

_EVEN_SIZE_CODECS = ("libx264", "libx265")
_X265_MIN_SIZE = 16
_SUBSAMPLED_420 = ("yuv420p", "yuvj420p", "nv12", "nv21")
_X264_8BIT_420_PROFILES = ("baseline", "main", "high")
_AUDIO_TONE_HZ = 440.0
_AUDIO_AMPLITUDE = 0.05
_AUDIO_PRELOAD_US = 1_000_000  # audio_first: interleave audio this much ahead, beyond any B-frame delay
_VFR_TIME_BASE = Fraction(1, 90000)
_MPEG4_VFR_TIME_BASE = Fraction(1, 60000)  # MPEG-4 Part 2 caps the time base denominator at 65535


@dataclass(frozen=True)
class EncodeSpec:
    """How to encode: codec settings plus container-level properties (audio, faststart, rotation)."""

    codec: str = "libx264"  # libx264 | libx265 | libvpx-vp9 | mpeg4
    profile: str | None = "high"  # libx264 only (others ignore it); baseline has no B-frames
    fps: float = 30.0  # nominal rate and, without `times`, the constant rate
    gop: int = 120  # max frames from one keyframe to the next
    scenecut: bool = True  # keyframes at detected scene cuts (x264, x265, mpeg4; one-pass libvpx has none)
    bframes: int | None = None  # None: encoder default; libvpx has none (ignored)
    crf: int = 23  # x264/x265/vp9 constant quality; mpeg4 uses qscale round(crf / 4)
    preset: str = "veryfast"  # x264/x265 speed preset
    pix_fmt: str = "yuv420p"
    audio: bool = True  # a mono track, AAC or Opus in webm: a quiet 440 Hz tone unless samples are given
    audio_first: bool = False  # audio is stream 0 and its packets come before the video's
    faststart: bool = True  # mp4/mov: index (moov) before the media data
    rotation: int = 0  # display rotation, counter-clockwise degrees (multiple of 90)
    threads: int = 1  # encoder threads


@dataclass(frozen=True)
class EncodedVideo:
    """What was written, as the encoder saw it (the tests check it against a read-back)."""

    path: Path
    width: int
    height: int
    frames: int
    duration: float
    keyframe_times: tuple[float, ...]


def encode_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    spec: EncodeSpec = EncodeSpec(),
    *,
    times: Sequence[float] | None = None,
    keyframes: Collection[int] = (),
    audio_samples: np.ndarray | None = None,
) -> EncodedVideo:
    """Encode RGB uint8 frames [H, W, 3] (stored as given) into `path`; the container comes from the suffix
    (.mp4 .mov .mkv .webm .avi). `times`: per-frame presentation timestamps in seconds for variable frame rate
    (strictly increasing); `keyframes`: frame indices forced to be keyframes (IDR), e.g. at scene cuts.

    `audio_samples`: the audio track instead of the default tone, float mono samples in [-1, 1] at
    `AUDIO_RATE` (needs `spec.audio`); cut at the video's end, or padded with silence up to it.

    Frame 0 is always a keyframe. libx264/libx265 with a 4:2:0 pix_fmt need even sizes (ValueError
    otherwise): for odd sizes use pix_fmt="yuv444p" with profile=None, or libvpx-vp9 or mpeg4, which
    take them as they are. Duration is the last frame's time plus one nominal period (1/fps).
    Bad arguments raise ValueError; on any error the partial file is removed.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    _check_spec(spec, suffix, times)
    forced = _check_keyframes(keyframes)
    sound = None if audio_samples is None else _check_audio(audio_samples, spec)
    iterator = iter(frames)
    first = next(iterator, None)
    if first is None:
        raise ValueError(f"{path}: no frames to encode")
    first = _check_frame(first, None, 0)
    height, width = first.shape[:2]
    _check_size(spec, width, height)
    try:
        count, keyframe_times, end = _write(path, suffix, first, iterator, spec, times, forced, sound)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return EncodedVideo(path, width, height, count, end, keyframe_times)


def _check_spec(spec: EncodeSpec, suffix: str, times: Sequence[float] | None) -> None:
    """Reject settings that cannot be written as asked, before any file is created."""
    if suffix not in CONTAINER_FORMATS:
        raise ValueError(f"unsupported container suffix {suffix!r}; use one of {sorted(CONTAINER_FORMATS)}")
    if not spec.fps > 0:
        raise ValueError(f"fps must be positive, got {spec.fps}")
    if spec.gop < 1:
        raise ValueError(f"gop must be >= 1, got {spec.gop}")
    if spec.bframes is not None and spec.bframes < 0:
        raise ValueError(f"bframes must be None or >= 0, got {spec.bframes}")
    if spec.rotation % 90:
        raise ValueError(f"rotation must be a multiple of 90 degrees, got {spec.rotation}")
    if spec.rotation % 360 and suffix not in ROTATION_CONTAINERS:
        raise ValueError(f"{suffix} cannot store display rotation; use one of {sorted(ROTATION_CONTAINERS)}")
    if spec.codec == "libx264" and spec.profile is not None:
        if spec.profile in _X264_8BIT_420_PROFILES and spec.pix_fmt not in _SUBSAMPLED_420:
            raise ValueError(f"x264 profile {spec.profile!r} needs 8-bit 4:2:0, not {spec.pix_fmt}; "
                             "use profile=None or 'high444'")
        if spec.profile == "baseline" and spec.bframes:
            raise ValueError("x264 baseline profile has no B-frames; set bframes to None or 0")
    if suffix == ".webm" and spec.codec not in ("libvpx-vp9", "libvpx", "libaom-av1", "libsvtav1"):
        raise ValueError(f"webm holds VP8/VP9/AV1 only, not {spec.codec}")
    if times is not None:
        if suffix == ".avi":
            raise ValueError("avi has no per-frame timestamps; variable frame rate needs mp4/mov/mkv/webm")
        _check_times(times)


def _check_times(times: Sequence[float]) -> None:
    """VFR timestamps must start at or after 0 and strictly increase."""
    if len(times) and times[0] < 0:
        raise ValueError(f"times must be >= 0, got {times[0]}")
    for i in range(1, len(times)):
        if not times[i] > times[i - 1]:
            raise ValueError(f"times must strictly increase: times[{i}]={times[i]} after {times[i - 1]}")


def _check_keyframes(keyframes: Collection[int]) -> frozenset[int]:
    forced = frozenset(int(k) for k in keyframes)
    if any(k < 0 for k in forced):
        raise ValueError(f"keyframe indices must be >= 0, got {sorted(forced)}")
    return forced


def _check_audio(samples: np.ndarray, spec: EncodeSpec) -> np.ndarray:
    """Mono float samples in [-1, 1], or ValueError."""
    if not spec.audio:
        raise ValueError("audio_samples given but spec.audio is False")
    array = np.asarray(samples)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"audio_samples must be 1-D float (mono), got {array.dtype} {array.shape}")
    if not np.isfinite(array).all() or (array.size and float(np.abs(array).max()) > 1.0):
        raise ValueError("audio_samples must be finite and within [-1, 1]")
    return array.astype(np.float64)


def _check_size(spec: EncodeSpec, width: int, height: int) -> None:
    if spec.codec == "libx265" and min(width, height) < _X265_MIN_SIZE:
        raise ValueError(f"libx265 needs at least {_X265_MIN_SIZE}x{_X265_MIN_SIZE} pixels, got {width}x{height}")
    if spec.codec in _EVEN_SIZE_CODECS and spec.pix_fmt in _SUBSAMPLED_420 and (width % 2 or height % 2):
        raise ValueError(f"{spec.codec} with {spec.pix_fmt} needs even width and height, got {width}x{height}; "
                         "use pix_fmt='yuv444p' (profile=None), or codec 'libvpx-vp9' or 'mpeg4'")


def _check_frame(frame: np.ndarray, shape: tuple[int, ...] | None, index: int) -> np.ndarray:
    array = np.asarray(frame)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"frame {index}: expected uint8 [H, W, 3], got {array.dtype} {array.shape}")
    if shape is not None and array.shape != shape:
        raise ValueError(f"frame {index}: size {array.shape} differs from the first frame's {shape}")
    return np.ascontiguousarray(array)


def _rate(fps: float) -> Fraction:
    """The nominal rate as an exact fraction (29.97002997 -> 30000/1001)."""
    return Fraction(fps).limit_denominator(1001 * 1000)


def _scenecut_params(spec: EncodeSpec) -> list[str]:
    """x264/x265: min-keyint 1 so that every detected cut becomes a keyframe, not a mere I-frame."""
    return ["scenecut=40", "min-keyint=1"] if spec.scenecut else ["scenecut=0"]


def _video_options(spec: EncodeSpec) -> dict[str, str]:
    """Codec private options: GOP, scene cuts, B-frames, quality, and IDR on forced keyframes."""
    gop = str(spec.gop)
    if spec.codec == "libx264":
        # cpu-independent: x264's AVX-512 macroblock-tree kernels (mbtree_propagate_cost/list) let
        # uninitialised heap memory into their results, so without it the same frames encode to
        # different bytes depending on what the process allocated before (and the AVX2/FMA kernels
        # round differently from C). It swaps in the C versions (and drops the intra x9 asm): the
        # output is then a function of the input alone, on any x86 CPU, for ~3% more encoding time.
        params = [f"keyint={spec.gop}", *_scenecut_params(spec), "cpu-independent=1"]
        if spec.bframes is not None:
            params.append(f"bframes={spec.bframes}")
        options = {"x264-params": ":".join(params), "forced-idr": "1", "preset": spec.preset, "crf": str(spec.crf)}
        if spec.profile is not None:
            options["profile"] = spec.profile
        return options
    if spec.codec == "libx265":
        # cutree off: with it, the x265 bundled with PyAV 18 corrupts the heap at widths 33-48.
        # Closed GOPs so that forced keyframes are IDR, not CRA.
        params = [f"keyint={spec.gop}", *_scenecut_params(spec), "cutree=0", "open-gop=0",
                  f"pools={spec.threads}", f"frame-threads={spec.threads}", "log-level=error"]
        if spec.bframes is not None:
            params.append(f"bframes={spec.bframes}")
        return {"x265-params": ":".join(params), "forced-idr": "1", "preset": spec.preset, "crf": str(spec.crf)}
    if spec.codec.startswith("libvpx"):
        return {"g": gop, "crf": str(spec.crf), "b": "0", "deadline": "realtime", "cpu-used": "8"}
    options = {"g": gop}
    if spec.bframes is not None:
        options["bf"] = str(spec.bframes)
    if not spec.scenecut:
        options["sc_threshold"] = "1000000000"
    if spec.codec == "mpeg4":
        quantiser = str(max(2, min(31, round(spec.crf / 4))))
        options.update(qmin=quantiser, qmax=quantiser)
    return options


def _add_audio(container: av.container.OutputContainer, suffix: str) -> av.audio.stream.AudioStream:
    stream = container.add_stream("libopus" if suffix == ".webm" else "aac", rate=AUDIO_RATE)
    stream.layout = "mono"
    stream.time_base = Fraction(1, AUDIO_RATE)
    return stream


class _Tone:
    """The audio track cut into encoder-sized frames, produced on demand up to a given time: `samples`
    (silence after their end), or a quiet sine tone without them."""

    def __init__(self, stream: av.audio.stream.AudioStream, samples: np.ndarray | None = None):
        self.stream = stream
        self.given = samples
        self.samples = 0

    def frames_until(self, seconds: float, *, final: bool = False) -> Iterator[av.AudioFrame]:
        """Whole encoder frames that start before `seconds`; with `final`, end exactly there instead."""
        size = self.stream.codec_context.frame_size or 1024
        target = round(seconds * AUDIO_RATE)
        while self.samples + (0 if final else size) < target:
            yield self._frame(min(size, target - self.samples))

    def _wave(self, size: int) -> np.ndarray:
        if self.given is None:
            ticks = self.samples + np.arange(size)
            return _AUDIO_AMPLITUDE * np.sin(2 * math.pi * _AUDIO_TONE_HZ * ticks / AUDIO_RATE)
        wave = np.zeros(size)
        part = self.given[self.samples:self.samples + size]
        wave[:part.size] = part
        return wave

    def _frame(self, size: int) -> av.AudioFrame:
        fmt = self.stream.codec_context.format.name
        wave = self._wave(size)
        data = (wave * 32767).astype(np.int16) if fmt.startswith("s16") else wave.astype(np.float32)
        frame = av.AudioFrame.from_ndarray(data[None, :], format=fmt, layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = self.samples
        frame.time_base = Fraction(1, AUDIO_RATE)
        self.samples += size
        return frame


@dataclass
class _Clock:
    """Video frame timestamps in the encoder time base: constant rate, or rounded from `times`."""

    time_base: Fraction
    period: int
    times: Sequence[float] | None

    def pts(self, index: int) -> int:
        if self.times is None:
            return index * self.period
        if index >= len(self.times):
            raise ValueError(f"more frames than times ({len(self.times)})")
        return round(Fraction(self.times[index]) / self.time_base)

    def duration(self, index: int) -> int:
        """Until the next frame's time; the last frame lasts one nominal period."""
        if self.times is None or index + 1 >= len(self.times):
            return self.period
        return self.pts(index + 1) - self.pts(index)


def _clock(spec: EncodeSpec, times: Sequence[float] | None) -> _Clock:
    rate = _rate(spec.fps)
    if times is None:
        return _Clock(1 / rate, 1, None)
    time_base = _MPEG4_VFR_TIME_BASE if spec.codec == "mpeg4" else _VFR_TIME_BASE
    clock = _Clock(time_base, max(1, round(1 / (rate * time_base))), times)
    for i in range(len(times) - 1):
        if clock.duration(i) < 1:
            raise ValueError(f"times[{i}] and times[{i + 1}] are closer than the time base {time_base}")
    return clock


def _write(
    path: Path,
    suffix: str,
    first: np.ndarray,
    rest: Iterator[np.ndarray],
    spec: EncodeSpec,
    times: Sequence[float] | None,
    forced: frozenset[int],
    sound: np.ndarray | None = None,
) -> tuple[int, tuple[float, ...], float]:
    """Open the container, stream every frame through the encoder(s); return count, keyframe times, end."""
    clock = _clock(spec, times)
    options = {"movflags": "+faststart"} if spec.faststart and suffix in (".mp4", ".mov") else {}
    if spec.audio and spec.audio_first:
        options["audio_preload"] = str(_AUDIO_PRELOAD_US)
    keyframe_times: list[float] = []
    audio_shift: list[int] = []
    with av.open(str(path), "w", format=CONTAINER_FORMATS[suffix], options=options) as container:
        audio = _add_audio(container, suffix) if spec.audio and spec.audio_first else None
        video = container.add_stream(spec.codec, rate=_rate(spec.fps), options=_video_options(spec))
        if spec.audio and not spec.audio_first:
            audio = _add_audio(container, suffix)
        video.width, video.height = first.shape[1], first.shape[0]
        video.pix_fmt = spec.pix_fmt
        video.codec_context.time_base = clock.time_base
        video.time_base = clock.time_base
        video.codec_context.thread_count = spec.threads
        if spec.rotation % 360:
            video.set_display_rotation(spec.rotation % 360)
        tone = _Tone(audio, sound) if audio is not None else None

        def mux_video(frame: av.VideoFrame | None) -> None:
            for packet in video.encode(frame):
                if packet.is_keyframe and packet.pts is not None:
                    keyframe_times.append(float(packet.pts * packet.time_base))
                container.mux(packet)

        def mux_audio(frame: av.AudioFrame | None) -> None:
            for packet in audio.encode(frame):
                if suffix == ".avi":
                    # avi has no negative timestamps: left as is, the AAC priming makes the muxer
                    # shift every stream, which leaves a one-frame hole in the video timestamps.
                    if not audio_shift:
                        audio_shift.append(max(0, -(packet.dts or 0)))
                    packet.pts += audio_shift[0]
                    packet.dts += audio_shift[0]
                container.mux(packet)

        count = 0
        array: np.ndarray | None = first
        while array is not None:
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts = clock.pts(count)
            frame.duration = clock.duration(count)
            frame.time_base = clock.time_base
            frame.pict_type = PictureType.I if count in forced else PictureType.NONE
            mux_video(frame)
            end = float((frame.pts + frame.duration) * clock.time_base)
            count += 1
            if tone is not None:
                for audio_frame in tone.frames_until(end):
                    mux_audio(audio_frame)
            following = next(rest, None)
            array = None if following is None else _check_frame(following, first.shape, count)
        if times is not None and count != len(times):
            raise ValueError(f"{count} frames but {len(times)} times")
        if forced and max(forced) >= count:
            raise ValueError(f"keyframe indices {sorted(k for k in forced if k >= count)} beyond {count} frames")
        mux_video(None)
        if tone is not None:
            for audio_frame in tone.frames_until(end, final=True):
                mux_audio(audio_frame)
            mux_audio(None)
    return count, tuple(sorted(keyframe_times)), end
