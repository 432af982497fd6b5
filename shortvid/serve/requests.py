"""Reading a classify request: its video (multipart, raw body or an allowed server path), its id,
and the errors it can be answered with.

Bodies are read against a size limit (413 before the limit is passed, not after buffering it all),
and a server-side path is resolved (symlinks and ``..``) before it is checked against the allowed
root. Every refusal is an ``HTTPProblem``; a video that is not one is the decoder's ``DecodeError``.
"""

from __future__ import annotations

import io
import json
import os
import re
import uuid
from pathlib import Path

from fastapi import Request

from ..errors import InvalidVideoError


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


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 once over ``limit`` bytes (Content-Length first, then while streaming)."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise HTTPProblem(400, "BadRequest", "invalid Content-Length") from None
        if declared > limit:
            raise HTTPProblem(413, "BodyTooLarge", f"body of {declared} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPProblem(413, "BodyTooLarge", f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


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
    try:
        real = Path(os.path.realpath(candidate))
    except (OSError, ValueError) as error:
        raise HTTPProblem(400, "BadRequest", f'"path" cannot be resolved: {error}') from None
    if real != root and root not in real.parents:
        raise HTTPProblem(403, "PathNotAllowed", f"{path}: outside the allowed root")
    return real


async def video_source(request: Request, limit: int, root: Path | None) -> tuple[object, str]:
    """What to decode (a named in-memory file, or a path allowed under ``root``) and its display name;
    bodies over ``limit`` bytes are refused."""
    content_type = request.headers.get("content-type", "application/octet-stream").split(";")[0].strip().lower()
    if content_type == "application/json":
        body = await read_body(request, min(limit, 1 << 20))
        try:
            data = json.loads(body)
        except ValueError as error:
            raise HTTPProblem(400, "BadRequest", f"invalid JSON: {error}") from None
        except RecursionError:
            raise HTTPProblem(400, "BadRequest", "invalid JSON: nested too deeply") from None
        if not isinstance(data, dict) or "path" not in data:
            raise HTTPProblem(400, "BadRequest", 'expected {"path": "..."}')
        path = allowed_path(data["path"], root)
        return path, str(path)
    if content_type == "multipart/form-data":
        body = await read_body(request, limit)
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return {"type": "http.request", "body": b"", "more_body": False}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=1, max_fields=16, max_part_size=limit)
        except Exception as error:  # noqa: BLE001
            raise HTTPProblem(400, "BadRequest", f"invalid multipart body: {getattr(error, 'detail', error)}") from None
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPProblem(400, "BadRequest", 'multipart upload needs a file in the field "file"')
        data = await upload.read()
        name = upload.filename or "<upload>"
        await form.close()
    elif content_type == "application/octet-stream" or content_type.startswith("video/"):
        data = await read_body(request, limit)
        name = upload_name(request)
    else:
        raise HTTPProblem(415, "UnsupportedMediaType",
                          f"content type {content_type!r}: send multipart/form-data (field 'file'), "
                          "application/octet-stream, video/*, or application/json {\"path\"}")
    if not data:
        raise InvalidVideoError(name, "empty input (0 bytes)")
    return named_stream(data, name), name


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
        "503": {"description": "too many uploads, queue full, or not answerable within --max-queue-seconds "
                               "(Retry-After)"},
        "504": {"description": "not classified within --timeout"},
    },
}  # the OpenAPI description of POST /v1/classify, whose body FastAPI cannot infer (it is read by hand)


__all__ = ["HTTPProblem", "named_stream", "read_body", "upload_name", "allowed_path", "video_source", "request_id_of",
           "CLASSIFY_OPENAPI"]
