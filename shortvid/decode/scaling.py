"""Pixels: a decoded frame scaled and converted to RGB in one swscale call, the output size a ``FrameSpec.size``
asks for, and the centre crop."""

from __future__ import annotations

import threading

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from .options import DEFAULT_TUNING, DecoderTuning, Size

_LOCAL = threading.local()  # per-thread scaler
_SWS_THREADS = True  # whether this PyAV's reformat takes `threads` (added in later releases)


def scale_frame(frame: av.VideoFrame, width: int, height: int,
                tuning: DecoderTuning = DEFAULT_TUNING) -> np.ndarray:
    """``frame`` scaled to ``width`` x ``height`` and converted to RGB in one swscale call, as
    ``read_frames`` does (the same pixels as ``frame.to_ndarray(format="rgb24", width=, height=)`` with
    the default tuning, faster: bench/decode.py --variants)."""
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


def rgb_difference(keyframe: np.ndarray, following: np.ndarray) -> np.ndarray:
    """TSN's RGB-difference input: each motion frame less the frame before it, the first less the keyframe,
    as int16 (-255 to 255, no wrap-around). ``keyframe`` [..., H, W, 3] and ``following`` [..., motion, H, W,
    3] uint8, as ``Clip.frames`` and ``Clip.motion`` hold them; returns [..., motion, H, W, 3]."""
    frames = np.concatenate([keyframe[..., None, :, :, :], following], axis=-4).astype(np.int16)
    return np.diff(frames, axis=-4)
