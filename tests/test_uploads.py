"""Upload memory (issue 19, point 3): the bytes of all bodies held at once stay within a budget,
refused with 503 before they are read, and no body is held twice.

Real server, raw sockets where the test is about what is read when: a client that sends only its
headers learns whether the server answers before reading the body (it does) or waits for it.
"""

import socket
import time
import tracemalloc

import pytest

from shortvid.infer.classifier import Classifier
from shortvid.serve.http import ServeSettings

from serving import metric, running

MIB = 1 << 20


@pytest.fixture(scope="module")
def classifier(trained_run):
    return Classifier.load(trained_run, device="cpu")


@pytest.fixture(scope="module")
def video(small_videos) -> bytes:
    return small_videos["v0.mp4"].read_bytes()


def port_of(client) -> int:
    return int(str(client.base_url).rsplit(":", 1)[1])


def headers_only(port: int, length: int | None, content_type: str = "application/octet-stream",
                 first: bytes = b"") -> socket.socket:
    """A request whose head is sent whole and whose body is not (``first`` bytes of it at most)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    sock.sendall(f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n{framing}\r\n\r\n".encode()
                 + first)
    return sock


def answer_of(sock: socket.socket) -> tuple[int, bytes]:
    """The status and the whole of the next answer (socket.timeout if the server waits for the body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length")), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(data.split(b" ", 2)[1]), head + b"\r\n\r\n" + body


def wait_for(client, name: str, value: float, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while metric(client.get("/metrics").text, name) != value:
        assert time.monotonic() < deadline, f"{name} never reached {value}"
        time.sleep(0.05)


def test_refusals_come_before_the_body_is_read(classifier):
    """Nothing of the body is sent: an answer at all proves the server did not wait to read it."""
    with running(classifier, max_queue=0, body_timeout=60) as client:
        sock = headers_only(port_of(client), 8 * MIB)
        status, head = answer_of(sock)  # times out (10 s) if the server reads the body first
        assert status == 503 and b"QueueFull" in head and b"retry-after" in head.lower()
        sock.close()
    with running(classifier, upload_budget_mb=2, max_body_mb=1, body_timeout=60) as client:
        holders = [headers_only(port_of(client), 900_000, first=b"0123") for _ in range(2)]
        wait_for(client, "shortvid_upload_bytes", 1_800_000)  # reserved from Content-Length, before the bytes
        sock = headers_only(port_of(client), 900_000)
        status, head = answer_of(sock)
        assert status == 503 and b"UploadsFull" in head
        for held in (sock, *holders):
            held.close()
        wait_for(client, "shortvid_upload_bytes", 0)  # given back when their clients went away


@pytest.mark.slow
def test_the_budget_holds_bodies_until_answered_then_frees_them(classifier, video):
    held = (MIB - len(video) // 2) // 2  # two of them leave less than the video's size
    with running(classifier, upload_budget_mb=1, max_body_mb=0.5, body_timeout=2) as client:
        assert metric(client.get("/metrics").text, "shortvid_upload_budget_bytes") == MIB
        holders = [headers_only(port_of(client), held, first=b"x" * 1000) for _ in range(2)]
        wait_for(client, "shortvid_upload_bytes", 2 * held)
        refused = client.post("/v1/classify", content=video, headers={"content-type": "application/octet-stream"})
        assert refused.status_code == 503 and refused.json()["error"]["type"] == "UploadsFull"
        assert "budget" in refused.json()["error"]["message"] and int(refused.headers["retry-after"]) >= 1
        for holder in holders:  # their body deadline passes: 408, and their bytes come back
            assert answer_of(holder)[0] == 408
            holder.close()
        wait_for(client, "shortvid_upload_bytes", 0)
        answer = client.post("/v1/classify", content=video, headers={"content-type": "application/octet-stream"})
        assert answer.status_code == 200
        assert metric(client.get("/metrics").text, "shortvid_upload_bytes") == 0


def test_a_chunked_body_is_refused_once_past_the_budget(classifier):
    with running(classifier, upload_budget_mb=1, max_body_mb=1, body_timeout=30) as client:
        holder = headers_only(port_of(client), 700_000, first=b"y" * 100)
        wait_for(client, "shortvid_upload_bytes", 700_000)
        sock = headers_only(port_of(client), None)
        for _ in range(8):  # 8 x 64 KiB chunks: 512 KiB, past what is left of the budget
            sock.sendall(b"10000\r\n" + b"z" * 65536 + b"\r\n")
        status, head = answer_of(sock)
        assert status == 503 and b"UploadsFull" in head
        sock.close()
        holder.close()
        wait_for(client, "shortvid_upload_bytes", 0)


def test_the_default_budget_fits_the_machine():
    settings = ServeSettings()
    assert settings.max_body_bytes <= settings.upload_budget_bytes <= 1 << 30
    assert ServeSettings(upload_budget_mb=100).upload_budget_bytes == 100 * MIB
    with pytest.raises(ValueError, match="could never be received"):
        ServeSettings(max_body_mb=64, upload_budget_mb=32)


@pytest.mark.parametrize("kind", ["raw", "multipart"])
def test_a_body_is_held_once(classifier, kind):
    """Python's allocations while a 16 MiB upload is received and refused by the decoder: about one
    body for a raw upload (received in place, decoded from that buffer), far less for multipart
    (spooled to a temporary file); before, each was held at least twice (chunks joined, or the whole
    multipart body buffered and its file part read back)."""
    body = bytes(range(256)) * (16 * MIB // 256)  # not a video: 422, after the decoder has read it
    if kind == "multipart":
        boundary = "shortvidboundary"
        payload = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.mp4\"\r\n"
                   f"Content-Type: video/mp4\r\n\r\n").encode() + body + f"\r\n--{boundary}--\r\n".encode()
        content_type = f"multipart/form-data; boundary={boundary}"
    else:
        payload, content_type = body, "application/octet-stream"
    head = (f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(payload)}\r\nX-Filename: big.mp4\r\n\r\n").encode()
    with running(classifier, max_body_mb=32) as client:
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            sock = socket.create_connection(("127.0.0.1", port_of(client)), timeout=60)
            sock.sendall(head)
            view = memoryview(payload)
            for start in range(0, len(view), MIB):
                sock.sendall(view[start:start + MIB])
            status, _ = answer_of(sock)
            sock.close()
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
    assert status == 422
    limit = 1.4 * len(body) if kind == "raw" else 0.5 * len(body)
    assert peak < limit, f"{kind}: peak {peak / MIB:.1f} MiB for a {len(body) / MIB:.0f} MiB body"
