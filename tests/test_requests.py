"""Reading a classify request (``shortvid.serve.requests``), without a server: the limits, the upload
budget's meter, the body read in place, multipart streamed, paths under the allowed root, request ids.

Requests are starlette ``Request``s over a scripted ASGI ``receive``: the same objects the service
reads, fed chunk by chunk as a connection would.
"""

import asyncio
import io
import json
import os

import pytest
from starlette.requests import ClientDisconnect, Request

from shortvid.errors import InvalidVideoError
from shortvid.serve.requests import (
    CLASSIFY_OPENAPI,
    JSON_LIMIT,
    BodyFile,
    BodyMeter,
    HTTPProblem,
    allowed_path,
    body_limit,
    declared_length,
    named_stream,
    read_body,
    request_id_of,
    upload_name,
    video_source,
)


def request(headers: dict[str, str], chunks: list[bytes] = (), disconnect: bool = False) -> Request:
    """A request whose body arrives as ``chunks`` (then, with ``disconnect``, the client leaves)."""
    messages = [{"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1 or disconnect}
                for i, chunk in enumerate(chunks)] or [{"type": "http.request", "body": b"", "more_body": disconnect}]
    if disconnect:
        messages.append({"type": "http.disconnect"})

    async def receive():
        return messages.pop(0)

    scope = {"type": "http", "method": "POST", "path": "/v1/classify", "query_string": b"",
             "headers": [(key.lower().encode(), value.encode()) for key, value in headers.items()]}
    return Request(scope, receive)


def run(coroutine):
    return asyncio.run(coroutine)


def refusal(call, *args) -> tuple[int, str, str]:
    """The (status, type, message) an ``HTTPProblem`` raised by ``call(*args)`` answers with."""
    with pytest.raises(HTTPProblem) as raised:
        result = call(*args)
        if asyncio.iscoroutine(result):
            run(result)
    return raised.value.status, raised.value.kind, raised.value.message


class Reservations:
    """What a meter reserved, refusing past ``budget`` bytes in all as the service's admission does."""

    def __init__(self, budget: int = 10**9):
        self.budget, self.calls = budget, []

    def __call__(self, nbytes: int) -> None:
        if sum(self.calls) + nbytes > self.budget:
            raise HTTPProblem(503, "UploadsFull", "over the budget")
        self.calls.append(nbytes)


def meter() -> BodyMeter:
    """A meter with room for any body these tests send."""
    return BodyMeter(10**7, None, Reservations())


# --- limits, before a byte is read ------------------------------------------------------------------

@pytest.mark.parametrize("kind, limit", [("application/json", JSON_LIMIT),
                                         ("application/json; charset=utf-8", JSON_LIMIT),
                                         ("multipart/form-data; boundary=x", 5 << 20), ("video/mp4", 5 << 20),
                                         ("application/octet-stream", 5 << 20), ("VIDEO/QuickTime", 5 << 20)])
def test_the_body_limit_follows_the_content_type(kind, limit):
    assert body_limit(request({"content-type": kind}), 5 << 20) == limit
    assert body_limit(request({"content-type": kind}), 1000) == 1000  # never above the service's


def test_a_missing_content_type_is_a_raw_upload_and_others_are_415():
    assert body_limit(request({}), 77) == 77
    assert refusal(body_limit, request({"content-type": "Text/Plain; charset=x"}), 77) == (
        415, "UnsupportedMediaType", "content type 'text/plain': send multipart/form-data (field 'file'), "
                                     'application/octet-stream, video/*, or application/json {"path"}')


def test_the_declared_length_is_checked_before_reading():
    assert declared_length(request({}), 10) is None  # chunked
    assert declared_length(request({"content-length": "10"}), 10) == 10
    assert declared_length(request({"content-length": "0"}), 10) == 0
    for bad in ("-1", "1e3", "ten", "", " 5"):
        assert refusal(declared_length, request({"content-length": bad}), 10) == (400, "BadRequest",
                                                                                  "invalid Content-Length"), bad
    assert refusal(declared_length, request({"content-length": "11"}), 10) == (
        413, "BodyTooLarge", "body of 11 bytes is over the limit of 10 bytes")


# --- the meter ------------------------------------------------------------------------------------

def test_the_meter_reserves_only_what_the_declared_length_did_not():
    reserved = Reservations()
    meter = BodyMeter(100, 40, reserved)
    assert meter.reserved == 40 and meter.declared == 40
    for size in (20, 20):
        meter.add(size)
    assert reserved.calls == [] and meter.received == 40  # within what was declared
    meter.add(10)
    assert reserved.calls == [10] and meter.reserved == 50
    chunked = BodyMeter(100, None, reserved)
    assert chunked.reserved == 0
    chunked.add(30)
    chunked.add(0)
    chunked.add(70)
    assert reserved.calls == [10, 30, 70] and chunked.reserved == 100 == chunked.received


def test_the_meter_refuses_past_the_limit_and_past_the_budget():
    meter = BodyMeter(100, None, Reservations())
    meter.add(100)
    assert refusal(meter.add, 1) == (413, "BodyTooLarge", "body is over the limit of 100 bytes")
    over = BodyMeter(100, None, Reservations(budget=50))
    over.add(50)
    with pytest.raises(HTTPProblem) as refused:
        over.add(1)
    assert refused.value.kind == "UploadsFull" and over.reserved == 50  # nothing more was taken


# --- the body, read once in place -----------------------------------------------------------------

def test_a_declared_body_lands_in_one_buffer_of_its_size():
    chunks = [b"abc", b"defg", b"h"]
    meter = BodyMeter(100, 8, Reservations())
    body = run(read_body(request({"content-length": "8"}, chunks), meter))
    assert isinstance(body, bytearray) and body == b"abcdefgh" and meter.received == 8


def test_a_chunked_body_grows_and_a_short_one_is_cut_to_what_came():
    reserved = Reservations()
    body = run(read_body(request({}, [b"12", b"345", b"", b"6"]), BodyMeter(100, None, reserved)))
    assert body == b"123456" and sum(reserved.calls) == 6
    short = run(read_body(request({"content-length": "10"}, [b"1234"]), BodyMeter(100, 10, Reservations())))
    assert short == b"1234" and len(short) == 4
    longer = run(read_body(request({"content-length": "2"}, [b"12", b"34"]), BodyMeter(100, 2, Reservations())))
    assert longer == b"1234"


def test_reading_stops_at_the_limit_and_when_the_client_leaves():
    with pytest.raises(HTTPProblem) as refused:
        run(read_body(request({}, [b"x" * 60, b"y" * 60]), BodyMeter(100, None, Reservations())))
    assert refused.value.status == 413
    with pytest.raises(ClientDisconnect):
        run(read_body(request({}, [b"partial"], disconnect=True), BodyMeter(100, None, Reservations())))


def test_a_body_file_reads_and_seeks_like_a_file():
    data = bytearray(range(256)) * 4
    stream = BodyFile(data, "clip.mp4")
    assert stream.name == "clip.mp4" and stream.readable() and stream.seekable() and len(stream) == 1024
    assert stream.read(3) == bytes([0, 1, 2]) and stream.tell() == 3
    assert stream.seek(-2, io.SEEK_END) == 1022 and stream.read() == bytes([254, 255])
    assert stream.read(5) == b"" and stream.tell() == 1024
    assert stream.seek(10) == 10 and stream.seek(5, io.SEEK_CUR) == 15 and stream.read(1) == bytes([15])
    buffer = bytearray(4)
    stream.seek(1020)
    assert stream.readinto(buffer) == 4 and buffer == bytes([252, 253, 254, 255])
    assert stream.seek(2000) == 2000 and stream.read(4) == b""  # past the end reads nothing, as a file does
    assert stream.seek(0) == 0 and stream.read(2) == bytes([0, 1])
    with pytest.raises(ValueError, match=r"^negative seek position -1$"):
        stream.seek(-1)
    with pytest.raises(ValueError, match=r"^negative seek position -3$"):
        stream.seek(-5, io.SEEK_CUR)
    stream.close()
    assert stream.closed
    data.append(0)  # the buffer is released: the body can be freed or changed again


def test_named_stream_names_in_memory_data():
    stream = named_stream(b"abc", "warm.mp4")
    assert stream.name == "warm.mp4" and stream.read() == b"abc"


# --- video_source: each way a video can come ---------------------------------------------------------

def test_a_raw_upload_is_decoded_from_the_buffer_it_arrived_in():
    upload = run(video_source(request({"content-type": "video/mp4", "x-filename": "a.mp4"}, [b"12", b"34"]),
                              BodyMeter(100, None, Reservations()), None))
    assert upload.name == "a.mp4" and isinstance(upload.source, BodyFile)
    assert upload.source.name == "a.mp4" and upload.source.read() == b"1234"
    run(upload.close())
    with pytest.raises(InvalidVideoError, match="b.mp4: empty input"):
        run(video_source(request({"content-type": "video/mp4", "x-filename": "b.mp4"}), meter(), None))


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "XyZ") -> tuple[dict, list[bytes]]:
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    step = max(7, len(body) // 64)  # small chunks: the parser sees boundaries split across them
    chunks = [body[i:i + step] for i in range(0, len(body), step)]
    return {"content-type": f"multipart/form-data; boundary={boundary}"}, chunks


def test_a_multipart_upload_is_streamed_and_kept_open_until_answered():
    video = bytes(range(200)) * 20
    headers, chunks = multipart([("note", None, b"hello"), ("file", "clip.mp4", video)])
    reserved = Reservations()
    upload = run(video_source(request(headers, chunks), BodyMeter(10**6, None, reserved), None))
    assert upload.name == "clip.mp4" and upload.source.name == "clip.mp4"
    assert upload.source.read() == video and upload.source.seek(0) == 0 and upload.source.read(3) == video[:3]
    assert sum(reserved.calls) == sum(map(len, chunks))  # every byte counted as it came
    run(upload.close())
    assert upload.source.closed  # the spooled part is given back with the request
    run(upload.close())  # twice is harmless


@pytest.mark.parametrize("parts", [[("other", "clip.mp4", b"x")], [("file", None, b"text, not a file")]])
def test_a_multipart_upload_without_its_file_is_400(parts):
    headers, chunks = multipart(parts)
    assert refusal(video_source, request(headers, chunks), BodyMeter(10**6, None, Reservations()), None) == (
        400, "BadRequest", 'multipart upload needs a file in the field "file"')


@pytest.mark.parametrize("in_app", [False, True])  # in the service, starlette raises its HTTPException instead
def test_a_malformed_multipart_upload_is_400_saying_why(in_app):
    def source(headers, chunks):
        made = request(headers, chunks)
        if in_app:
            made.scope["app"] = object()
        return video_source(made, meter(), None)

    assert refusal(source, {"content-type": "multipart/form-data"}, [b"--x\r\n"]) == (
        400, "BadRequest", "invalid multipart body: Missing boundary in multipart.")
    headers, chunks = multipart([("file", "many.mp4", b"1"), ("file", "more.mp4", b"2")])
    assert refusal(source, headers, chunks) == (
        400, "BadRequest", "invalid multipart body: Too many files. Maximum number of files is 1.")
    headers, chunks = multipart([("file", "a.mp4", b"1")] + [(f"f{i}", None, b"x") for i in range(17)])
    assert refusal(source, headers, chunks) == (
        400, "BadRequest", "invalid multipart body: Too many fields. Maximum number of fields is 16.")
    headers, chunks = multipart([("note", None, b"n" * (JSON_LIMIT + 1)), ("file", "a.mp4", b"1")])
    assert refusal(source, headers, chunks) == (
        400, "BadRequest", "invalid multipart body: Part exceeded maximum size of 1024KB.")
    headers, chunks = multipart([("note", None, b"n" * JSON_LIMIT), ("file", "a.mp4", b"1")])
    upload = run(source(headers, chunks))  # a field of exactly the limit is taken
    run(upload.close())


def test_an_oversized_or_abandoned_multipart_upload_is_refused_while_streaming():
    headers, chunks = multipart([("file", "big.mp4", b"v" * 5000)])
    assert refusal(video_source, request(headers, chunks), BodyMeter(1000, None, Reservations()), None) == (
        413, "BodyTooLarge", "body is over the limit of 1000 bytes")
    assert refusal(video_source, request(headers, chunks), BodyMeter(10**6, None, Reservations(budget=100)), None) == (
        503, "UploadsFull", "over the budget")
    with pytest.raises(ClientDisconnect):
        run(video_source(request(headers, chunks[:2], disconnect=True), meter(), None))


def test_an_empty_multipart_file_is_an_invalid_video():
    headers, chunks = multipart([("file", "nothing.mp4", b"")])
    with pytest.raises(InvalidVideoError, match="nothing.mp4: empty input"):
        run(video_source(request(headers, chunks), BodyMeter(10**6, None, Reservations()), None))
    headers, chunks = multipart([("file", "", b"abc")])
    upload = run(video_source(request(headers, chunks), BodyMeter(10**6, None, Reservations()), None))
    assert upload.name == "<upload>"
    run(upload.close())


def test_a_json_path_is_read_under_the_root(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").write_bytes(b"x")
    body = json.dumps({"path": "clips/a.mp4"}).encode()
    upload = run(video_source(request({"content-type": "application/json"}, [body]), meter(), tmp_path.resolve()))
    assert upload.source == (tmp_path / "clips" / "a.mp4").resolve() and upload.name == str(upload.source)


@pytest.mark.parametrize("body, message", [
    (b"{not json", "invalid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    (b"[" * 100_000 + b"]" * 100_000, "invalid JSON: nested too deeply"),
    (b'["path"]', 'expected {"path": "..."}'), (b'{"file": "a.mp4"}', 'expected {"path": "..."}'),
])
def test_bad_json_is_400(body, message, tmp_path):
    assert refusal(video_source, request({"content-type": "application/json"}, [body]), meter(), tmp_path) == (
        400, "BadRequest", message)


# --- paths, names, ids ----------------------------------------------------------------------------------

def test_paths_are_allowed_only_under_the_root(tmp_path):
    root = (tmp_path / "root").resolve()
    (root / "in").mkdir(parents=True)
    (root / "in" / "a.mp4").write_bytes(b"x")
    (tmp_path / "outside.mp4").write_bytes(b"x")
    os.symlink(tmp_path / "outside.mp4", root / "link.mp4")
    assert allowed_path("in/a.mp4", root) == root / "in" / "a.mp4"
    assert allowed_path(str(root / "in" / "a.mp4"), root) == root / "in" / "a.mp4"
    assert allowed_path(str(root), root) == root
    outside = str(tmp_path / "outside.mp4")
    for path, answer in (("../outside.mp4", (403, "PathNotAllowed", "../outside.mp4: outside the allowed root")),
                         ("link.mp4", (403, "PathNotAllowed", "link.mp4: outside the allowed root")),
                         (outside, (403, "PathNotAllowed", f"{outside}: outside the allowed root")),
                         ("", (400, "BadRequest", '"path" must be a non-empty string')),
                         (7, (400, "BadRequest", '"path" must be a non-empty string')),
                         ("a\0.mp4", (400, "BadRequest", '"path" contains a NUL byte')),
                         ("\0", (400, "BadRequest", '"path" contains a NUL byte'))):
        assert refusal(allowed_path, path, root) == answer, path
    assert refusal(allowed_path, "in/a.mp4", None) == (
        403, "PathNotAllowed", "this server reads no server-side paths (start it with --allow-root)")


def test_a_sibling_folder_with_the_root_as_prefix_is_outside(tmp_path):
    root = (tmp_path / "data").resolve()
    root.mkdir()
    (tmp_path / "data-other").mkdir()
    with pytest.raises(HTTPProblem):
        allowed_path(str(tmp_path / "data-other" / "a.mp4"), root)


def test_upload_names():
    assert upload_name(request({"x-filename": "a.mp4"})) == "a.mp4"
    assert upload_name(request({"content-disposition": 'attachment; filename="b c.mp4"; size=3'})) == "b c.mp4"
    twice = request({"content-disposition": 'attachment; filename="a filename=b.mp4"'})
    assert upload_name(twice) == "a filename=b.mp4"
    assert upload_name(request({"content-disposition": 'attachment; filename="X.mp4X"'})) == "X.mp4X"
    assert upload_name(request({"x-filename": "a.mp4", "content-disposition": "attachment; filename=b.mp4"})) == "a.mp4"
    assert upload_name(request({"content-disposition": "attachment"})) == "<upload>"
    assert upload_name(request({})) == "<upload>"


def test_request_ids_are_echoed_only_when_sane():
    assert request_id_of(request({"x-request-id": "job-1.2:3_x"})) == "job-1.2:3_x"
    assert request_id_of(request({"x-request-id": "a" * 128})) == "a" * 128
    for bad in ("a" * 129, "two words", "new\nline", "", "<script>"):
        made = request_id_of(request({"x-request-id": bad}))
        assert made != bad and len(made) == 32 and int(made, 16) >= 0
    assert request_id_of(request({})) != request_id_of(request({}))


def test_problems_render_as_the_error_body():
    problem = HTTPProblem(503, "Overloaded", "busy", {"Retry-After": "2"})
    assert problem.to_dict() == {"type": "Overloaded", "message": "busy"} and problem.headers == {"Retry-After": "2"}
    assert str(problem) == "busy" and HTTPProblem(400, "BadRequest", "x").headers == {}
    assert set(CLASSIFY_OPENAPI["requestBody"]["content"]) == {"multipart/form-data", "application/octet-stream",
                                                               "video/mp4", "application/json"}
    assert "UploadsFull" in CLASSIFY_OPENAPI["responses"]["503"]["description"]
