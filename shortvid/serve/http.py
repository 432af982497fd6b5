"""The HTTP service: ``create_app(classifier, settings)`` and ``shortvid serve RUN``.

A request's body is received first (size- and time-limited, in an upload slot of its own), then the
request is admitted to the work queue only if it can be answered within the latency budget at the
measured throughput (``shortvid.serve.admission``); otherwise it gets 503 at once. Admitted requests
are decoded by a pool of decode threads (PyAV releases the GIL while decoding), and their clips
handed to one model thread that batches whatever arrives within ``max_wait_ms`` of the first clip (up
to ``max_batch``) into a single ``Classifier.scores_many`` call. Each request then gets ``decide()``
on its own row. See docs/serving.md and docs/security.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import os
import queue
import re
import signal
import tempfile
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi_offline import FastAPIOffline
from starlette.requests import ClientDisconnect

from ..decode import DecodeLimits
from ..errors import DecodeError, DecodeTimeoutError, InvalidVideoError
from .admission import Admission, Refusal
from .classifier import Classifier, Prediction

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


class HTTPProblem(Exception):
    """An error answered with ``status`` and ``{"error": {"type", "message"}}``."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers or {}

    def to_dict(self) -> dict:
        return {"type": self.kind, "message": self.message}


# --- metrics (Prometheus text format, written by hand) ---------------------------------------------

class _Histogram:
    def __init__(self, name: str, help: str, buckets: tuple[float, ...]):
        self.name, self.help, self.buckets = name, help, tuple(sorted(buckets))
        self.counts = [0] * len(self.buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.sum += value
        self.count += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for bound, count in zip(self.buckets, self.counts):
            lines.append(f'{self.name}_bucket{{le="{_number(bound)}"}} {count}')
        lines += [f'{self.name}_bucket{{le="+Inf"}} {self.count}', f"{self.name}_sum {_number(self.sum)}",
                  f"{self.name}_count {self.count}"]
        return lines


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Request counts by status, latency and stage histograms, batch sizes; the admission gauges
    (queue depth, uploads, throughput, refusals) are read from ``Admission`` when rendered."""

    def __init__(self, max_batch: int):
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency = _Histogram("shortvid_request_duration_seconds",
                                  "Time to answer a classify request (all statuses).", _SECONDS)
        self.queue_wait = _Histogram("shortvid_queue_seconds", "Time a request waited for a decode worker.",
                                     _SECONDS)
        self.decode = _Histogram("shortvid_decode_seconds", "Decode time per video.", _SECONDS)
        self.batch_wait = _Histogram("shortvid_batch_wait_seconds",
                                     "Time a decoded clip waited for its model call.", _SECONDS)
        self.model = _Histogram("shortvid_model_seconds", "Time of one batched model call (preprocess included).",
                                _SECONDS)
        sizes = sorted({1, 2, 4, 8, 16, 32, 64, max_batch})
        self.batch_size = _Histogram("shortvid_batch_size", "Clips per model call.", tuple(float(s) for s in sizes))
        self.model_queue = 0  # decoded clips waiting for the model thread

    def count(self, method: str, path: str, status: int, seconds: float | None) -> None:
        with self.lock:
            key = (method, path, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            if seconds is not None:
                self.latency.observe(seconds)

    def observe(self, histogram: _Histogram, value: float) -> None:
        with self.lock:
            histogram.observe(value)

    def render(self, ready: bool, admission: Admission) -> str:
        with admission.lock:
            in_flight, uploads, refused = admission.in_flight, admission.uploads, dict(admission.refused)
            throughput, wait = admission.throughput or 0.0, admission.expected_wait() or 0.0
        with self.lock:
            lines = ["# HELP shortvid_http_requests_total HTTP requests answered, by method, path and status.",
                     "# TYPE shortvid_http_requests_total counter"]
            for (method, path, status), n in sorted(self.requests.items()):
                lines.append(f'shortvid_http_requests_total{{method="{method}",path="{path}",status="{status}"}} {n}')
            for histogram in (self.latency, self.queue_wait, self.decode, self.batch_wait, self.model,
                              self.batch_size):
                lines += histogram.render()
            lines += ["# HELP shortvid_queue_depth Classify requests admitted and not yet answered.",
                      "# TYPE shortvid_queue_depth gauge", f"shortvid_queue_depth {in_flight}",
                      "# HELP shortvid_uploads_in_progress Request bodies being received.",
                      "# TYPE shortvid_uploads_in_progress gauge", f"shortvid_uploads_in_progress {uploads}",
                      "# HELP shortvid_model_queue_depth Decoded clips waiting for the model.",
                      "# TYPE shortvid_model_queue_depth gauge", f"shortvid_model_queue_depth {self.model_queue}",
                      "# HELP shortvid_throughput_requests_per_second Throughput measured while saturated.",
                      "# TYPE shortvid_throughput_requests_per_second gauge",
                      f"shortvid_throughput_requests_per_second {_number(round(throughput, 3))}",
                      "# HELP shortvid_expected_wait_seconds Time the requests in progress are expected to take.",
                      "# TYPE shortvid_expected_wait_seconds gauge",
                      f"shortvid_expected_wait_seconds {_number(round(wait, 4))}",
                      "# HELP shortvid_rejected_total Requests refused with 503, by reason.",
                      "# TYPE shortvid_rejected_total counter"]
            lines += [f'shortvid_rejected_total{{reason="{reason}"}} {n}' for reason, n in sorted(refused.items())]
            lines += ["# HELP shortvid_ready Whether the model is loaded and warmed up.",
                      "# TYPE shortvid_ready gauge", f"shortvid_ready {int(ready)}"]
        return "\n".join(lines) + "\n"


# --- the model thread ------------------------------------------------------------------------------

@dataclass
class _Job:
    clip: object
    future: Future
    queued: float  # perf_counter when the clip was handed over


@dataclass(frozen=True)
class BatchResult:
    scores: np.ndarray  # this clip's row
    batch_size: int
    batch_wait_ms: float
    timings: dict[str, float]  # the batch's preprocess and model ms


class Batcher:
    """One thread owning the model: collects clips for up to ``max_wait_ms`` after the first (or until
    ``max_batch``), classifies them in one ``scores_many`` call and resolves each clip's future."""

    def __init__(self, classifier: Classifier, max_batch: int, max_wait_ms: float, metrics: Metrics):
        self.classifier, self.max_batch, self.max_wait = classifier, max(1, max_batch), max_wait_ms / 1000
        self.metrics = metrics
        self.jobs: queue.Queue[_Job | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="shortvid-model", daemon=True)

    def start(self) -> None:
        """Batch on a thread of its own (for an app embedded in any server)."""
        self.thread.start()

    def run(self) -> None:
        """Batch on the calling thread until ``stop()``: ``serve()`` gives the model the main thread,
        where PyTorch CPU calls ran up to 2x faster than from a secondary thread (BENCHMARKS.md)."""
        self._run()

    def stop(self) -> None:
        self.jobs.put(None)
        if self.thread.is_alive():
            self.thread.join(timeout=30)

    def submit(self, clip) -> Future:
        future: Future = Future()
        with self.metrics.lock:
            self.metrics.model_queue += 1
        self.jobs.put(_Job(clip, future, time.perf_counter()))
        return future

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self.jobs.get()
            if first is None:
                break
            batch = [first]
            deadline = time.perf_counter() + self.max_wait
            while len(batch) < self.max_batch:
                remaining = deadline - time.perf_counter()
                try:
                    job = self.jobs.get(timeout=remaining) if remaining > 0 else self.jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                batch.append(job)
            with self.metrics.lock:
                self.metrics.model_queue -= len(batch)
            # Requests that timed out meanwhile are dropped here.
            batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
            try:
                if batch:
                    self._classify(batch)
            except Exception as error:  # noqa: BLE001 - the model thread must outlive any one batch
                log.exception("the model thread failed on a batch")
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(error)
        while True:  # fail whatever is left at shutdown
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(RuntimeError("the server is shutting down"))

    def _classify(self, batch: list[_Job]) -> None:
        started = time.perf_counter()
        try:
            scores, timings = self.classifier.scores_many([job.clip for job in batch])
        except Exception as error:  # noqa: BLE001
            if len(batch) == 1:
                batch[0].future.set_exception(error)
                return
            log.exception("a batch of %d failed; classifying its clips one by one", len(batch))
            for job in batch:  # one bad clip fails only its own request
                self._classify([job])
            return
        self.metrics.observe(self.metrics.batch_size, len(batch))
        self.metrics.observe(self.metrics.model, time.perf_counter() - started)
        for row, job in enumerate(batch):
            wait = (started - job.queued) * 1000
            self.metrics.observe(self.metrics.batch_wait, wait / 1000)
            job.future.set_result(BatchResult(scores[row], len(batch), wait, dict(timings)))


# --- the service -----------------------------------------------------------------------------------

class Service:
    """What one app holds: classifier, decode pool, batcher, metrics, readiness."""

    def __init__(self, classifier: Classifier, settings: ServeSettings):
        self.classifier, self.settings = classifier, settings
        self.metrics = Metrics(settings.max_batch)
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
        """The request's video (``_source``), received in an upload slot within ``body_timeout``.
        A request the queue could not take now is refused before its body is read: under overload,
        receiving the bodies of requests only to refuse them would take the CPU the model needs.
        (uvicorn then discards the body as it arrives, keeping the connection; a client that sends
        ``Expect: 100-continue`` never sends it.)"""
        _refuse(self.admission.check())
        _refuse(self.admission.start_upload())
        try:
            return await asyncio.wait_for(_source(self, request), self.settings.body_timeout)
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

    def resolve(self, path: str) -> Path:
        """A server-side path, allowed only under --allow-root (symlinks and '..' resolved first)."""
        if self.root is None:
            raise HTTPProblem(403, "PathNotAllowed", "this server reads no server-side paths (start it with --allow-root)")
        if not isinstance(path, str) or not path:
            raise HTTPProblem(400, "BadRequest", '"path" must be a non-empty string')
        if "\0" in path:
            raise HTTPProblem(400, "BadRequest", '"path" contains a NUL byte')
        candidate = Path(path)
        if not candidate.is_absolute():
            candidate = self.root / candidate
        try:
            real = Path(os.path.realpath(candidate))
        except (OSError, ValueError) as error:
            raise HTTPProblem(400, "BadRequest", f'"path" cannot be resolved: {error}') from None
        if real != self.root and self.root not in real.parents:
            raise HTTPProblem(403, "PathNotAllowed", f"{path}: outside the allowed root")
        return real

    def warmup(self) -> None:
        """Classify a small generated video through decode and the batcher (first-call costs paid here)."""
        try:
            if self.settings.warmup:
                video = _warmup_video()
                clip = self.classifier.read(_named(video, "<warmup>"), timeout=60)
                self.batcher.submit(clip).result(timeout=300)
            self.ready.set()
            log.info("warm-up done; ready")
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


def _named(data: bytes, name: str) -> io.BytesIO:
    stream = io.BytesIO(data)
    stream.name = name  # DecodeErrors name the upload
    return stream


async def _read_body(request: Request, limit: int) -> bytes:
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


def _filename(request: Request) -> str:
    name = request.headers.get("x-filename")
    disposition = request.headers.get("content-disposition", "")
    if not name and "filename=" in disposition:
        name = disposition.split("filename=", 1)[1].split(";")[0].strip().strip('"')
    return name or "<upload>"


async def _source(service: Service, request: Request) -> tuple[object, str]:
    """What to decode (a named in-memory file or an allowed path) and its display name."""
    content_type = request.headers.get("content-type", "application/octet-stream").split(";")[0].strip().lower()
    limit = service.settings.max_body_bytes
    if content_type == "application/json":
        body = await _read_body(request, min(limit, 1 << 20))
        try:
            data = json.loads(body)
        except ValueError as error:
            raise HTTPProblem(400, "BadRequest", f"invalid JSON: {error}") from None
        except RecursionError:
            raise HTTPProblem(400, "BadRequest", "invalid JSON: nested too deeply") from None
        if not isinstance(data, dict) or "path" not in data:
            raise HTTPProblem(400, "BadRequest", 'expected {"path": "..."}')
        path = service.resolve(data["path"])
        return path, str(path)
    if content_type == "multipart/form-data":
        body = await _read_body(request, limit)
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
        data = await _read_body(request, limit)
        name = _filename(request)
    else:
        raise HTTPProblem(415, "UnsupportedMediaType",
                          f"content type {content_type!r}: send multipart/form-data (field 'file'), "
                          "application/octet-stream, video/*, or application/json {\"path\"}")
    if not data:
        raise InvalidVideoError(name, "empty input (0 bytes)")
    return _named(data, name), name


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

_CLASSIFY_BODY = {
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
}


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

    @app.post("/v1/classify", openapi_extra=_CLASSIFY_BODY, summary="Classify one video")
    async def classify(request: Request):
        request_id = request.headers.get("x-request-id", "")
        if not _REQUEST_ID.fullmatch(request_id):  # the caller's id when it is a sane one
            request_id = uuid.uuid4().hex
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


__all__ = ["ServeSettings", "create_app", "serve", "Metrics", "Batcher"]
