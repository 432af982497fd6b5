"""The HTTP service: ``create_app(classifier, settings)`` and ``shortvid serve RUN``.

A request's body is received first (size- and time-limited, in an upload slot of its own), then the
request is admitted to the work queue only if it can be answered within the latency budget at the
measured throughput (``shortvid.serve.admission``); otherwise it gets 503 at once. Admitted requests
are decoded by a pool of decode threads (PyAV releases the GIL while decoding), and their clips
handed to one model thread that batches whatever arrives within ``max_wait_ms`` of the first clip (up
to ``max_batch``) into a single ``Classifier.scores_many`` call. Each request then gets ``decide()``
on its own row. See docs/serving.md and docs/security.md.

This module wires the service together; its parts are ``requests`` (reading a request and the errors
it is answered with), ``admission``, ``batcher`` (the model thread) and ``metrics``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from ..extras import require

require("serve", "the HTTP service")  # before the imports it needs: a clear message, not an ImportError

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi_offline import FastAPIOffline
from starlette.requests import ClientDisconnect

from ..decode import DecodeLimits
from ..errors import DecodeError, DecodeTimeoutError
from .admission import Admission, Refusal
from .batcher import Batcher
from .classifier import Classifier, Prediction
from .metrics import Metrics
from .requests import (
    CLASSIFY_OPENAPI,
    HTTPProblem,
    named_stream,
    request_id_of,
    video_source,
)

log = logging.getLogger("shortvid.serve")


@dataclass(frozen=True)
class ServeSettings:
    """The service's knobs (the ``shortvid serve`` options of the same names)."""

    max_batch: int = 8  # clips in one model call
    max_wait_ms: float = 5.0  # how long the model thread waits for more clips after the first
    max_queue: int = 64  # requests admitted and not yet answered; more get 503
    # Admit a request only if those ahead of it are expected to be answered within this many seconds
    # at the measured throughput; None: bound the queue by count only.
    max_queue_seconds: float | None = 1.0
    decode_workers: int = min(4, os.cpu_count() or 1)  # decode threads
    max_body_mb: float = 64.0  # larger bodies get 413
    max_uploads: int = 128  # bodies being received at once; more get 503
    body_timeout: float = 15.0  # seconds to receive a whole body; past it 408
    timeout: float = 10.0  # seconds per request once its body is in (decode + batching + model); past it 504
    allow_root: str | os.PathLike | None = None  # JSON {"path"} requests may read files under it
    retry_after: int = 1  # seconds, the least Retry-After of a 503
    shutdown_grace: float = 10.0  # seconds serve() lets requests finish after SIGTERM before cancelling them
    limits: DecodeLimits | None = None  # the largest frames decoded; None: the classifier's
    warmup: bool = True  # classify a generated video at startup before /readyz says ready
    model_thread: bool = True  # batch on a thread of the app's own; serve() batches on the main thread

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


class Service:
    """What one app holds: classifier, decode pool, batcher, metrics, readiness."""

    def __init__(self, classifier: Classifier, settings: ServeSettings):
        self.classifier, self.settings = classifier, settings
        self.metrics = Metrics(settings.max_batch, {"backend": classifier.backend.name,
                                                    "precision": classifier.backend.precision,
                                                    "device": str(classifier.device)})
        self.admission = Admission(settings.max_queue, settings.max_queue_seconds, settings.max_uploads,
                                   settings.retry_after)
        self.batcher = Batcher(classifier, settings.max_batch, settings.max_wait_ms, self.metrics)
        self.pool = ThreadPoolExecutor(max_workers=max(1, settings.decode_workers), thread_name_prefix="shortvid-decode")
        self.root = Path(settings.allow_root).resolve(strict=True) if settings.allow_root else None
        self.ready = threading.Event()
        self.warmup_error: str | None = None

    def start(self) -> None:
        if self.settings.model_thread:
            self.batcher.start()

    def stop(self) -> None:
        self.batcher.stop()
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def receive(self, request: Request) -> tuple[object, str]:
        """The request's video (``video_source``), received in an upload slot within ``body_timeout``.
        A request the queue could not take now is refused before its body is read: under overload,
        receiving the bodies of requests only to refuse them would take the CPU the model needs.
        (uvicorn then discards the body as it arrives, keeping the connection; a client that sends
        ``Expect: 100-continue`` never sends it.)"""
        _refuse(self.admission.check())
        _refuse(self.admission.start_upload())
        try:
            reading = video_source(request, self.settings.max_body_bytes, self.root)
            return await asyncio.wait_for(reading, self.settings.body_timeout)
        except asyncio.TimeoutError:
            raise HTTPProblem(408, "RequestTimeout", f"the body was not received within {self.settings.body_timeout:g} s",
                              {"Connection": "close"}) from None
        except ClientDisconnect:
            raise HTTPProblem(400, "ClientDisconnected", "the client went away before sending the whole body") from None
        finally:
            self.admission.end_upload()

    def admit(self) -> None:
        """A work slot, or 503 at once: the queue is full, or would not be answered within its budget."""
        _refuse(self.admission.admit())

    def release(self) -> None:
        self.admission.done()

    async def classify(self, source, admitted: float, receive_ms: float = 0.0) -> tuple[Prediction, dict]:
        """Decode in the pool, classify in the batcher; the per-request timeout covers both."""
        loop = asyncio.get_running_loop()
        deadline = admitted + self.settings.timeout
        marks: dict[str, float] = {}

        def decode():
            marks["decode_start"] = time.perf_counter()
            remaining = deadline - marks["decode_start"]
            if remaining <= 0:
                raise asyncio.TimeoutError
            try:
                return self.classifier.read(source, timeout=remaining, limits=self.settings.limits)
            finally:
                marks["decode_end"] = time.perf_counter()

        pending: Future | None = None

        async def run():
            nonlocal pending
            clip = await loop.run_in_executor(self.pool, decode)
            self.metrics.observe(self.metrics.queue_wait, marks["decode_start"] - admitted)
            self.metrics.observe(self.metrics.decode, marks["decode_end"] - marks["decode_start"])
            pending = self.batcher.submit(clip)
            return clip, await asyncio.wrap_future(pending)

        try:
            clip, result = await asyncio.wait_for(run(), max(0.0, deadline - time.perf_counter()))
        except (asyncio.TimeoutError, DecodeTimeoutError):
            if pending is not None:
                pending.cancel()
            raise HTTPProblem(504, "Timeout", f"not classified within {self.settings.timeout:g} s") from None
        labels, top = self.classifier.decide(result.scores)
        done = time.perf_counter()
        timings = {
            "receive": receive_ms,
            "queue": (marks["decode_start"] - admitted) * 1000,
            "decode": (marks["decode_end"] - marks["decode_start"]) * 1000,
            "batch_wait": result.batch_wait_ms,
            "preprocess": result.timings.get("preprocess", 0.0),
            "model": result.timings.get("model", 0.0),
            "total": (done - admitted) * 1000,
        }
        return Prediction(labels, top, timings, clip.times, clip.info.keyframes), {"batch_size": result.batch_size}

    def warmup(self) -> None:
        """Classify a small generated video through decode and the batcher (first-call costs paid here)."""
        try:
            if self.settings.warmup:
                video = _warmup_video()
                clip = self.classifier.read(named_stream(video, "<warmup>"), timeout=60)
                self.batcher.submit(clip).result(timeout=300)
            self.ready.set()
            log.info("warm-up done; ready (backend %s, %s, on %s)", self.classifier.backend.name,
                     self.classifier.backend.precision, self.classifier.device)
        except Exception as error:  # noqa: BLE001
            self.warmup_error = f"{type(error).__name__}: {error}"
            log.exception("warm-up failed")


def _refuse(refusal: Refusal | None) -> None:
    """503 with Retry-After for a refusal."""
    if refusal is not None:
        raise HTTPProblem(503, refusal.kind, refusal.message, {"Retry-After": str(refusal.retry_after)})


def _warmup_video() -> bytes:
    from ..synth.encode import EncodeSpec, encode_video

    y, x = np.mgrid[0:128, 0:128]
    frames = [np.stack([(x * 2 + 8 * i) % 256, (y * 2) % 256, np.full_like(x, 128)], -1).astype(np.uint8)
              for i in range(12)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "warmup.mp4"
        encode_video(path, frames, EncodeSpec(fps=10, gop=4, scenecut=False, audio=False), keyframes=(0, 4, 8))
        return path.read_bytes()


def create_app(classifier: Classifier, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app serving ``classifier``; embed it or run it with uvicorn."""
    settings = settings or ServeSettings()
    service = Service(classifier, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        warmup = threading.Thread(target=service.warmup, name="shortvid-warmup", daemon=True)
        warmup.start()
        try:
            yield
        finally:
            service.stop()

    # The API docs (/docs, /redoc) load their scripts from the package, not from a CDN: they work
    # in an air-gapped cluster.
    app = FastAPIOffline(title="shortvid", summary="Real-time short-video classification", lifespan=lifespan)
    app.state.service = service

    def problem(error: HTTPProblem | DecodeError, status: int, request_id: str | None, headers=None) -> JSONResponse:
        body = {"error": error.to_dict()}
        if request_id:
            body["request_id"] = request_id
        return JSONResponse(body, status_code=status, headers=headers)

    @app.post("/v1/classify", openapi_extra=CLASSIFY_OPENAPI, summary="Classify one video")
    async def classify(request: Request):
        request_id = request_id_of(request)
        started = time.perf_counter()
        headers = {"X-Request-ID": request_id}
        status, admitted = 500, None
        try:
            source, _ = await service.receive(request)
            received = time.perf_counter()
            service.admit()
            admitted = time.perf_counter()
            prediction, extra = await service.classify(source, admitted, (received - started) * 1000)
            status = 200
            return JSONResponse({"request_id": request_id, **prediction.to_dict(), **extra}, headers=headers)
        except HTTPProblem as error:
            status = error.status
            return problem(error, status, request_id, {**error.headers, **headers})
        except DecodeError as error:
            status = 422
            return problem(error, status, request_id, headers)
        except Exception as error:  # noqa: BLE001 - one request's crash is its own 500
            log.exception("request %s failed", request_id)
            status = 500
            return problem(HTTPProblem(500, type(error).__name__, str(error) or type(error).__name__), status,
                           request_id, headers)
        finally:
            if admitted is not None:
                service.release()
            service.metrics.count("POST", "/v1/classify", status, time.perf_counter() - started)

    @app.get("/healthz", summary="The process is alive")
    async def healthz():
        service.metrics.count("GET", "/healthz", 200, None)
        return {"status": "ok"}

    @app.get("/readyz", summary="The model is loaded and a warm-up classification is done")
    async def readyz():
        if service.ready.is_set():
            service.metrics.count("GET", "/readyz", 200, None)
            return {"status": "ready"}
        service.metrics.count("GET", "/readyz", 503, None)
        reason = f"warm-up failed: {service.warmup_error}" if service.warmup_error else "warming up"
        return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics():
        service.metrics.count("GET", "/metrics", 200, None)
        return PlainTextResponse(service.metrics.render(service.ready.is_set(), service.admission),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


def serve(classifier: Classifier, settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "info") -> None:
    """Run the app until SIGINT/SIGTERM, in one process: uvicorn on a thread, and the batcher, which
    runs the model for every request, on this (the main) thread."""
    import uvicorn

    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO))
    app = create_app(classifier, dataclasses.replace(settings, model_thread=False))
    batcher = app.state.service.batcher
    # After SIGTERM, requests in progress get `shutdown_grace` seconds; then they are cancelled, so
    # that clients that never finish sending cannot keep the server up.
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, workers=1,
                                           timeout_graceful_shutdown=settings.shutdown_grace))

    def http() -> None:
        try:
            server.run()  # off the main thread, uvicorn leaves signal handling to us
        finally:
            batcher.stop()  # the server stopped (or never bound its port): stop batching too

    def shutdown(signum, frame) -> None:
        server.should_exit = True

    previous = {sig: signal.signal(sig, shutdown) for sig in (signal.SIGINT, signal.SIGTERM)}
    thread = threading.Thread(target=http, name="shortvid-http")
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


__all__ = ["ServeSettings", "create_app", "serve"]
