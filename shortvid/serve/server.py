"""Running the service: ``serve()`` and ``uvicorn_config``, the one uvicorn configuration that it and the
tests use, with ``GuardedH11Protocol``, uvicorn's h11 protocol plus the connection limits uvicorn lacks.

uvicorn 0.55 (h11) leaves these edges to a proxy, and shortvid closes them itself (docs/security.md):

- **Connections that never send their headers** stay open for good: uvicorn's keep-alive timer starts
  only after a first answer. ``header_timeout`` closes a connection that has not sent a whole request
  head within that many seconds of opening, or of its previous answer.
- **Open connections are not bounded.** uvicorn's ``limit_concurrency`` does not bound them: it
  answers 503 to every request once that many connections are open, idle ones included, so idle
  connections lock real requests out (bench/connections.py measures it). Past ``max_connections`` the
  connection idle the longest (no request in progress) is closed instead, as nginx reuses its idle
  connections when it runs out; file descriptors stay bounded and a new client gets in.
- **Content-Length with Transfer-Encoding** is accepted by h11 (chunked wins; the app sees both
  headers, with the body already de-chunked). Behind a proxy that frames by Content-Length that is
  request smuggling; RFC 9112 section 6.3 lets a server refuse it and requires the connection closed:
  400 and close, before the app runs.
- **Oversized headers**: uvicorn answers 400 for any parse error, ignoring h11's status hint (431
  here), closes with the rest of the header unread, so the kernel resets the connection and the client
  often sees the reset, not the answer; and h11 checks its size limit only on a head still
  incomplete, so one that arrives whole in one read passes whatever its size. Here: 431 for a head
  over ``max_header_bytes`` however it arrived, and every refusal is closed gracefully (our side shut,
  what the client still sends read and dropped for ``LINGER_SECONDS``, nginx's lingering close).
"""

from __future__ import annotations

import asyncio
import dataclasses
import http
import logging
import resource
import signal
import threading
from typing import Any, NoReturn

from ..extras import require

require("serve", "the HTTP service")  # before the imports it needs: a clear message, not an ImportError

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..infer.classifier import Classifier
from .http import ServeSettings, create_app

log = logging.getLogger("shortvid.serve")

LINGER_SECONDS = 2.0  # how long a refused connection drops what its client still sends before closing
FD_HEADROOM = 256  # file descriptors beyond the connections: the listening socket, model and video files, pipes


def head_size(request: h11.Request) -> int:
    """About the bytes of a request's line and headers as sent (h11 has parsed them)."""
    line = len(request.method) + len(request.target) + len(request.http_version) + 9
    return line + sum(len(name) + len(value) + 4 for name, value in request.headers) + 2


class StrictConnection(h11.Connection):
    """h11's server side, refusing what h11 lets through: a request with both Content-Length and
    Transfer-Encoding (400), and a head over ``max_header_bytes`` that arrived whole (431). Keeps the
    status and message of the last protocol error for the answer (``refusal``; h11's own messages
    quote the client's bytes, so they are not sent back)."""

    def __init__(self, max_header_bytes: int):
        super().__init__(h11.SERVER, max_incomplete_event_size=max_header_bytes)
        self.max_header_bytes = max_header_bytes
        self.refusal = (400, "invalid HTTP request")

    def next_event(self) -> Any:
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as error:
            status = error.error_status_hint
            self.refusal = (status, {431: f"the request line and headers are over {self.max_header_bytes} bytes",
                                     501: "only Transfer-Encoding: chunked is supported"}.get(status,
                                                                                               "invalid HTTP request"))
            raise
        if isinstance(event, h11.Request):
            names = {name for name, _ in event.headers}
            if b"content-length" in names and b"transfer-encoding" in names:
                self.refuse(400, "both Content-Length and Transfer-Encoding")
            if head_size(event) > self.max_header_bytes:
                self.refuse(431, f"the request line and headers are over {self.max_header_bytes} bytes")
        return event

    def refuse(self, status: int, message: str) -> NoReturn:
        """Fail the request just parsed, as h11 fails one it cannot parse."""
        self.refusal = (status, message)
        raise h11.RemoteProtocolError(message, error_status_hint=status)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header timeout, a cap on open connections (closing the longest idle
    one), and refusals with h11's status that reach the client (module docstring). Each class made by
    ``guarded_protocol`` serves one server: ``idle`` holds its connections with no request in progress,
    the longest idle first."""

    max_connections: int = 1000
    header_timeout: float = 10.0
    max_header_bytes: int = 64 * 1024
    idle: dict[GuardedH11Protocol, None] = {}

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.conn = StrictConnection(self.max_header_bytes)
        self.header_timer: asyncio.TimerHandle | None = None
        self.lingering = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.await_headers()
        if len(self.connections) > self.max_connections:
            self.make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_waiting()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self.lingering:  # once refused, what the client still sends is dropped
            super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete:
            self.stop_waiting()  # a request's head is in: its body has the app's --body-timeout

    def on_response_complete(self) -> None:
        self.await_headers()
        super().on_response_complete()  # may start a pipelined request (handle_events)

    def await_headers(self) -> None:
        """Wait ``header_timeout`` for the next request's head; meanwhile this connection is idle."""
        self.stop_waiting()
        self.header_timer = self.loop.call_later(self.header_timeout, self.headers_late)
        self.idle[self] = None

    def stop_waiting(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None
        self.idle.pop(self, None)

    def headers_late(self) -> None:
        """Close a connection whose request head is late; one still sending the body of a request
        already answered (a 503 before its body) gets another ``header_timeout`` each time."""
        self.header_timer = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return
        if self.conn.their_state is h11.SEND_BODY:
            self.header_timer = self.loop.call_later(self.header_timeout, self.headers_late)
        else:
            self.stop_waiting()
            self.transport.close()

    def make_room(self) -> None:
        """Past ``max_connections``: close the connection idle the longest, or this one if every other
        connection has a request in progress."""
        oldest = next((other for other in self.idle if other is not self and not other.transport.is_closing()), self)
        oldest.stop_waiting()
        oldest.transport.close()
        if oldest is self:
            log.warning("%d connections, each with a request in progress: refused a new one", self.max_connections)

    def send_400_response(self, msg: str) -> None:
        """Answer a request h11 (or ``StrictConnection``) refused, with its status, then close gracefully:
        shut our side and drop what the client still sends for ``LINGER_SECONDS``. Closing a socket with
        unread data makes the kernel reset the connection, and a client still sending gets the reset
        instead of the answer. A request in progress (an error in its chunked body) is told its client
        went away, as if the connection were lost, so that the app does not answer it too."""
        status, message = self.conn.refusal
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        body = message.encode()
        head = (f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\ncontent-type: text/plain; charset=utf-8\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
        self.transport.write(head.encode() + body)
        self.stop_waiting()
        self.lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.flow.resume_reading()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)


def guarded_protocol(settings: ServeSettings) -> type[GuardedH11Protocol]:
    """A ``GuardedH11Protocol`` class with ``settings``' limits and an idle register of its own (one per server)."""
    return type("ShortvidH11Protocol", (GuardedH11Protocol,), {
        "max_connections": settings.max_connections, "header_timeout": settings.header_timeout,
        "max_header_bytes": settings.max_header_bytes, "idle": {}})


def uvicorn_config(app: Any, settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000,
                   log_level: str = "info") -> uvicorn.Config:
    """The uvicorn configuration of ``shortvid serve``, and of the tests (tests/serving.py): one process,
    lifespan on, the guarded h11 protocol, no WebSocket (the service has none); after SIGTERM, requests
    in progress get ``shutdown_grace`` seconds, then are cancelled, so that clients that never finish
    sending cannot keep the server up. uvicorn's ``limit_concurrency`` stays off (module docstring)."""
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, workers=1, lifespan="on",
                          http=guarded_protocol(settings), ws="none",
                          h11_max_incomplete_event_size=settings.max_header_bytes,
                          timeout_graceful_shutdown=settings.shutdown_grace)


def descriptors_needed(settings: ServeSettings, config: uvicorn.Config) -> int:
    """The file descriptors the server may hold: ``max_connections``, plus a burst of new connections
    (asyncio accepts up to the listen backlog at once, before the longest idle are closed to make
    room; bench/connections.py measured the peak), plus ``FD_HEADROOM``."""
    return settings.max_connections + config.backlog + FD_HEADROOM


def ensure_fd_limit(needed: int) -> None:
    """Raise this process's soft limit on open files to ``needed``, as far as the hard limit allows:
    past it, accepting a connection fails and asyncio stops accepting for a second."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    if raised < needed:
        log.warning("open files are limited to %d (the hard limit), under the %d that --max-connections needs: "
                    "lower it or raise the limit", raised, needed)


def serve(classifier: Classifier, settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "info") -> None:
    """Run the app until SIGINT/SIGTERM, in one process: uvicorn on a thread, and the batcher, which
    runs the model for every request, on this (the main) thread. SIGHUP loads the run again (as it is
    on disk now), warms it and puts it live (``shortvid.serve.control``)."""
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO))
    app = create_app(classifier, dataclasses.replace(settings, model_thread=False))
    batcher = app.state.service.batcher
    config = uvicorn_config(app, settings, host, port, log_level)
    ensure_fd_limit(descriptors_needed(settings, config))
    server = uvicorn.Server(config)

    def http_thread() -> None:
        try:
            server.run()  # off the main thread, uvicorn leaves signal handling to us
        finally:
            batcher.stop()  # the server stopped (or never bound its port): stop batching too

    def shutdown(signum, frame) -> None:
        server.should_exit = True

    def reload(signum, frame) -> None:
        # The model loads and warms on a thread of its own; this (main) thread goes on batching, which
        # the warm-up needs. shortvid.serve.control has the rest.
        threading.Thread(target=app.state.service.models.reload_logged, name="shortvid-reload", daemon=True).start()

    handlers = {signal.SIGINT: shutdown, signal.SIGTERM: shutdown}
    if hasattr(signal, "SIGHUP"):
        handlers[signal.SIGHUP] = reload
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    thread = threading.Thread(target=http_thread, name="shortvid-http")
    thread.start()
    try:
        batcher.run()
    finally:
        server.should_exit = True
        thread.join(timeout=settings.shutdown_grace + 30)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        raise OSError(f"could not serve on {host}:{port} (uvicorn's log above says why)")


__all__ = ["GuardedH11Protocol", "StrictConnection", "descriptors_needed", "ensure_fd_limit", "guarded_protocol",
           "serve", "uvicorn_config"]
