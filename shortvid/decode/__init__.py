"""Keyframe decoding: ``read_frames`` turns a video into the ``k`` upright RGB frames a ``FrameSpec`` asks for.

Modules, by concept: ``options`` (``FrameSpec``, ``DecodeLimits``, ``DecoderTuning``), ``opening`` (paths,
bytes, file objects and URIs to an open container), ``keyframes`` (the keyframe index: what the container
says without decoding), ``sampling`` (TSN segments and matching), ``decoder`` (``read_frames``) and
``scaling`` (swscale, output size, centre crop); for sound, ``audio`` (``read_audio``: the audio track as a
fixed-length 16 kHz mono waveform, ``AudioSpec``, ``Sound``) and ``melspec`` (``log_mel`` features).
"""

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
from .audio import AudioSpec, Sound, read_audio
from .decoder import Clip, VideoInfo, read_frames
from .melspec import log_mel, mel_filterbank
from .opening import Source, is_uri
from .options import (
    DEFAULT_LIMITS,
    DEFAULT_MAX_DECODE,
    DEFAULT_TUNING,
    DecodeLimits,
    DecoderTuning,
    FrameSpec,
    parse_size,
)
from .sampling import (
    match_to_targets,
    match_within_reach,
    near_reach,
    place_times,
    segment_targets,
)

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_DECODE",
    "DEFAULT_TUNING",
    "AudioSpec",
    "Clip",
    "CorruptVideoError",
    "DecodeError",
    "DecodeLimits",
    "DecoderTuning",
    "DecodeTimeoutError",
    "FrameSpec",
    "InvalidVideoError",
    "NoVideoStreamError",
    "Sound",
    "Source",
    "UnexpectedDecodeError",
    "VideoInfo",
    "VideoNotFoundError",
    "VideoTooLargeError",
    "is_uri",
    "log_mel",
    "match_to_targets",
    "match_within_reach",
    "mel_filterbank",
    "near_reach",
    "parse_size",
    "place_times",
    "read_audio",
    "read_frames",
    "segment_targets",
]
