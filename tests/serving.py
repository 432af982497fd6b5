"""A real uvicorn server on a free port for the service tests, and readers of what it answers."""

import re
import socket
import threading
import time
from contextlib import contextmanager

import httpx
import uvicorn

from shortvid.serve.http import ServeSettings, create_app
from shortvid.serve.server import uvicorn_config


@contextmanager
def running(classifier, ready: bool = True, **settings):
    """A uvicorn server in a thread on a free port, configured as ``shortvid serve`` configures it
    (``uvicorn_config``), ready (warm-up done) unless ``ready`` is False (then only answering); yields
    an httpx client (its ``base_url`` has the port)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = ServeSettings(**settings)
    server = uvicorn.Server(uvicorn_config(create_app(classifier, settings), settings, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            wait_ok(client, "/readyz" if ready else "/healthz", 60)
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def free_port() -> int:
    """A local TCP port nothing listens on now (for a server subprocess to bind)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def metric(text: str, name: str) -> float:
    """The value of one sample (``name`` with its labels) in Prometheus text."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def wait_ready(client, seconds: float, process=None) -> None:
    """Poll /readyz until 200; fail if ``process`` (a server subprocess) exits or time runs out."""
    wait_ok(client, "/readyz", seconds, process)


def wait_ok(client, path: str, seconds: float, process=None) -> None:
    """Poll ``GET path`` until 200; fail if ``process`` (a server subprocess) exits or time runs out."""
    deadline = time.monotonic() + seconds
    while True:
        if process is not None:
            assert process.poll() is None, process.stdout.read()
        try:
            if client.get(path).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"server never answered 200 to {path}"
        time.sleep(0.05)
