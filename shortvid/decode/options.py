"""How frames are read (``FrameSpec``), the largest frames decoded (``DecodeLimits``) and how the decoder
runs (``DecoderTuning``): each checked once, when it is made, and passed whole from there on."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from numbers import Integral
from typing import Literal, Union, get_args

Sampler = Literal["keyframes", "uniform"]
Fill = Literal["repeat", "seek", "none", "near"]
MotionOrder = Literal["shown", "decoded"]
Size = Union[int, tuple[int, int], None]
# fill="near": frames decoded past a keyframe per segment it fills, at most: 8 (a quarter second at
# 30 fps) keeps the decode time near the keyframes-only one where 16 does not (BENCHMARKS.md,
# "Frames for videos with fewer keyframes than segments"; docs/decoding.md).
DEFAULT_MAX_DECODE = 8
# motion: frames read after each keyframe, at most (TSN's RGB difference takes a few consecutive frames).
MAX_MOTION = 4


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
    # scaler; one thread on a reused scaler gives the same pixels faster (bench/decode.py --variants).
    sws_threads: int | None = 1
    reuse_scaler: bool = True  # one VideoReformatter (cached SwsContext) per thread


DEFAULT_TUNING = DecoderTuning()


@dataclass(frozen=True)
class DecodeLimits:
    """The largest frames ``read_frames`` decodes, and the largest audio ``read_audio`` decodes. A video
    beyond them raises ``VideoTooLargeError`` before its pixels are decoded or scaled: the headers are
    checked when the file opens, FFmpeg's decoder refuses pictures over ``max_pixels`` (a stream can claim
    another size than its headers), and each decoded frame is checked before scaling. The defaults admit
    every real upload, 8K UHD (7680x4320) and portrait 4K included, and refuse a 1.7 KB file claiming
    65520x16 (which, scaled to a short side of 128, would be a 575 MiB array)."""

    max_width: int = 8192  # of the upright picture
    max_height: int = 8192
    max_pixels: int = 7680 * 4320  # width x height
    max_aspect: float = 8.0  # longer side / shorter side
    # The audio track (``read_audio``): a stream over these is refused (a Sound of status "broken"), and
    # each call decodes at most ``max_audio_seconds`` of the source's audio, whatever its timestamps say.
    max_sample_rate: int = 192_000  # Hz; studio masters reach 192 kHz
    max_channels: int = 16  # 7.1.4 and 9.1.6 layouts are 12 and 16
    max_audio_seconds: float = 60.0

    def __post_init__(self) -> None:
        if min(self.max_width, self.max_height, self.max_pixels) < 1 or not self.max_aspect >= 1:
            raise ValueError(f"decode limits must be positive and max_aspect at least 1: {self}")
        if min(self.max_sample_rate, self.max_channels) < 1 or not self.max_audio_seconds > 0:
            raise ValueError(f"audio limits must be positive: {self}")

    def audio_problem(self, sample_rate: int, channels: int) -> str | None:
        """Why an audio stream of ``sample_rate`` Hz and ``channels`` channels is refused, or None (an
        unknown value, 0, is checked again on the decoded frames)."""
        if sample_rate > self.max_sample_rate:
            return f"{sample_rate} Hz, over the {self.max_sample_rate} Hz limit"
        if channels > self.max_channels:
            return f"{channels} channels, over the {self.max_channels} channel limit"
        return None

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


DEFAULT_LIMITS = DecodeLimits()


def parse_size(text: str) -> Size:
    """A ``FrameSpec.size`` from its text form: ``256`` (short side), ``256x455`` (height x width) or
    ``none`` (the video's own size), as ``--size`` takes it."""
    if text.lower() == "none":
        return None
    if "x" in text.lower():
        height, width = text.lower().split("x")
        return int(height), int(width)
    return int(text)


def _option(help: str, **parsing: object) -> dict:
    """A ``FrameSpec`` field's metadata: the help of its command-line option (``--k``, ``--max-decode``...,
    made by ``shortvid.cli.options.add_frame_options``) and how that option parses its text."""
    return {"help": help, **parsing}


@dataclass(frozen=True)
class FrameSpec:
    """How frames are read, the one carrier of the frame options: stored with a frame cache and used
    again at prediction time, so a model sees pixels from the same decode-and-resize path in training and
    in serving, and passed whole (to ``read_frames``, to extraction workers). Its options are checked
    when it is made (a ``ValueError`` naming the option), and nowhere else. A field added here is an
    option of ``read_frames`` and of ``shortvid probe`` / ``extract`` (from its metadata), and is stored
    with caches and runs (``to_dict``)."""

    k: int = field(default=3, metadata=_option("frames per video (TSN segments)", type=int, metavar="K"))
    sampler: Sampler = field(default="keyframes", metadata=_option(
        "keyframes: one keyframe per TSN segment, decoding nothing else; uniform: the frame at each "
        "segment centre, by seeking", choices=get_args(Sampler)))
    size: Size = field(default=224, metadata=_option(
        "short side in pixels, HxW, or none for the video's own size", type=parse_size))
    crop: int | None = field(default=None, metadata=_option("centre square crop after resizing", type=int,
                                                            metavar="PX"))
    fill: Fill = field(default="repeat", metadata=_option(
        "fewer keyframes than --k: repeat: repeat keyframes (free); seek: decode the frame at each empty "
        "segment's centre (a GOP decode each); near: the frame nearest each empty segment's centre within "
        "--max-decode frames of the keyframe before it; none: return fewer frames", choices=get_args(Fill)))
    skip_loop_filter: bool = field(default=False, metadata=_option(
        "skip the codec's deblocking filter: less decode time, slightly other pixels; a cache made so gives "
        "runs that serve the same way (docs/decoding.md)"))
    max_decode: int = field(default=DEFAULT_MAX_DECODE, metadata=_option(
        "--fill near: frames decoded past a keyframe per segment filled, at most", type=int, metavar="N"))
    motion: int = field(default=0, metadata=_option(
        f"frames read right after each keyframe, from its GOP, for motion (0: none; at most {MAX_MOTION}); "
        "with --sampler keyframes and --fill repeat or none", type=int, metavar="N"))
    motion_order: MotionOrder = field(default="shown", metadata=_option(
        "which frames after a keyframe are its motion frames, returned in the order shown: shown: the next ones "
        "shown, consecutive (with B-frames, several more decoded); decoded: the next ones in decode order, no other "
        "frame decoded (with B-frames, the P-frame a few frames on first: cheaper, not consecutive)",
        choices=get_args(MotionOrder)))

    def __post_init__(self) -> None:
        """Check the options: ``k`` an int of at least 1, a known ``sampler`` and ``fill``, ``size`` an int
        of at least 1, a ``(height, width)`` pair of them or None, ``crop`` None or an int of at least 1
        that fits in the resized frame when ``size`` says how large that is, ``max_decode`` an int of at
        least 1, ``motion`` an int from 0 to ``MAX_MOTION``, above 0 with the keyframe sampler and
        ``fill`` "repeat" or "none" only (motion frames follow keyframes), a known ``motion_order`` (left
        "shown" without motion frames). A list ``size`` (as JSON and YAML give it) becomes a tuple, so the spec
        stays hashable."""
        if isinstance(self.size, list):
            object.__setattr__(self, "size", tuple(self.size))
        if not _positive_int(self.k):
            raise ValueError(f"k must be an integer of at least 1, got {self.k!r}")
        if self.sampler not in get_args(Sampler):
            raise ValueError(f"sampler must be one of {', '.join(map(repr, get_args(Sampler)))}, got {self.sampler!r}")
        if self.fill not in get_args(Fill):
            raise ValueError(f"fill must be one of {', '.join(map(repr, get_args(Fill)))}, got {self.fill!r}")
        if not _positive_int(self.max_decode):
            raise ValueError(f"max_decode must be an integer of at least 1, got {self.max_decode!r}")
        if not (self.motion == 0 or _positive_int(self.motion)) or self.motion > MAX_MOTION:
            raise ValueError(f"motion must be an integer from 0 to {MAX_MOTION}, got {self.motion!r}")
        if self.motion_order not in get_args(MotionOrder):
            raise ValueError(f"motion_order must be one of {', '.join(map(repr, get_args(MotionOrder)))}, "
                             f"got {self.motion_order!r}")
        if not self.motion:  # no motion frames: no order, so equal specs compare equal
            object.__setattr__(self, "motion_order", "shown")
        if self.motion and (self.sampler != "keyframes" or self.fill not in ("repeat", "none")):
            raise ValueError(f"motion frames follow keyframes: motion {self.motion} takes sampler 'keyframes' "
                             f"with fill 'repeat' or 'none', got sampler {self.sampler!r}, fill {self.fill!r}")
        size = self.size
        if isinstance(size, tuple):
            if len(size) != 2 or not all(_positive_int(side) for side in size):
                raise ValueError(f"size must be (height, width) with both at least 1, got {size!r}")
            smallest = min(size)
        elif size is None:
            smallest = None
        elif _positive_int(size):
            smallest = size
        else:
            raise ValueError(f"size must be a short side of at least 1, a (height, width) pair or None, "
                             f"got {size!r}")
        if self.crop is not None:
            if not _positive_int(self.crop):
                raise ValueError(f"crop must be None or an integer of at least 1, got {self.crop!r}")
            if smallest is not None and self.crop > smallest:
                raise ValueError(f"crop {self.crop} is larger than the resized frame (size {size!r})")

    def to_dict(self) -> dict:
        """The JSON form stored in a frame cache's ``cache.json`` and a run's ``preprocess.json``."""
        data = dataclasses.asdict(self)
        # Options added after the first caches are stored only when set, so specs stored before they
        # existed compare equal; max_decode is also kept with fill="near", so that a later default cannot
        # change what a stored spec read.
        if not self.skip_loop_filter:
            del data["skip_loop_filter"]
        if self.fill != "near" and self.max_decode == DEFAULT_MAX_DECODE:
            del data["max_decode"]
        if not self.motion:
            del data["motion"]
        if not self.motion or self.motion_order == "shown":
            del data["motion_order"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "FrameSpec":
        """The spec ``to_dict`` stored, by this version or an earlier one (an option it lacks takes its
        default)."""
        return cls(**{option.name: data[option.name] for option in dataclasses.fields(cls) if option.name in data})


def _positive_int(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool) and value >= 1
