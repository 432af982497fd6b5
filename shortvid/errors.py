"""Typed errors. Each names the file it concerns and the cause, so a batch can report and go on."""

from __future__ import annotations


class ShortvidError(Exception):
    """Base of every error shortvid raises on purpose."""

    def __init__(self, source: str, cause: str):
        self.source = str(source)
        self.cause = cause
        super().__init__(f"{self.source}: {cause}")

    def __reduce__(self):
        # Rebuild from (source, cause) so errors cross process boundaries (workers, DataLoader).
        return type(self), (self.source, self.cause)

    def to_dict(self) -> dict:
        """JSON-ready form used in probe output and manifests."""
        return {"type": type(self).__name__, "message": str(self)}


class DecodeError(ShortvidError):
    """A video could not be decoded into frames."""


class VideoNotFoundError(DecodeError, FileNotFoundError):
    """The path does not exist."""


class InvalidVideoError(DecodeError):
    """Not a readable media container: empty, text, random bytes, cut before its index."""


class NoVideoStreamError(DecodeError):
    """The container opened but holds no video stream."""


class CorruptVideoError(DecodeError):
    """The container opened but no frame could be decoded from it."""


class DecodeTimeoutError(DecodeError):
    """Decoding took longer than the per-call time limit."""


class VideoTooLargeError(DecodeError):
    """The video's frames are beyond the decode limits (width, height, pixels, aspect ratio):
    refused before their pixels are decoded or scaled (``shortvid.decode.DecodeLimits``)."""


class UnexpectedDecodeError(DecodeError):
    """Decoding failed in a way shortvid does not classify: most likely a damaged file, possibly a
    bug; the message names the underlying exception."""


class DatasetError(ShortvidError):
    """An annotation file, label map or frame cache is invalid."""


class InferenceError(ShortvidError):
    """The model failed on a video's decoded frames (in a batch run, only that video fails)."""


class WorkerCrashed(ShortvidError):
    """The process handling a file died on it (a crash inside a native library, an abort, out of
    memory, or a hang ended by a hard time limit); the file was isolated and the job went on."""
