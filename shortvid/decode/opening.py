"""Opening a video: a path, bytes, a binary file object or a URI, checked and opened as a PyAV container
with the stream probe cut short. Every failure is a typed error naming the source."""

from __future__ import annotations

import io
import os
import re
import stat
from pathlib import Path
from typing import BinaryIO, Union

import av

from ..errors import InvalidVideoError, VideoNotFoundError
from .options import DEFAULT_LIMITS, DecodeLimits

Source = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

# Skipping every frame while FFmpeg probes the streams saves the probe's decode; the streams'
# parameters still come from the headers. Checked on every codec in the tests.
_FAST_OPEN = {"skip_frame": "all"}
# MP4/MOV (and most containers) carry every stream parameter in their headers: reading packets
# to estimate them costs more than the rest of opening. Where a header lacks the video size
# (e.g. MPEG-TS), `open_container` probes again the usual way.
_SHORT_PROBE = {"probesize": "32", "analyzeduration": "0", "fpsprobesize": "0"}
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def resolve(source: Source) -> tuple[str, str | BinaryIO]:
    """A display name and what ``av.open`` takes; typed errors for missing, empty or unreadable
    input, and for paths that are not regular files (a FIFO would block the open forever). Bytes
    become a ``BytesIO`` of ours, which the caller closes; a caller's file object is returned as it is
    (read whole first when it cannot seek)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise InvalidVideoError("<bytes>", "empty input (0 bytes)")
        return "<bytes>", io.BytesIO(bytes(source))
    if isinstance(source, str) and is_uri(source):
        return source, open_uri(source)
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


def is_uri(source: object) -> bool:
    """Whether ``source`` names a file by URI (``s3://``, ``gs://``, ``https://``, ``memory://``, any
    fsspec protocol) rather than a local path."""
    return isinstance(source, str) and bool(_URI.match(source))


def open_uri(uri: str) -> BinaryIO:
    """The file at ``uri``, opened with fsspec (the protocol's package, e.g. s3fs, gcsfs or aiohttp,
    must be installed); a file that cannot be seeked is read whole into memory."""
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


def open_container(name: str, opened: str | BinaryIO,
                   limits: DecodeLimits = DEFAULT_LIMITS) -> av.container.InputContainer:
    """The container of ``opened`` (``resolve``'s second value), opened with the stream probe cut short;
    opened the usual way where that does not work: headers without the video's size, formats whose
    streams appear only while probing (FLV), or failure. The probe's decoders refuse pictures over the
    pixel limit. ``InvalidVideoError`` naming ``name`` when FFmpeg cannot read it."""
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
