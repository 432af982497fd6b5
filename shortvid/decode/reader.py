"""Read ``k`` RGB frames from a short video with PyAV, decoding as little as possible.

The keyframe sampler never decodes a non-key frame: it finds the keyframes from the
container's sample index (MP4/MOV: free, built at open) or from one pass over the demuxed
packets (other containers: no decoding), chooses one per TSN segment, and decodes each chosen
keyframe packet on its own. Scaling and pixel conversion happen in swscale; rotation metadata is
applied so frames come out upright. See ``docs/decoding.md`` for the measured reasons.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import stat
import threading
import time
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import BinaryIO, Literal, Union, get_args

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from ..errors import (
    CorruptVideoError,
    DecodeError,
    DecodeTimeoutError,
    InvalidVideoError,
    NoVideoStreamError,
    UnexpectedDecodeError,
    VideoNotFoundError,
    VideoTooLargeError,
)
from .sampling import (
    Mode,
    match_to_targets,
    match_within_reach,
    near_reach,
    place_times,
    segment_targets,
)

Source = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]
Sampler = Literal["keyframes", "uniform"]
Fill = Literal["repeat", "seek", "none", "near"]
Size = Union[int, tuple[int, int], None]
# Where a value of ``VideoInfo`` came from, cheapest first: the stream headers as FFmpeg reports
# them, the container's sample index (MP4/MOV), one pass over the demuxed packets, decoded frames.
Provenance = Literal["header", "index", "packets", "decoded"]
# fill="near": frames decoded past a keyframe per segment it fills, at most. Measured with k=3
# (bench/frame_policy.py, docs/decoding.md): 8 (a quarter second at 30 fps) keeps the corpus median
# within the 1.5x of the keyframes-only decode that the issue allows, where 16 passes it on a corpus
# of uploads with keyframes at their cuts only; a filled frame's RGB conversion costs more than its decode.
DEFAULT_MAX_DECODE = 8

# Skipping every frame while FFmpeg probes the streams saves the probe's decode; the streams'
# parameters still come from the headers. Checked on every codec in the tests.
_FAST_OPEN = {"skip_frame": "all"}
# MP4/MOV (and most containers) carry every stream parameter in their headers: reading packets
# to estimate them costs more than the rest of opening. Where a header lacks the video size
# (e.g. MPEG-TS), `_open` probes again the usual way.
_SHORT_PROBE = {"probesize": "32", "analyzeduration": "0", "fpsprobesize": "0"}
_LAST_KEYFRAME_SLACK = 1.0  # seconds past the last keyframe's decode time to aim its seek at


@dataclass(frozen=True)
class DecoderTuning:
    """How the decoder and the scaler run. The defaults (``DEFAULT_TUNING``) are the measured fastest
    settings that give the same pixels; ``read_frames(tuning=...)`` runs others, which
    ``bench/decode.py --variants`` and ``bench/decode_accuracy.py`` measure. A run serves with the
    default: a model should see the pixels it was trained on."""

    thread_count: int = 1  # one keyframe at a time: threads only add hand-off cost
    thread_type: str | None = None  # "SLICE", "FRAME", "AUTO"; None keeps FFmpeg's default
    options: tuple[tuple[str, str], ...] = ()  # decoder AVOptions, e.g. (("skip_loop_filter", "all"),)
    interpolation: str | None = None  # swscale algorithm; None: BILINEAR (PyAV's default)
    # swscale threads: PyAV 18 defaults to 0 (automatic), which starts a thread pool for every
    # scaler; one thread on a reused scaler gives the same pixels in half the time (bench/decode.py).
    sws_threads: int | None = 1
    reuse_scaler: bool = True  # one VideoReformatter (cached SwsContext) per thread


DEFAULT_TUNING = DecoderTuning()


@dataclass(frozen=True)
class DecodeLimits:
    """The largest frames ``read_frames`` decodes. A video beyond them raises ``VideoTooLargeError``
    before its pixels are decoded or scaled: the headers are checked when the file opens, FFmpeg's
    decoder refuses pictures over ``max_pixels`` (a stream can claim another size than its headers),
    and each decoded frame is checked before scaling. The defaults admit every real upload, 8K UHD
    (7680x4320) and portrait 4K included, and refuse a 1.7 KB file claiming 65520x16 (which, scaled
    to a short side of 128, would be a 575 MiB array)."""

    max_width: int = 8192  # of the upright picture
    max_height: int = 8192
    max_pixels: int = 7680 * 4320  # width x height
    max_aspect: float = 8.0  # longer side / shorter side

    def __post_init__(self) -> None:
        if min(self.max_width, self.max_height, self.max_pixels) < 1 or not self.max_aspect >= 1:
            raise ValueError(f"decode limits must be positive and max_aspect at least 1: {self}")

    def problem(self, width: int, height: int, either_way: bool = False) -> str | None:
        """Why a ``width`` x ``height`` picture is refused, or None. ``either_way``: the rotation is not
        known yet, so the picture passes if it fits the width and height limits turned either way."""
        if width <= 0 or height <= 0:
            return None  # unknown: checked again on the decoded frame
        fits = width <= self.max_width and height <= self.max_height
        if either_way:
            fits = fits or (height <= self.max_width and width <= self.max_height)
        if not fits:
            return f"over the {self.max_width}x{self.max_height} limit"
        if width * height > self.max_pixels:
            return f"{width * height / 1e6:.1f} megapixels, over the {self.max_pixels / 1e6:.1f} limit"
        aspect = max(width, height) / min(width, height)
        if aspect > self.max_aspect:
            return f"aspect ratio {aspect:.0f}:1, over the {self.max_aspect:g}:1 limit"
        return None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
_LOCAL = threading.local()  # per-thread scaler
_SWS_THREADS = True  # whether this PyAV's reformat takes `threads` (added in later releases)


@dataclass(frozen=True)
class VideoInfo:
    """Facts about a video, each from where it was measured (index or packets, not header counts).

    ``sources`` says where each measured value came from: ``"header"`` (the stream parameters FFmpeg
    reports), ``"index"`` (the MP4/MOV sample table), ``"packets"`` (one pass over the demuxed
    packets) or ``"decoded"`` (the decoded frames), keyed by ``fps``, ``start``, ``duration``,
    ``keyframes`` (count and times), ``width``, ``height`` and ``rotation``. A field it leaves out was
    not measured: ``fps`` is then None, and ``keyframes`` 0 (the uniform sampler does not look for
    keyframes where the index or the header gives the span).
    """

    source: str
    container: str
    codec: str
    width: int  # upright, after rotation
    height: int
    rotation: int  # counter-clockwise degrees applied to make frames upright
    fps: float | None  # the headers' nominal frame rate; None when they give none
    start: float  # presentation time of the first frame, seconds
    duration: float  # seconds, from packet timestamps where known
    keyframes: int  # keyframes found in the video stream
    keyframe_times: tuple[float, ...]
    index: Literal["container", "packets", "none"]  # where the keyframes were found
    sources: dict[str, Provenance] = field(hash=False)  # field -> where its value came from

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "container": self.container,
            "codec": self.codec,
            "width": self.width,
            "height": self.height,
            "rotation": self.rotation,
            "fps": None if self.fps is None else round(self.fps, 3),
            "start": round(self.start, 4),
            "duration": round(self.duration, 4),
            "keyframes": self.keyframes,
            "keyframe_times": [round(t, 4) for t in self.keyframe_times],
            "index": self.index,
            "sources": dict(self.sources),
        }


@dataclass(frozen=True)
class Clip:
    """The frames read from one video and how they were obtained."""

    frames: np.ndarray  # [k, H, W, 3] uint8 RGB
    times: tuple[float, ...]  # presentation time of each frame, seconds
    keyframe: tuple[bool, ...]  # whether each frame was a keyframe
    info: VideoInfo
    decode_ms: float
    decoded: int = field(default=0)  # frames the decoder produced, all calls included

    def to_dict(self) -> dict:
        """The JSON form ``shortvid probe`` prints."""
        return {
            "path": self.info.source,
            "keyframes": self.info.keyframes,
            "frames": [{"time": round(t, 4), "keyframe": k} for t, k in zip(self.times, self.keyframe)],
            "decode_ms": round(self.decode_ms, 2),
            "decoded": self.decoded,
            "info": self.info.to_dict(),
        }


@dataclass(frozen=True)
class FrameSpec:
    """How frames are read: stored with a frame cache and used again at prediction time,
    so a model sees pixels from the same decode-and-resize path in training and in serving.
    Its options are checked when it is made, as ``read_frames`` checks them (``check_frame_options``)."""

    k: int = 3
    sampler: Sampler = "keyframes"
    size: Size = 224
    crop: int | None = None
    fill: Fill = "repeat"
    skip_loop_filter: bool = False
    max_decode: int = DEFAULT_MAX_DECODE  # fill="near": frames decoded per filled segment, at most

    def __post_init__(self) -> None:
        if isinstance(self.size, list):  # as JSON and YAML give it; a tuple keeps the spec hashable
            object.__setattr__(self, "size", tuple(self.size))
        check_frame_options(self.k, self.sampler, self.size, self.crop, self.fill, self.max_decode)

    def read(
        self,
        source: Source,
        *,
        mode: Mode = "test",
        rng: np.random.Generator | None = None,
        timeout: float | None = 10.0,
        limits: DecodeLimits | None = None,
        tuning: DecoderTuning | None = None,
    ) -> Clip:
        return read_frames(
            source, self.k, sampler=self.sampler, size=self.size, crop=self.crop, fill=self.fill,
            max_decode=self.max_decode, mode=mode, rng=rng, timeout=timeout,
            skip_loop_filter=self.skip_loop_filter, limits=limits, tuning=tuning,
        )

    def to_dict(self) -> dict:
        data = {"k": self.k, "sampler": self.sampler, "size": self.size, "crop": self.crop, "fill": self.fill}
        if self.skip_loop_filter:  # only when set, so specs stored before it existed compare equal
            data["skip_loop_filter"] = True
        if self.fill == "near" or self.max_decode != DEFAULT_MAX_DECODE:  # likewise; kept with "near" so a
            data["max_decode"] = self.max_decode  # later default cannot change what a stored spec read
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "FrameSpec":
        return cls(
            k=int(data.get("k", 3)),
            sampler=data.get("sampler", "keyframes"),
            size=data.get("size", 224),  # a list from JSON becomes a tuple in __post_init__
            crop=data.get("crop"),
            fill=data.get("fill", "repeat"),
            skip_loop_filter=bool(data.get("skip_loop_filter", False)),
            max_decode=data.get("max_decode", DEFAULT_MAX_DECODE),
        )


@dataclass
class _Keyframe:
    time: float
    packet: av.Packet | None  # None: listed by the container's index, not read yet
    dts: int | None = None  # where the index lists it (decode time, stream time base)
    following: int | None = None  # the next listed keyframe's decode time


def read_frames(
    source: Source,
    k: int = 3,
    *,
    sampler: Sampler = "keyframes",
    size: Size = 224,
    crop: int | None = None,
    mode: Mode = "test",
    fill: Fill = "repeat",
    max_decode: int = DEFAULT_MAX_DECODE,
    rng: np.random.Generator | None = None,
    timeout: float | None = 10.0,
    skip_loop_filter: bool = False,
    limits: DecodeLimits | None = None,
    tuning: DecoderTuning | None = None,
) -> Clip:
    """Return ``k`` upright RGB frames of ``source`` (a path, bytes or a binary file); exactly ``k``
    unless ``fill="none"``.

    sampler: ``"keyframes"`` takes, in each of ``k`` equal time segments, the keyframe nearest the
        segment centre (``mode="test"``) or a random keyframe of the segment (``mode="train"``),
        decoding only those keyframe packets. ``"uniform"`` takes the frame on screen at each
        segment's centre (or a random time in it), seeking and decoding forward: the usual TSN way.
    fill: when the video has fewer keyframes than ``k``: ``"repeat"`` (default) repeats keyframes,
        costing nothing; ``"seek"`` decodes a frame at the centre of each segment left without a
        keyframe, costing a decode from the previous keyframe (100-500 ms on 720p); ``"near"`` gives
        each such segment the frame nearest its centre among the cheap ones: those at most
        ``max_decode`` frames (decode order) past the keyframe before it, ``i * max_decode`` for the
        ``i``-th segment filled after the same keyframe, which one forward decode of that GOP's prefix
        serves; ``"none"`` returns each keyframe once, so fewer than ``k`` frames (the adaptive model: a
        TSN averages over however many frames it gets, and the model runs on no repeated frame).
        With at least ``k`` keyframes every policy gives the keyframe sampler's frames.
    max_decode: the cap of ``fill="near"`` (``DEFAULT_MAX_DECODE``): a video with ``n`` keyframes
        decodes at most ``(k - n) * max_decode`` frames more than ``"repeat"``, whatever the file holds
        (again for the others when a keyframe will not decode and the choice is made without it).
        Each keyframe of the video is placed first, as with ``"seek"``; each segment left over gets a
        frame of the prefix of the keyframe before it, read by seeking to that keyframe (by its index
        entry in MP4/MOV, by its time in other containers, whose keyframes came from the packet pass)
        and demuxing at most the cap's packets, whose presentation times pick the frames before any is
        decoded; then the prefix is decoded once, up to the last frame picked, skipping the frames no
        later frame refers to (FFmpeg's ``NONREF``) unless picked. Train mode draws each
        segment's reach within its last ``max_decode`` frames (``near_reach``). A segment that gets no
        frame this way (none before the first keyframe, a GOP shorter than the segments it fills, a
        prefix that would not demux or decode) repeats its neighbour's, as ``"repeat"`` would.
        ``Clip.keyframe`` says which frames are keyframes.
    size: an int resizes the short side to it, keeping the aspect ratio; ``(height, width)``
        resizes to exactly that; ``None`` keeps the video's size. ``crop`` then takes a centre
        square of that side.
    timeout: seconds for the whole call; a file that takes longer raises ``DecodeTimeoutError``.
    skip_loop_filter: skip the codec's in-loop (deblocking) filter (FFmpeg ``skip_loop_filter=all``):
        a faster decode whose pixels differ slightly from the default (mean absolute difference well
        under 1 on H.264 keyframes); with ``sampler="uniform"`` or ``fill="seek"`` the difference
        grows along the frames decoded from the keyframe. Off by default; a ``FrameSpec`` records it.
    limits: the largest frames decoded (``DecodeLimits()`` by default); beyond them
        ``VideoTooLargeError``.
    tuning: how the decoder and the scaler run (``DEFAULT_TUNING``: the fastest settings that give the
        same pixels); for measuring other settings.

    Raises a subclass of ``DecodeError`` naming the source and the cause, whatever goes wrong with
    the file: a failure shortvid does not classify is an ``UnexpectedDecodeError``. Bad options are a
    ``ValueError`` (``check_frame_options``), raised before the source is touched.
    """
    check_frame_options(k, sampler, size, crop, fill, max_decode)
    started = time.perf_counter()
    deadline = started + timeout if timeout else None
    limits = limits or _LIMITS
    name, opened = _resolve(source)
    tuning = tuning or DEFAULT_TUNING
    if skip_loop_filter:
        tuning = dataclasses.replace(tuning, options=(*tuning.options, ("skip_loop_filter", "all")))
    reader = _Reader(name, deadline, size, crop, tuning, limits)
    try:
        with _open(name, opened, limits) as container:
            reader.attach(container)
            if sampler == "keyframes":
                frames, times, keys = reader.keyframe_frames(k, mode, fill, rng, max_decode)
            else:
                frames, times, keys = reader.uniform_frames(k, mode, rng)
            info = reader.info()
    except DecodeError:
        raise
    except av.FFmpegError as error:
        raise CorruptVideoError(name, f"decoding failed: {error}") from error
    except MemoryError:
        raise CorruptVideoError(name, "out of memory while decoding") from None
    except OSError as error:  # raised by a caller's file object while FFmpeg reads it
        raise InvalidVideoError(name, f"reading failed: {type(error).__name__}: {error}") from error
    except Exception as error:  # noqa: BLE001 - a damaged file must fail alone, with a typed error
        raise UnexpectedDecodeError(name, f"{type(error).__name__}: {error}") from error
    finally:
        if opened is not source and not isinstance(opened, str):
            opened.close()  # our own BytesIO; a caller's file stays open
    return Clip(
        frames=np.stack(frames),
        times=tuple(times),
        keyframe=tuple(keys),
        info=info,
        decode_ms=(time.perf_counter() - started) * 1000,
        decoded=reader.decoded,
    )


_LIMITS = DecodeLimits()


def _positive_int(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool) and value >= 1


def check_frame_options(k: int, sampler: str, size: Size, crop: int | None, fill: str,
                        max_decode: int = DEFAULT_MAX_DECODE) -> None:
    """Raise ``ValueError`` unless the options of ``read_frames`` (and of a ``FrameSpec``) make sense:
    ``k`` an int of at least 1, a known ``sampler`` and ``fill``, ``size`` an int of at least 1, a
    ``(height, width)`` pair of them or None, ``crop`` None or an int of at least 1 that fits in
    the resized frame when ``size`` says how large that is, and ``max_decode`` an int of at least 1."""
    if not _positive_int(k):
        raise ValueError(f"k must be an integer of at least 1, got {k!r}")
    if sampler not in get_args(Sampler):
        raise ValueError(f"sampler must be one of {', '.join(map(repr, get_args(Sampler)))}, got {sampler!r}")
    if fill not in get_args(Fill):
        raise ValueError(f"fill must be one of {', '.join(map(repr, get_args(Fill)))}, got {fill!r}")
    if not _positive_int(max_decode):
        raise ValueError(f"max_decode must be an integer of at least 1, got {max_decode!r}")
    if isinstance(size, (tuple, list)):
        if len(size) != 2 or not all(_positive_int(side) for side in size):
            raise ValueError(f"size must be (height, width) with both at least 1, got {size!r}")
        smallest = min(size)
    elif size is None:
        smallest = None
    elif _positive_int(size):
        smallest = size
    else:
        raise ValueError(f"size must be a short side of at least 1, a (height, width) pair or None, got {size!r}")
    if crop is not None:
        if not _positive_int(crop):
            raise ValueError(f"crop must be None or an integer of at least 1, got {crop!r}")
        if smallest is not None and crop > smallest:
            raise ValueError(f"crop {crop} is larger than the resized frame (size {size!r})")


def _resolve(source: Source) -> tuple[str, str | BinaryIO]:
    """A display name and what ``av.open`` takes; typed errors for missing, empty or unreadable
    input, and for paths that are not regular files (a FIFO would block the open forever)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise InvalidVideoError("<bytes>", "empty input (0 bytes)")
        return "<bytes>", io.BytesIO(bytes(source))
    if isinstance(source, str) and is_uri(source):
        return source, _open_uri(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = str(path)
        if "\0" in name:
            raise InvalidVideoError(name.replace("\0", "\\0"), "the path contains a NUL byte")
        try:
            status = path.stat()
        except FileNotFoundError:
            raise VideoNotFoundError(name, "no such file") from None
        except OSError as error:
            raise InvalidVideoError(name, f"cannot read: {error.strerror or error}") from None
        if stat.S_ISDIR(status.st_mode):
            raise InvalidVideoError(name, "is a directory, not a video file")
        if not stat.S_ISREG(status.st_mode):
            raise InvalidVideoError(name, "not a regular file (a FIFO, socket or device)")
        if status.st_size == 0:
            raise InvalidVideoError(name, "empty file (0 bytes)")
        return name, name
    if hasattr(source, "read"):
        name = str(getattr(source, "name", "<stream>"))
        if not (hasattr(source, "seekable") and source.seekable()):
            data = source.read()
            if not data:
                raise InvalidVideoError(name, "empty input (0 bytes)")
            return name, io.BytesIO(data)
        return name, source
    raise TypeError(f"source must be a path, bytes or a binary file object, not {type(source).__name__}")


_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(source: object) -> bool:
    """Whether ``source`` names a file by URI (``s3://``, ``gs://``, ``https://``, ``memory://``, any
    fsspec protocol) rather than a local path."""
    return isinstance(source, str) and bool(_URI.match(source))


def _open_uri(uri: str) -> BinaryIO:
    """The file at ``uri``, opened with fsspec (the protocol's package, e.g. s3fs, gcsfs or aiohttp,
    must be installed); a file that cannot be seeked is read whole by ``_resolve``."""
    import fsspec

    try:
        opened = fsspec.open(uri, "rb").open()
    except FileNotFoundError:
        raise VideoNotFoundError(uri, "no such file") from None
    except ImportError as error:
        raise InvalidVideoError(uri, f"no reader for this protocol: {error}") from None
    except (OSError, ValueError) as error:
        raise InvalidVideoError(uri, f"cannot open: {type(error).__name__}: {error}") from None
    opened.name = uri
    seekable = getattr(opened, "seekable", None)
    if seekable is not None and seekable():
        return opened
    with opened:
        data = opened.read()
    if not data:
        raise InvalidVideoError(uri, "empty input (0 bytes)")
    return io.BytesIO(data)


def _open(name: str, opened: str | BinaryIO, limits: DecodeLimits = _LIMITS) -> av.container.InputContainer:
    """Open with the stream probe cut short; open the usual way where that does not work: headers
    without the video's size, formats whose streams appear only while probing (FLV), or failure.
    The probe's decoders refuse pictures over the pixel limit."""
    refuse = {"max_pixels": str(limits.max_pixels)}
    try:
        container = av.open(opened, mode="r", container_options=_SHORT_PROBE,
                            stream_options=[{**_FAST_OPEN, **refuse}] * 16, metadata_errors="ignore")
        video = container.streams.video
        if not video or video[0].codec_context is None or video[0].codec_context.width:
            return container
        container.close()
    except (av.FFmpegError, ValueError):
        pass
    if not isinstance(opened, str):
        opened.seek(0)
    try:
        try:
            return av.open(opened, mode="r", stream_options=[refuse] * 16, metadata_errors="ignore")
        except ValueError:
            # Formats whose streams appear only while probing (MPEG-TS/PS, FLV) take no per-stream
            # options: their probe decodes a first picture unrefused; the limits apply from then on.
            if not isinstance(opened, str):
                opened.seek(0)
            return av.open(opened, mode="r", metadata_errors="ignore")
    except av.FFmpegError as error:
        raise InvalidVideoError(name, f"not a readable video: {_reason(error)}") from None


def _reason(error: av.FFmpegError) -> str:
    return getattr(error, "strerror", None) or str(error)


class _Reader:
    """The state of one ``read_frames`` call on an open container."""

    def __init__(self, name: str, deadline: float | None, size: Size, crop: int | None,
                 tuning: DecoderTuning = DEFAULT_TUNING, limits: DecodeLimits = _LIMITS):
        self.name = name
        self.tuning = tuning
        self.limits = limits
        self.deadline = deadline
        self.size = size
        self.crop = crop
        self.decoded = 0
        self.keyframes: list[_Keyframe] = []
        self.index_kind: Literal["container", "packets", "none"] = "none"
        self.sources: dict[str, Provenance] = {}
        self.upright: tuple[int, int] | None = None  # (width, height) of the last decoded frame, upright

    # -- set-up ---------------------------------------------------------------------------
    def attach(self, container: av.container.InputContainer) -> None:
        self.container = container
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise NoVideoStreamError(self.name, f"no video stream (streams: {', '.join(kinds)})")
        self.stream = container.streams.video[0]
        self.tb = float(self.stream.time_base) if self.stream.time_base else 1 / 90000
        self.ctx = self.stream.codec_context
        if self.ctx is None:  # e.g. a damaged sample description (stsd) or handler (hdlr) box
            raise CorruptVideoError(self.name, "the video stream has no decoder (damaged header or unknown codec)")
        self._check_size(self.ctx.width, self.ctx.height, either_way=True, where="the headers claim frames of")
        self._tune(self.ctx)
        self.fps = _frame_rate(self.stream.average_rate, self.ctx.framerate, self.stream.base_rate,
                               self.stream.time_base)
        if self.fps is not None:
            self.sources["fps"] = "header"
        self.start, self.end = self._header_span()
        self.sources["start"] = "header"
        if self.end > self.start:
            self.sources["duration"] = "header"
        self.rotation = 0

    def _tune(self, ctx: av.CodecContext) -> None:
        """Apply the tuning and the pixel limit to a decoder not yet opened (PyAV opens it at its
        first decode)."""
        ctx.thread_count = self.tuning.thread_count
        if self.tuning.thread_type:
            ctx.thread_type = self.tuning.thread_type
        ctx.options = {**ctx.options, **dict(self.tuning.options), "max_pixels": str(self.limits.max_pixels)}

    def _check_size(self, width: int, height: int, *, either_way: bool = False, where: str = "a frame is") -> None:
        problem = self.limits.problem(width, height, either_way)
        if problem:
            raise VideoTooLargeError(self.name, f"{where} {width}x{height}: {problem}")

    def _check_decoder_size(self) -> None:
        """After a failed decode: the decoder refuses a picture over the pixel limit, and keeps the
        size the stream claimed."""
        self._check_size(self.ctx.width, self.ctx.height, either_way=True, where="the stream claims frames of")

    def _header_span(self) -> tuple[float, float]:
        s = self.stream
        start = s.start_time * self.tb if s.start_time is not None else 0.0
        if s.duration:
            return start, start + s.duration * self.tb
        if self.container.duration:
            return start, start + self.container.duration / 1e6
        return start, start

    def _check_time(self) -> None:
        if self.deadline is not None and time.perf_counter() > self.deadline:
            raise DecodeTimeoutError(self.name, "time limit exceeded while decoding")

    # -- finding keyframes ----------------------------------------------------------------
    def _find_keyframes(self) -> None:
        if not self._keyframes_from_index():
            self._keyframes_from_packets()

    def _keyframes_from_index(self) -> bool:
        """MP4/MOV keep a full sample table with sync flags: list its keyframes without reading them.

        A keyframe's presentation time is its decode time plus the stream's reorder delay; only
        the packets chosen are read (``_decode_keyframe``), and one listed but cut off or
        unreadable is dropped then, so the choice is made again without it."""
        key_dts = self._read_index()
        if not key_dts:
            return False
        for position, dts in enumerate(key_dts):
            following = key_dts[position + 1] if position + 1 < len(key_dts) else None
            self.keyframes.append(_Keyframe((dts + self.reorder) * self.tb, None, dts, following))
        self.index_kind = "container"
        self.sources["keyframes"] = "index"
        return True

    def _read_index(self) -> list[int] | None:
        """Where the demuxer's sample index is complete (MP4/MOV build it whole at open): set the
        video's span from it and return the keyframes' decode times; else None."""
        if "mov" not in self.container.format.name:
            return None
        entries = self.stream.index_entries
        key_dts, first, last, count = [], None, None, 0
        for entry in entries:  # in decode order
            last = entry.timestamp
            if first is None:
                first = last
            count += 1
            if entry.is_keyframe and not entry.is_discard:
                key_dts.append(last)
        if not count:
            return None
        # Presentation is later than decoding by the reorder delay, which the stream's start
        # time (the first presentation time) gives. The span comes from every sample, not from
        # header counts.
        self.reorder = (self.stream.start_time or 0) - first
        frame = (last - first) / (count - 1) if count > 1 else (1 / self.fps / self.tb if self.fps else 0)
        self.start = (first + self.reorder) * self.tb
        self.end = (last + self.reorder + frame) * self.tb
        self.sources.update(start="index", duration="index")
        return key_dts

    def _keyframes_from_packets(self) -> None:
        """Demux every packet of the video stream (no decoding) and keep the keyframe ones."""
        first = last = None
        count = 0
        try:
            with _demuxing(self.container, self.stream) as packets:
                for packet in packets:
                    if packet.size == 0:
                        continue
                    ts = _packet_time(packet)
                    if ts is None:
                        continue
                    count += 1
                    if count % 64 == 0:
                        self._check_time()
                    first = ts if first is None else min(first, ts)
                    end = ts + (packet.duration or 0)
                    last = end if last is None else max(last, end)
                    if packet.is_keyframe:
                        self.keyframes.append(_Keyframe(ts * self.tb, packet))
        except av.FFmpegError:
            if not self.keyframes:
                raise
            # A damaged or cut file: keep the keyframes read so far.
        self.keyframes.sort(key=lambda kf: kf.time)
        self.index_kind = "packets"
        self.sources["keyframes"] = "packets"
        if first is not None:
            self.start = first * self.tb
            self.end = max(last * self.tb, self.start + (1 / self.fps if self.fps else 0))
            self.sources.update(start="packets", duration="packets")

    # -- the keyframe sampler -------------------------------------------------------------
    def keyframe_frames(self, k: int, mode: Mode, fill: Fill, rng,
                        max_decode: int = DEFAULT_MAX_DECODE) -> tuple[list, list, list]:
        self._find_keyframes()
        self.ctx.skip_frame = "NONKEY"
        if mode == "train" and rng is None and fill == "near":
            rng = np.random.default_rng()  # one generator for the targets and the reaches
        decoded: dict[int, tuple[np.ndarray, float]] = {}
        while True:
            if not self.keyframes:
                raise CorruptVideoError(self.name, "no decodable keyframe")
            times = [kf.time for kf in self.keyframes]
            targets = segment_targets(self.start, self.end, k, mode, rng, candidates=times)
            if fill in ("seek", "near") and len(times) < k:
                placed = place_times(times, targets)
            elif fill == "none" and len(times) < k:
                placed = list(range(len(times)))  # each keyframe once: fewer than k frames
            else:
                placed = match_to_targets(times, targets)
            wanted = sorted({i for i in placed if i is not None})
            # fill="near": the empty segments after each keyframe, filled from its GOP's prefix
            gops = _segments_after(placed) if fill == "near" and len(times) < k else {}
            filled: dict[int, tuple[np.ndarray, float]] = {}
            failed = []
            for i in wanted:
                if i in gops:
                    reaches = near_reach(len(gops[i]), max_decode, mode, rng)
                    ok = self._decode_prefix(i, gops[i], [float(targets[s]) for s in gops[i]], reaches, decoded,
                                             filled)
                else:
                    ok = i in decoded or self._decode_keyframe(i, decoded)
                if not ok:
                    failed.append(i)
            if not failed:
                break
            # Drop keyframes that would not decode and choose again among the others.
            keep = [i for i in range(len(self.keyframes)) if i not in failed]
            decoded = {keep.index(i): v for i, v in decoded.items() if i in keep}
            self.keyframes = [self.keyframes[i] for i in keep]
        self.ctx.skip_frame = "DEFAULT"
        chosen: list[tuple[np.ndarray, float, bool] | None] = []
        for slot, index in enumerate(placed):
            if index is not None:
                chosen.append((*decoded[index], True))
            elif fill == "near":
                chosen.append((*filled[slot], False) if slot in filled else None)
            else:
                chosen.append((*self._frame_at(float(targets[slot])), False))
        if fill == "near":  # a segment left without a frame repeats its neighbour's, as "repeat" would
            chosen = _repeat_neighbours(chosen)
        frames = [image for image, _, _ in chosen]
        return frames, [t for _, t, _ in chosen], [key for _, _, key in chosen]

    def _decode_prefix(self, index: int, slots: list[int], targets: list[float], reaches: list[int],
                       decoded: dict, filled: dict) -> bool:
        """fill="near": decode keyframe ``index`` and, from its GOP, the frame nearest each target within
        its reach (frames after the keyframe, decode order), in one forward decode of the GOP's prefix.
        The keyframe's picture goes to ``decoded``, each slot's to ``filled`` (a slot whose frame does
        not come out stays empty). False where the keyframe itself is missing or will not decode."""
        self._check_time()
        keyframe = self.keyframes[index]
        packets = self._prefix_packets(index, max(reaches) + 1)
        if not packets:  # the seek did not find it: the keyframe alone, as the other policies read it
            return self._decode_keyframe(index, decoded)
        key_ts = _packet_time(packets[0])
        keyframe.packet, keyframe.time = packets[0], key_ts * self.tb
        later = self.keyframes[index + 1].time if index + 1 < len(self.keyframes) else float("inf")
        # The prefix's presentation times come from its packets, before anything is decoded: the
        # index holds decode times only, and B-frames are shown in another order.
        stamps = [_packet_time(packet) for packet in packets]  # (position: decode order, stamp) -> time order
        candidates = sorted((stamp, position) for position, stamp in enumerate(stamps)
                            if position and keyframe.time < stamp * self.tb < later)
        reachable = [[position <= reach for _, position in candidates] for reach in reaches]
        picks = match_within_reach([stamp * self.tb for stamp, _ in candidates], targets, reachable)
        wanted = {candidates[j][0]: slot for slot, j in zip(slots, picks) if j is not None}  # stamp -> slot
        last = max((candidates[j][1] for j in picks if j is not None), default=0)
        key = None

        def keep(frame: av.VideoFrame) -> None:
            nonlocal key
            self.decoded += 1
            if key is None and (frame.pts == key_ts or frame.pts is None):
                key = frame
                decoded[index] = (self._to_rgb(frame), self._time_of(frame, keyframe.time))
            elif frame.pts in wanted:
                filled[wanted[frame.pts]] = (self._to_rgb(frame), frame.pts * self.tb)

        try:
            for position, packet in enumerate(packets[: last + 1]):
                self._check_time()
                # A frame no later frame refers to (FFmpeg's NONREF) is skipped unless it is one of those
                # taken: the same pixels for the others, a third fewer frames decoded with B-frames.
                self.ctx.skip_frame = "DEFAULT" if not position or stamps[position] in wanted else "NONREF"
                for frame in self.ctx.decode(packet):
                    keep(frame)
            for frame in self.ctx.decode(None):
                keep(frame)
        except av.FFmpegError:
            self._check_decoder_size()  # damaged non-key packets: keep what came out
        finally:
            self.ctx.flush_buffers()
            self.ctx.skip_frame = "NONKEY"
        if key is None:
            self._check_decoder_size()
            return False
        return True

    def _prefix_packets(self, index: int, limit: int) -> list[av.Packet]:
        """The first ``limit`` packets (decode order) of keyframe ``index``'s GOP, its own first; fewer
        where the next keyframe or the end comes sooner; none if the seek cannot find the keyframe.
        Only demuxed: nothing is decoded here."""
        keyframe = self.keyframes[index]
        if keyframe.dts is not None:  # MP4/MOV: the index entry, found as _indexed_packet finds it
            aim = self._aim(keyframe.dts, keyframe.following)
            is_it = lambda packet: packet.dts == keyframe.dts  # noqa: E731
            past_it = lambda packet: packet.dts is not None and packet.dts > keyframe.dts  # noqa: E731
        else:  # other containers: the keyframe's packet, read in the packet pass, and its time
            key_ts = _packet_time(keyframe.packet)
            following = self.keyframes[index + 1].time / self.tb if index + 1 < len(self.keyframes) else None
            aim = self._aim(key_ts, None if following is None else int(following))
            is_it = lambda packet: packet.is_keyframe and _packet_time(packet) == key_ts  # noqa: E731
            past_it = lambda packet: packet.is_keyframe and _packet_time(packet) > key_ts  # noqa: E731
        found: list[av.Packet] = []
        try:
            for target in (aim, None):
                if target is None:  # rare fallback: scan from the start
                    self.container.seek(0, backward=True, any_frame=False)
                else:
                    self.container.seek(target, stream=self.stream, backward=True, any_frame=False)
                with _demuxing(self.container, self.stream) as packets:
                    for packet in packets:
                        self._check_time()
                        if packet.size == 0 or (packet.dts is None and packet.pts is None):
                            continue
                        if found:
                            if packet.is_keyframe or len(found) >= limit:
                                return found
                            found.append(packet)
                        elif is_it(packet):
                            found.append(packet)
                        elif past_it(packet):
                            break
                if found:
                    return found  # the end of the stream
        except av.FFmpegError:
            pass  # a damaged file: the packets read so far
        return found

    def _decode_keyframe(self, index: int, decoded: dict) -> bool:
        """Decode one keyframe packet alone; False if it is damaged or missing."""
        self._check_time()
        keyframe = self.keyframes[index]
        if keyframe.packet is None:
            keyframe.packet = self._indexed_packet(keyframe.dts, keyframe.following)
            if keyframe.packet is None:  # listed but cut off or unreadable
                return False
            keyframe.time = _packet_time(keyframe.packet) * self.tb
        try:
            frames = self.ctx.decode(keyframe.packet) + self.ctx.decode(None)
        except av.FFmpegError:
            self._check_decoder_size()
            return False
        finally:
            self.ctx.flush_buffers()
        self.decoded += len(frames)
        if not frames:
            self._check_decoder_size()
            return False
        frame = frames[0]
        t = self._time_of(frame, keyframe.time)
        decoded[index] = (self._to_rgb(frame), t)
        return True

    def _aim(self, ts: int, following: int | None) -> int:
        """Where to seek for the keyframe at stream time ``ts``, the next one at ``following``.

        Between the two, so demuxers that seek on decode time and those that seek on presentation
        time both land on it. The last keyframe has no next: aim past it by _LAST_KEYFRAME_SLACK, since
        MP4 seeks on presentation time, which B-frames and edit lists put after the decode time;
        aiming at the decode time lands a keyframe early and demuxes a whole GOP to reach it."""
        return int(ts + _LAST_KEYFRAME_SLACK / self.tb) if following is None else (ts + following) // 2

    def _indexed_packet(self, dts: int, following: int | None) -> av.Packet | None:
        """Seek to the keyframe with decode time ``dts`` and return its packet, reading no other frame."""
        aim = self._aim(dts, following)
        try:
            for target in (aim, None):
                if target is None:  # rare fallback: scan from the start
                    self.container.seek(0, backward=True, any_frame=False)
                else:
                    self.container.seek(target, stream=self.stream, backward=True, any_frame=False)
                with _demuxing(self.container, self.stream) as packets:
                    for packet in packets:
                        self._check_time()
                        if packet.dts is None or packet.size == 0:
                            continue
                        if packet.dts == dts:
                            return packet
                        if packet.dts > dts:
                            break
        except av.FFmpegError:
            pass
        return None

    # -- seeking to a time ----------------------------------------------------------------
    def _frame_at(self, target: float) -> tuple[np.ndarray, float]:
        """Seek to the keyframe before ``target`` and decode forward to the frame on screen then."""
        self.container.seek(int(target / self.tb), stream=self.stream, backward=True, any_frame=False)
        self.ctx.flush_buffers()
        shown = None
        try:
            with _demuxing(self.container, self.stream) as packets:
                for packet in packets:
                    self._check_time()
                    for frame in self.ctx.decode(packet):
                        self.decoded += 1
                        t = self._time_of(frame, target)
                        if shown is not None and t > target + 1e-6:
                            return self._to_rgb(shown[0]), shown[1]
                        shown = (frame, t)
        except av.FFmpegError:
            if shown is None:
                self._check_decoder_size()
                raise
        if shown is None:
            raise CorruptVideoError(self.name, f"no frame decodable at {target:.3f} s")
        return self._to_rgb(shown[0]), shown[1]

    def uniform_frames(self, k: int, mode: Mode, rng) -> tuple[list, list, list]:
        self._read_index()
        if self.end <= self.start:
            self._keyframes_from_packets()  # no duration in the header: measure it
        targets = segment_targets(self.start, self.end, k, mode, rng)
        frames, times, keys = [], [], []
        for target in targets:
            image, t = self._frame_at(float(target))
            frames.append(image)
            times.append(t)
            keys.append(False)
        return frames, times, keys

    def _time_of(self, frame: av.VideoFrame, fallback: float) -> float:
        # Frames from a bare codec context carry the packet's pts but no time base.
        return frame.pts * self.tb if frame.pts is not None else fallback

    # -- pixels ---------------------------------------------------------------------------
    def _to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """Scale and convert in swscale, then turn upright (a quarter turn is a numpy view copy)."""
        rotation = int(frame.rotation or 0) % 360
        self.rotation = rotation
        quarter = rotation in (90, 270)
        up_w, up_h = (frame.height, frame.width) if quarter else (frame.width, frame.height)
        self._check_size(up_w, up_h)
        self.upright = (up_w, up_h)
        self.sources.update(width="decoded", height="decoded", rotation="decoded")
        out_h, out_w = output_size(up_h, up_w, self.size)
        if quarter:
            image = scale_frame(frame, out_h, out_w, self.tuning)
        else:
            image = scale_frame(frame, out_w, out_h, self.tuning)
        if rotation:
            image = np.rot90(image, k=rotation // 90)
        if self.crop:
            if self.crop > min(image.shape[:2]):  # only with size=None: the video's own size
                raise InvalidVideoError(self.name, f"frames of {image.shape[1]}x{image.shape[0]} are smaller than "
                                                   f"the crop of {self.crop}")
            image = center_crop(image, self.crop)
        return np.ascontiguousarray(image)

    def info(self) -> VideoInfo:
        if self.upright is not None:
            w, h = self.upright
        else:  # nothing decoded: the headers' size, as stored
            w, h = self.stream.codec_context.width, self.stream.codec_context.height
            self.sources.update(width="header", height="header")
        return VideoInfo(
            source=self.name,
            container=self.container.format.name,
            codec=self.stream.codec_context.name,
            width=w,
            height=h,
            rotation=self.rotation,
            fps=self.fps,
            start=self.start,
            duration=max(self.end - self.start, 0.0),
            keyframes=len(self.keyframes),
            keyframe_times=tuple(kf.time for kf in self.keyframes),
            index=self.index_kind,
            sources=dict(self.sources),
        )


def _segments_after(placed: list[int | None]) -> dict[int, list[int]]:
    """For each placed keyframe, the empty segments between it and the next placed one (fill="near")."""
    after: dict[int, list[int]] = {}
    last = None
    for slot, index in enumerate(placed):
        if index is not None:
            last = index
        elif last is not None:
            after.setdefault(last, []).append(slot)
    return after


def _repeat_neighbours(chosen: list) -> list:
    """Each empty slot takes the previous slot's entry (the next one's before the first), so the
    frames stay in time order."""
    out = list(chosen)
    for slot in range(len(out)):
        if out[slot] is None and slot:
            out[slot] = out[slot - 1]
    first = next(entry for entry in out if entry is not None)
    return [first if entry is None else entry for entry in out]


def scale_frame(frame: av.VideoFrame, width: int, height: int,
                tuning: DecoderTuning = DEFAULT_TUNING) -> np.ndarray:
    """``frame`` scaled to ``width`` x ``height`` and converted to RGB in one swscale call, as
    ``read_frames`` does (the same pixels as ``frame.to_ndarray(format="rgb24", width=, height=)`` with
    the default tuning, in half the time)."""
    global _SWS_THREADS
    if tuning.reuse_scaler:
        scaler = getattr(_LOCAL, "scaler", None)
        if scaler is None:
            scaler = _LOCAL.scaler = VideoReformatter()
        convert = scaler.reformat
        args: tuple = (frame,)
    else:
        convert = frame.reformat
        args = ()
    kwargs = {"width": width, "height": height, "format": "rgb24", "interpolation": tuning.interpolation}
    if tuning.sws_threads is not None and _SWS_THREADS:
        try:
            return convert(*args, threads=tuning.sws_threads, **kwargs).to_ndarray()
        except TypeError:  # an older PyAV without `threads`: it scales on one thread anyway
            _SWS_THREADS = False
    return convert(*args, **kwargs).to_ndarray()


@contextlib.contextmanager
def _demuxing(container: av.container.InputContainer, stream: av.video.stream.VideoStream):
    """``container.demux(stream)``, closed on leaving. PyAV frees the generator's read packet only
    when the generator is closed or exhausted; one dropped after a ``break`` or ``return`` leaks it.
    Before they were closed, a failed decode of a file with ``moov`` and ``mdat`` swapped leaked
    600-650 bytes of heap a call (glibc's ``mallinfo2``, tests/test_hardening.py), and those small
    blocks pinned the decoder's freed buffers, so RSS grew far more: +58 to +69 MB over that test's
    500 calls (about 120-140 KB a call), +116.9 MB over 9,000 calls after warm-up in
    ``bench/soak.py``'s baseline (BENCHMARKS.md), depending on the heap's layout."""
    packets = container.demux(stream)
    try:
        yield packets
    finally:
        packets.close()


def _frame_rate(average, codec, base, time_base) -> float | None:
    """The nominal frame rate the headers give, or None: the container's average rate, else the
    codec's own (e.g. H.264 timing info), else FFmpeg's base rate unless that is only the inverse of
    the time base (FFmpeg's stand-in when it knows no rate, e.g. 1000 for Matroska's millisecond clock)."""
    for rate in (average, codec):
        if rate:
            return float(rate)
    if base and not (time_base and base == 1 / time_base):
        return float(base)
    return None


def _packet_time(packet: av.Packet) -> int | None:
    return packet.pts if packet.pts is not None else packet.dts


def output_size(height: int, width: int, size: Size) -> tuple[int, int]:
    """(height, width) of an upright ``height`` x ``width`` picture resized per ``size``."""
    if size is None:
        return height, width
    if isinstance(size, int):
        scale = size / min(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))
    return int(size[0]), int(size[1])


def center_crop(image: np.ndarray, side: int) -> np.ndarray:
    """The centre ``side`` x ``side`` square of ``image``."""
    h, w = image.shape[:2]
    if side > h or side > w:
        raise ValueError(f"crop {side} is larger than the resized frame {h}x{w}")
    top, left = (h - side) // 2, (w - side) // 2
    return image[top : top + side, left : left + side]
