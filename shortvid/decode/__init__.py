"""Keyframe decoding: ``read_frames`` turns a video into ``k`` upright RGB frames."""

from ..errors import (
    CorruptVideoError,
    DecodeError,
    DecodeTimeoutError,
    InvalidVideoError,
    NoVideoStreamError,
    VideoNotFoundError,
)
from .reader import Clip, FrameSpec, VideoInfo, read_frames
from .sampling import match_to_targets, place_times, segment_targets

__all__ = [
    "Clip",
    "CorruptVideoError",
    "DecodeError",
    "DecodeTimeoutError",
    "FrameSpec",
    "InvalidVideoError",
    "NoVideoStreamError",
    "VideoInfo",
    "VideoNotFoundError",
    "match_to_targets",
    "place_times",
    "read_frames",
    "segment_targets",
]
