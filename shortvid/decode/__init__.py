"""Keyframe decoding: ``read_frames`` turns a video into ``k`` upright RGB frames."""

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
from .reader import (
    DEFAULT_MAX_DECODE,
    DEFAULT_TUNING,
    Clip,
    DecodeLimits,
    DecoderTuning,
    FrameSpec,
    VideoInfo,
    read_frames,
)
from .sampling import (
    match_to_targets,
    match_within_reach,
    near_reach,
    place_times,
    segment_targets,
)

__all__ = [
    "DEFAULT_MAX_DECODE",
    "DEFAULT_TUNING",
    "Clip",
    "CorruptVideoError",
    "DecodeError",
    "DecodeLimits",
    "DecoderTuning",
    "DecodeTimeoutError",
    "FrameSpec",
    "InvalidVideoError",
    "NoVideoStreamError",
    "UnexpectedDecodeError",
    "VideoInfo",
    "VideoNotFoundError",
    "VideoTooLargeError",
    "match_to_targets",
    "match_within_reach",
    "near_reach",
    "place_times",
    "read_frames",
    "segment_targets",
]
