"""The HTTP service: ``create_app(classifier, settings)``; ``shortvid.serve.server`` runs it (``shortvid serve RUN``).

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
import functools
import hmac
import json
import logging
import os
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..extras import require

require("serve", "the HTTP service")  # before the imports it needs: a clear message, not an ImportError

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi_offline import FastAPIOffline
from starlette.requests import ClientDisconnect

from ..decode import DecodeLimits
from ..errors import DecodeError, DecodeTimeoutError, ShortvidError
from ..infer.classifier import Classifier, Prediction
from ..machine import memory_bytes
from .admission import Admission, Refusal
from .batcher import Batcher
from .control import ModelSlot, ReloadInProgress, ServedModel
from .metrics import Metrics
from .requests import (
    CLASSIFY_OPENAPI,
    JSON_LIMIT,
    BodyMeter,
    HTTPProblem,
    Upload,
    body_limit,
    declared_length,
    named_stream,
    read_body,
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
    # Capacity is requests answered per second of busy time over a window that decays with this time
    # constant (seconds): longer is steadier, shorter forgets a slow spell sooner.
    capacity_window: float = 10.0
    decode_workers: int = min(4, os.cpu_count() or 1)  # decode threads
    max_body_mb: float = 64.0  # larger bodies get 413
    max_uploads: int = 128  # bodies being received at once; more get 503
    # Bytes of all bodies held at once (being received, or received and not yet answered); past it
    # 503 UploadsFull before the body is read. None: the smaller of 1 GiB and a quarter of the memory
    # this process may use, and never less than one body of max_body_mb.
    upload_budget_mb: float | None = None
    body_timeout: float = 15.0  # seconds to receive a whole body; past it 408
    timeout: float = 10.0  # seconds per request once its body is in (decode + batching + model); past it 504
    allow_root: str | os.PathLike | None = None  # JSON {"path"} requests may read files under it
    retry_after: int = 1  # seconds, the least Retry-After of a 503
    shutdown_grace: float = 10.0  # seconds serve() lets requests finish after SIGTERM before cancelling them
    limits: DecodeLimits | None = None  # the largest frames decoded; None: the classifier's
    warmup: bool = True  # classify a generated video at startup before /readyz says ready
    model_thread: bool = True  # batch on a thread of the app's own; serve() batches on the main thread
    # POST /admin/reload needs "Authorization: Bearer <admin_token>"; None: model control is off.
    admin_token: str | None = field(default=None, repr=False)
    # The connection layer (shortvid.serve.server; apps embedded elsewhere get their server's):
    max_connections: int = 1000  # open connections; past it the one idle the longest is closed
    header_timeout: float = 10.0  # seconds for a connection to send a request's head; past it closed
    max_header_kb: float = 64.0  # a larger request line and headers get 431

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def upload_budget_bytes(self) -> int:
        if self.upload_budget_mb is not None:
            return int(self.upload_budget_mb * 1024 * 1024)
        return max(self.max_body_bytes, min(1 << 30, (memory_bytes() or 4 << 30) // 4))

    def __post_init__(self) -> None:
        if self.upload_budget_mb is not None and self.upload_budget_bytes < self.max_body_bytes:
            raise ValueError(f"the upload budget ({self.upload_budget_mb:g} MiB) is smaller than one body of "
                             f"max_body_mb ({self.max_body_mb:g} MiB): such a body could never be received")
        if self.admin_token is not None and len(self.admin_token) < 16:
            raise ValueError("the admin token must be at least 16 characters")

    @property
    def max_header_bytes(self) -> int:
        return int(self.max_header_kb * 1024)


class Service:
    """What one app holds: the live model (``ModelSlot``), decode pool, batcher, admission, metrics,
    readiness."""

    def __init__(self, classifier: Classifier, settings: ServeSettings):
        self.settings = settings
        self.metrics = Metrics(settings.max_batch)
        self.admission = Admission(settings.max_queue, settings.max_queue_seconds, settings.max_uploads,
                                   settings.upload_budget_bytes, settings.retry_after, settings.capacity_window)
        self.batcher = Batcher(settings.max_batch, settings.max_wait_ms, self.metrics)
        # A new model inherits the capacity estimate, which follows its speed within the window:
        # measuring from nothing would refuse requests on the first answers' noise (bench/reload.py).
        self.models = ModelSlot(classifier, self.warm)
        self.pool = ThreadPoolExecutor(max_workers=max(1, settings.decode_workers),
                                       thread_name_prefix="shortvid-decode")
        self.root = Path(settings.allow_root).resolve(strict=True) if settings.allow_root else None
        self.ready = threading.Event()
        self.warmup_error: str | None = None

    @property
    def classifier(self) -> Classifier:
        """The classifier live now."""
        return self.models.current.classifier

    def start(self) -> None:
        if self.settings.model_thread:
            self.batcher.start()

    def stop(self) -> None:
        self.batcher.stop()
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def receive(self, request: Request) -> tuple[Upload, int]:
        """The request's video (``video_source``) and the bytes it holds in the upload budget, received
        in an upload slot within ``body_timeout``. A request the service could not take now is refused
        before its body is read: under overload, receiving bodies only to refuse them would take the
        CPU the model needs, and a body that would pass the upload budget would take its memory.
        (uvicorn then discards the body as it arrives, keeping the connection; a client that sends
        ``Expect: 100-continue`` never sends it.) The caller gives the bytes back with
        ``admission.release`` once the request is answered."""
        limit = body_limit(request, self.settings.max_body_bytes)
        declared = declared_length(request, limit)
        _refuse(self.admission.check())
        _refuse(self.admission.start_upload(declared or 0))
        meter = BodyMeter(limit, declared, lambda nbytes: _refuse(self.admission.reserve(nbytes)))
        try:
            upload = await asyncio.wait_for(video_source(request, meter, self.root), self.settings.body_timeout)
        except BaseException as error:
            self.admission.release(meter.reserved)
            if isinstance(error, asyncio.TimeoutError):
                raise HTTPProblem(408, "RequestTimeout",
                                  f"the body was not received within {self.settings.body_timeout:g} s",
                                  {"Connection": "close"}) from None
            if isinstance(error, ClientDisconnect):
                raise HTTPProblem(400, "ClientDisconnected",
                                  "the client went away before sending the whole body") from None
            raise
        finally:
            self.admission.end_upload()
        return upload, meter.reserved

    def admit(self) -> None:
        """A work slot, or 503 at once: the queue is full, or would not be answered within its budget."""
        _refuse(self.admission.admit())

    def release(self) -> None:
        self.admission.done()

    async def classify(self, model: ServedModel, source, admitted: float,
                       receive_ms: float = 0.0) -> tuple[Prediction, dict]:
        """Decode in the pool, classify in the batcher, both with ``model`` (the one live when the
        request was admitted); the per-request timeout covers both."""
        classifier = model.classifier
        loop = asyncio.get_running_loop()
        deadline = admitted + self.settings.timeout
        marks: dict[str, float] = {}

        def decode():
            marks["decode_start"] = time.perf_counter()
            remaining = deadline - marks["decode_start"]
            if remaining <= 0:
                raise asyncio.TimeoutError
            try:
                return classifier.read(source, timeout=remaining, limits=self.settings.limits)
            finally:
                marks["decode_end"] = time.perf_counter()

        pending: Future | None = None

        async def run():
            nonlocal pending
            clip = await loop.run_in_executor(self.pool, decode)
            self.metrics.observe(self.metrics.queue_wait, marks["decode_start"] - admitted)
            self.metrics.observe(self.metrics.decode, marks["decode_end"] - marks["decode_start"])
            pending = self.batcher.submit(clip, classifier)
            return clip, await asyncio.wrap_future(pending)

        try:
            clip, result = await asyncio.wait_for(run(), max(0.0, deadline - time.perf_counter()))
        except (asyncio.TimeoutError, DecodeTimeoutError):
            if pending is not None:
                pending.cancel()
            raise HTTPProblem(504, "Timeout", f"not classified within {self.settings.timeout:g} s") from None
        labels, top = classifier.decide(result.scores)
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
        return Prediction.of(clip, labels, top, timings), {"batch_size": result.batch_size}

    def warm(self, model: ServedModel) -> None:
        """Classify a small generated video with ``model`` through decode and the batcher (first-call
        costs paid here, not by a request); raises if it cannot."""
        if self.settings.warmup:
            clip = model.classifier.read(named_stream(_warmup_video(), "<warmup>"), timeout=60)
            self.batcher.submit(clip, model.classifier).result(timeout=300)

    def warmup(self) -> None:
        """Warm the first model, then say ready (or why not)."""
        try:
            self.warm(self.models.current)
            self.ready.set()
            classifier = self.classifier
            log.info("warm-up done; ready (model %s, backend %s, %s, on %s)", self.models.current.id,
                     classifier.backend.name, classifier.backend.precision, classifier.device)
        except Exception as error:
            self.warmup_error = f"{type(error).__name__}: {error}"
            log.exception("warm-up failed")


def _refuse(refusal: Refusal | None) -> None:
    """503 with Retry-After for a refusal."""
    if refusal is not None:
        raise HTTPProblem(503, refusal.kind, refusal.message, {"Retry-After": str(refusal.retry_after)})


@functools.lru_cache(maxsize=1)
def _warmup_video() -> bytes:
    from ..synth.encode import EncodeSpec, encode_video

    y, x = np.mgrid[0:128, 0:128]
    frames = [np.stack([(x * 2 + 8 * i) % 256, (y * 2) % 256, np.full_like(x, 128)], -1).astype(np.uint8)
              for i in range(12)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "warmup.mp4"
        encode_video(path, frames, EncodeSpec(fps=10, gop=4, scenecut=False, audio=False), keyframes=(0, 4, 8))
        return path.read_bytes()


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def create_app(classifier: Classifier, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app serving ``classifier``; embed it or run it with uvicorn
    (``shortvid.serve.server.serve`` does)."""
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

    def problem(error: HTTPProblem | ShortvidError, status: int, request_id: str | None = None, headers=None,
                **extra) -> JSONResponse:
        body = {"error": error.to_dict(), **extra}
        if request_id:
            body["request_id"] = request_id
        return JSONResponse(body, status_code=status, headers=headers)

    @app.post("/v1/classify", openapi_extra=CLASSIFY_OPENAPI, summary="Classify one video")
    async def classify(request: Request):
        request_id = request_id_of(request)
        started = time.perf_counter()
        headers = {"X-Request-ID": request_id}
        status, admitted, upload, held, model = 500, None, None, 0, None
        try:
            upload, held = await service.receive(request)
            received = time.perf_counter()
            service.admit()
            admitted = time.perf_counter()
            model = service.models.current  # this request finishes on it, whatever goes live meanwhile
            headers["X-Model"] = model.id
            prediction, extra = await service.classify(model, upload.source, admitted, (received - started) * 1000)
            status = 200
            return JSONResponse({"request_id": request_id, "model": model.id, **prediction.to_dict(), **extra},
                                headers=headers)
        except HTTPProblem as error:
            status = error.status
            return problem(error, status, request_id, {**error.headers, **headers})
        except DecodeError as error:
            status = 422
            return problem(error, status, request_id, headers)
        except Exception as error:  # one request's crash is its own 500
            log.exception("request %s failed", request_id)
            status = 500
            return problem(HTTPProblem(500, type(error).__name__, str(error) or type(error).__name__), status,
                           request_id, headers)
        finally:
            if admitted is not None:
                service.release()
            if upload is not None:
                await upload.close()
            service.admission.release(held)
            service.metrics.count("POST", "/v1/classify", status, time.perf_counter() - started,
                                  model.id if model is not None else None)

    @app.get("/v1/model", summary="The model being served: run, classes, backend, precision, content hash")
    async def model_info():
        service.metrics.count("GET", "/v1/model", 200, None)
        return service.models.describe()

    @app.post("/admin/reload", summary="Load a run (default: the served run as it is now), warm it, put it live",
              include_in_schema=settings.admin_token is not None)
    async def reload(request: Request):
        if settings.admin_token is None:
            status, answer = 404, problem(HTTPProblem(404, "NotFound", "model control is off: start the service "
                                                                       "with an admin token to use it"), 404)
        elif not hmac.compare_digest(_bearer(request).encode(), settings.admin_token.encode()):
            status, answer = 401, problem(HTTPProblem(401, "Unauthorized", "send the admin token as "
                                                                           "'Authorization: Bearer TOKEN'"), 401,
                                          headers={"WWW-Authenticate": "Bearer"})
        else:
            status, answer = await _reload(request)
        service.metrics.count("POST", "/admin/reload", status, None)
        return answer

    async def _reload(request: Request) -> tuple[int, JSONResponse]:
        try:
            body = await read_body(request, BodyMeter(JSON_LIMIT, declared_length(request, JSON_LIMIT),
                                                      lambda nbytes: None))
            asked = json.loads(body) if body.strip() else {}
            if not isinstance(asked, dict) or not isinstance(asked.get("run", ""), str):
                raise ValueError('expected {"run": "PATH"} or no body')
        except HTTPProblem as error:
            return error.status, problem(error, error.status)
        except (ValueError, RecursionError) as error:
            return 400, problem(HTTPProblem(400, "BadRequest", f"invalid JSON: {error}"), 400)
        previous = service.models.current.id
        try:
            model = await asyncio.get_running_loop().run_in_executor(None, service.models.reload, asked.get("run"))
        except ReloadInProgress as error:
            return 409, problem(error, 409, serving=service.models.current.id)
        except Exception as error:  # noqa: BLE001 - the old model still serves; say why the new one does not
            return 422, problem(HTTPProblem(422, type(error).__name__, str(error)), 422,
                                serving=service.models.current.id)
        return 200, JSONResponse({"model": model.describe(), "previous": previous})

    @app.get("/healthz", summary="The process is alive")
    async def healthz():
        service.metrics.count("GET", "/healthz", 200, None)
        return {"status": "ok"}

    @app.get("/readyz", summary="The model is loaded and a warm-up classification is done")
    async def readyz():
        if service.ready.is_set():
            service.metrics.count("GET", "/readyz", 200, None)
            # Shedding load is not unreadiness: a replica taken out of a load balancer for it would
            # move its load onto the others. The body says when and why it sheds.
            return {"status": "ready", "model": service.models.current.id, "shedding": service.admission.shedding()}
        service.metrics.count("GET", "/readyz", 503, None)
        reason = f"warm-up failed: {service.warmup_error}" if service.warmup_error else "warming up"
        return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics():
        service.metrics.count("GET", "/metrics", 200, None)
        return PlainTextResponse(service.metrics.render(service.ready.is_set(), service.admission, service.models),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


__all__ = ["ServeSettings", "create_app"]
