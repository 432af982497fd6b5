"""The connection layer of `shortvid serve` (shortvid.serve.server), over raw sockets against a real
uvicorn server configured as production configures it: request smuggling (Content-Length with
Transfer-Encoding) is 400 and closed before the app runs, an oversized head is 431 (not a reset),
connections past the cap and heads past the header timeout are closed while real requests are served."""

import socket
import time

import pytest

from shortvid.data.annotations import load_dataset
from shortvid.infer.classifier import Classifier

from serving import running

CAP = 50  # max_connections
HEADER_TIMEOUT = 1.0  # seconds
OCTET = {"content-type": "application/octet-stream"}


@pytest.fixture(scope="module")
def client(trained_run):
    with running(Classifier.load(trained_run, device="cpu"), max_connections=CAP, header_timeout=HEADER_TIMEOUT,
                 max_header_kb=64) as client:
        yield client


@pytest.fixture(scope="module")
def video(tiny_corpus) -> bytes:
    return load_dataset(tiny_corpus, "val").samples[0].path.read_bytes()


def connect(client) -> socket.socket:
    return socket.create_connection(("127.0.0.1", client.base_url.port), timeout=30)


def exchange(client, data: bytes) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it; a reset fails the test."""
    with connect(client) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def closed(sock: socket.socket, wait: float = 0.0) -> bool:
    """Whether the server has closed ``sock`` (within ``wait`` seconds; 0: already), dropping what it sent."""
    sock.settimeout(wait) if wait else sock.setblocking(False)
    try:
        while sock.recv(65536):
            pass
        return True
    except (BlockingIOError, TimeoutError):
        return False
    except ConnectionError:
        return True


def eventually(condition, seconds: float) -> bool:
    """Whether ``condition()`` holds within ``seconds`` (polled)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_content_length_with_transfer_encoding_is_400_and_closed_before_the_app(client):
    # Framed by Content-Length, the first request's body is "0\r\n\r\nG..." (6 bytes); framed as chunked it is
    # empty and a second request, to /healthz, follows: what a proxy and the server disagree on.
    smuggled = (b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = exchange(client, smuggled)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    # One answer, the connection's (the app answers every request with JSON), then the close: neither
    # request reached the app.
    assert answer.count(b"HTTP/1.1 ") == 1 and answer.endswith(b"both Content-Length and Transfer-Encoding")
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("size", [100 * 1024, 8 * 1024 * 1024], ids=["100KiB-in-one-read", "8MiB"])
def test_a_head_over_the_limit_is_431_and_a_clean_close(client, size):
    answer = exchange(client, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:100]
    assert b"connection: close" in answer.lower()
    assert exchange(client, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Fit: " + b"a" * 60_000 +
                    b"\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 200 ")


def test_idle_connections_past_the_cap_and_the_header_timeout_are_closed_while_requests_are_served(client, video):
    started = time.monotonic()
    silent = [connect(client) for _ in range(CAP + 30)]  # never send a byte
    partial = [connect(client) for _ in range(10)]  # send part of a head (slowloris)
    for sock in partial:
        sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n")
    idle = silent + partial
    # The longest idle made room: at most CAP open.
    assert eventually(lambda: sum(closed(sock) for sock in idle) >= len(idle) - CAP, HEADER_TIMEOUT / 2)

    during = client.post("/v1/classify", content=video, headers=OCTET)
    assert during.status_code == 200, during.text
    still_open = sum(not closed(sock) for sock in idle)
    assert 0 < still_open <= CAP - 1  # served while they were open; its connection took the place of one

    time.sleep(max(0.0, started + HEADER_TIMEOUT - time.monotonic()))
    assert eventually(lambda: all(closed(sock) for sock in idle), 2.0)  # the header timeout closed the rest
    after = client.post("/v1/classify", content=video, headers=OCTET)
    assert after.status_code == 200, after.text
    for sock in idle:
        sock.close()


def test_the_header_timeout_holds_for_a_dripped_head_and_after_an_answer(client):
    with connect(client) as dripping, connect(client) as kept:
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert kept.recv(65536).startswith(b"HTTP/1.1 200 ")
        kept.sendall(b"GET /healthz HTTP/1.1\r\n")  # stops uvicorn's keep-alive timer; the next head is late
        started = time.monotonic()
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n":
            try:
                dripping.sendall(bytes([byte]))
            except ConnectionError:
                break
            if closed(dripping, 0.1):
                break
        assert closed(dripping, 1.0) and closed(kept, 1.0)
        assert time.monotonic() - started < HEADER_TIMEOUT + 1.0
