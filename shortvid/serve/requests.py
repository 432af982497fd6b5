"""Reading a classify request: its video (multipart, raw body or an allowed server path), its id,
and the errors it can be answered with.

Bodies are read against a size limit (413 from ``Content-Length`` before a byte is read, or once a
chunked body passes it) and counted against the service's upload budget as they arrive
(``BodyMeter``). A raw body is received into one buffer of its declared size and decoded in place
(``BodyFile``); a multipart body is parsed as it streams, its file part spooled to a temporary file
past 1 MiB, and decoded from there: no body is held twice. A server-side path is resolved (symlinks
and ``..``) before it is checked against the allowed root. Every refusal is an ``HTTPProblem``; a
video that is not one is the decoder's ``DecodeError``.
"""

from __future__ import annotations

import io
import json
import os
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request
from starlette.requests import ClientDisconnect

from ..errors import InvalidVideoError

JSON_LIMIT = 1 << 20  # bytes of a JSON {"path"} body


class HTTPProblem(Exception):
    """An error answered with ``status`` and ``{"error": {"type", "message"}}``."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers or {}

    def to_dict(self) -> dict:
        return {"type": self.kind, "message": self.message}


def named_stream(data: bytes, name: str) -> io.BytesIO:
    """``data`` as a file that calls itself ``name``, so DecodeErrors name the upload."""
    stream = io.BytesIO(data)
    stream.name = name
    return stream


class BodyFile(io.RawIOBase):
    """A received body as a seekable binary file named after the upload, read in place: the decoder
    reads the buffer the body was received into, not a copy of it."""

    def __init__(self, data: bytes | bytearray, name: str):
        super().__init__()
        self._view, self._position, self.name = memoryview(data), 0, name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self._view[self._position:self._position + len(buffer)]
        buffer[:len(chunk)] = chunk
        self._position += len(chunk)
        return len(chunk)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._view)}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def __len__(self) -> int:
        return len(self._view)

    def close(self) -> None:
        self._view.release()
        super().close()


class _NamedFile:
    """A binary file (the spooled multipart part) under the upload's name, for DecodeErrors."""

    def __init__(self, file, name: str):
        self._file, self.name = file, name

    def __getattr__(self, attribute: str):
        return getattr(self._file, attribute)


class BodyMeter:
    """Counts a body's bytes as they arrive: 413 past ``limit``; bytes past what is already reserved
    (the declared length) are reserved with ``reserve``, which raises to refuse them."""

    def __init__(self, limit: int, declared: int | None, reserve: Callable[[int], None]):
        self.limit, self.declared, self.reserve = limit, declared, reserve
        self.received = 0
        self.reserved = declared or 0  # what the caller reserved before the first byte

    def add(self, nbytes: int) -> None:
        self.received += nbytes
        if self.received > self.limit:
            raise HTTPProblem(413, "BodyTooLarge", f"body is over the limit of {self.limit} bytes")
        if self.received > self.reserved:
            self.reserve(self.received - self.reserved)
            self.reserved = self.received


def body_limit(request: Request, max_body: int) -> int:
    """The largest body this request may send: ``max_body``, or 1 MiB for a JSON ``{"path"}``; 415
    for a content type the service does not take."""
    kind = content_type(request)
    if kind == "application/json":
        return min(max_body, JSON_LIMIT)
    if kind in ("multipart/form-data", "application/octet-stream") or kind.startswith("video/"):
        return max_body
    raise HTTPProblem(415, "UnsupportedMediaType",
                      f"content type {kind!r}: send multipart/form-data (field 'file'), "
                      "application/octet-stream, video/*, or application/json {\"path\"}")


def declared_length(request: Request, limit: int) -> int | None:
    """The body's ``Content-Length`` (None for a chunked body): 400 if it is not a number, 413 over
    ``limit``, both before a byte of the body is read."""
    length = request.headers.get("content-length")
    if length is None:
        return None
    if not length.isdigit():
        raise HTTPProblem(400, "BadRequest", "invalid Content-Length")
    declared = int(length)
    if declared > limit:
        raise HTTPProblem(413, "BodyTooLarge", f"body of {declared} bytes is over the limit of {limit} bytes")
    return declared


def content_type(request: Request) -> str:
    return request.headers.get("content-type", "application/octet-stream").split(";")[0].strip().lower()


async def read_body(request: Request, meter: BodyMeter) -> bytearray:
    """The body in one buffer: allocated once at its declared length (grown as it comes when chunked)."""
    buffer = bytearray(meter.declared or 0)
    view = memoryview(buffer)
    try:
        async for chunk in request.stream():
            start = meter.received
            meter.add(len(chunk))
            if meter.received <= len(buffer):
                view[start:meter.received] = chunk
            else:
                view.release()
                buffer[start:] = chunk
                view = memoryview(buffer)
    finally:
        view.release()
    del buffer[meter.received:]  # a body shorter than declared (the server refuses it before this)
    return buffer


def upload_name(request: Request) -> str:
    """What a raw-body upload is called: ``X-Filename``, else Content-Disposition's filename."""
    name = request.headers.get("x-filename")
    disposition = request.headers.get("content-disposition", "")
    if not name and "filename=" in disposition:
        name = disposition.split("filename=", 1)[1].split(";")[0].strip().strip('"')
    return name or "<upload>"


def allowed_path(path: str, root: Path | None) -> Path:
    """A server-side path, allowed only under ``root`` (symlinks and '..' resolved first)."""
    if root is None:
        raise HTTPProblem(403, "PathNotAllowed", "this server reads no server-side paths (start it with --allow-root)")
    if not isinstance(path, str) or not path:
        raise HTTPProblem(400, "BadRequest", '"path" must be a non-empty string')
    if "\0" in path:
        raise HTTPProblem(400, "BadRequest", '"path" contains a NUL byte')
    candidate = Path(path)
    if not candidate.is_absolute():
        candidate = root / candidate
    real = Path(os.path.realpath(candidate))  # not strict: a missing file is the decoder's VideoNotFoundError
    if real != root and root not in real.parents:
        raise HTTPProblem(403, "PathNotAllowed", f"{path}: outside the allowed root")
    return real


@dataclass
class Upload:
    """A received request's video: what to decode (a file named after the upload, or an allowed path),
    its display name, and what to close once the request is answered."""

    source: object
    name: str
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def close(self) -> None:
        for close in self._closers:
            await close()
        self._closers.clear()


async def video_source(request: Request, meter: BodyMeter, root: Path | None) -> Upload:
    """The request's video, its body read through ``meter`` (size limit and upload budget)."""
    kind = content_type(request)
    if kind == "application/json":
        body = await read_body(request, meter)
        try:
            data = json.loads(body)
        except ValueError as error:
            raise HTTPProblem(400, "BadRequest", f"invalid JSON: {error}") from None
        except RecursionError:
            raise HTTPProblem(400, "BadRequest", "invalid JSON: nested too deeply") from None
        if not isinstance(data, dict) or "path" not in data:
            raise HTTPProblem(400, "BadRequest", 'expected {"path": "..."}')
        path = allowed_path(data["path"], root)
        return Upload(path, str(path))
    if kind == "multipart/form-data":
        return await _multipart(request, meter)
    body = await read_body(request, meter)
    name = upload_name(request)
    if not body:
        raise InvalidVideoError(name, "empty input (0 bytes)")
    return Upload(BodyFile(body, name), name)


async def _multipart(request: Request, meter: BodyMeter) -> Upload:
    """The file part of a multipart body, parsed as the body streams in (starlette spools the part to
    a temporary file past 1 MiB): the body is never buffered whole."""

    async def receive():
        message = await request.receive()
        if message["type"] == "http.request":
            meter.add(len(message.get("body", b"")))
        return message

    try:
        form = await Request(request.scope, receive).form(max_files=1, max_fields=16, max_part_size=JSON_LIMIT)
    except (HTTPProblem, ClientDisconnect):
        raise
    except Exception as error:  # noqa: BLE001 - the parser's own errors, and starlette's HTTPException
        raise HTTPProblem(400, "BadRequest", f"invalid multipart body: {getattr(error, 'detail', error)}") from None
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        await form.close()
        raise HTTPProblem(400, "BadRequest", 'multipart upload needs a file in the field "file"')
    name = upload.filename or "<upload>"
    if not upload.size:
        await form.close()
        raise InvalidVideoError(name, "empty input (0 bytes)")
    await upload.seek(0)
    return Upload(_NamedFile(upload.file, name), name, [form.close])


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_of(request: Request) -> str:
    """The caller's ``X-Request-ID`` when it is a sane one (it is echoed in headers and logs), else a new id."""
    given = request.headers.get("x-request-id", "")
    return given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


CLASSIFY_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                               "properties": {"file": {"type": "string", "format": "binary"}}}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "video/mp4": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": {"type": "object", "required": ["path"],
                                            "properties": {"path": {"type": "string"}}}},
        },
    },
    "responses": {
        "200": {"description": "the Prediction: labels, top5, timings_ms, frames, keyframes, request_id, batch_size"},
        "400": {"description": "a malformed request: invalid JSON or multipart, a bad path"},
        "403": {"description": "a path outside --allow-root, or any path without it"},
        "408": {"description": "the body was not received within --body-timeout"},
        "413": {"description": "body over --max-body-mb"},
        "415": {"description": "a content type other than multipart, octet-stream, video/* or JSON"},
        "422": {"description": "not a decodable video, or frames over the decode limits: {error: {type, message}}"},
        "503": {"description": "too many uploads or upload bytes (UploadsFull), queue full (QueueFull), or not "
                               "answerable within --max-queue-seconds (Overloaded); Retry-After"},
        "504": {"description": "not classified within --timeout"},
    },
}  # the OpenAPI description of POST /v1/classify, whose body FastAPI cannot infer (it is read by hand)


__all__ = ["HTTPProblem", "BodyFile", "BodyMeter", "Upload", "named_stream", "body_limit", "declared_length",
           "read_body", "upload_name", "allowed_path", "video_source", "request_id_of", "CLASSIFY_OPENAPI"]
