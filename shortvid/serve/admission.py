"""Admission control for the service: shed load at the door instead of queueing it into timeouts.

Two gates, both answered at once with 503 and ``Retry-After``:

- **uploads**: bodies being received are counted apart from the work queue (``max_uploads``), so
  slow senders hold upload slots, never the slots of requests whose bodies have arrived;
- **work**: a request whose body has arrived is admitted only while fewer than ``max_queue`` are in
  progress *and* the requests ahead of it are expected to be answered within ``max_queue_seconds``
  at the throughput the service has been measured to sustain. Under overload the queue therefore
  stays as long as the latency budget allows, and admitted requests keep a bounded latency.

Throughput is measured, not configured: each answer that leaves the service busy (another request
still in progress) gives one sample of the gap between answers, and an exponentially weighted mean
of those gaps is the time the service needs per request when saturated. A lone request on an idle
service gives no sample, so light load never lowers the estimate; with no samples yet (just
started), only the count bound applies.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Refusal:
    """Why a request was not admitted, and when to try again."""

    kind: str  # "UploadsFull", "QueueFull" or "Overloaded"
    message: str
    retry_after: int  # seconds


class Admission:
    """Upload and work slots, and the throughput estimate that bounds the work queue. Thread-safe."""

    def __init__(self, max_queue: int, max_queue_seconds: float | None, max_uploads: int, retry_after: int = 1,
                 smoothing: float = 0.05):
        self.max_queue, self.max_queue_seconds = max_queue, max_queue_seconds
        self.max_uploads, self.retry_after, self.smoothing = max_uploads, retry_after, smoothing
        self.lock = threading.Lock()
        self.in_flight = 0  # admitted and not yet answered
        self.uploads = 0  # bodies being received
        self.gap: float | None = None  # seconds between answers while saturated (1 / throughput)
        self.samples = 0
        self._last_answer: float | None = None  # when the last answer left a still-busy service
        self.refused = {"UploadsFull": 0, "QueueFull": 0, "Overloaded": 0}

    # -- uploads ------------------------------------------------------------------------------------
    def start_upload(self) -> Refusal | None:
        with self.lock:
            if self.uploads >= self.max_uploads:
                self.refused["UploadsFull"] += 1
                return Refusal("UploadsFull", f"{self.max_uploads} uploads are already being received; retry later",
                               self.retry_after)
            self.uploads += 1
            return None

    def end_upload(self) -> None:
        with self.lock:
            self.uploads -= 1

    # -- work ---------------------------------------------------------------------------------------
    def expected_wait(self) -> float | None:
        """Seconds until the requests in progress are answered, at the measured throughput; None
        before any measurement."""
        return None if self.gap is None else self.in_flight * self.gap

    def check(self) -> Refusal | None:
        """Whether a request arriving now would be admitted, taking no slot: the service refuses it
        before reading its body, which would cost as much as classifying it."""
        with self.lock:
            return self._refusal()

    def admit(self) -> Refusal | None:
        """Take a work slot, or say why not."""
        with self.lock:
            refusal = self._refusal()
            if refusal is None:
                self.in_flight += 1
            return refusal

    def _refusal(self) -> Refusal | None:
        if self.in_flight >= self.max_queue:
            self.refused["QueueFull"] += 1
            return Refusal("QueueFull", f"the queue is full ({self.max_queue} requests); retry later", self.retry_after)
        wait = self.expected_wait()
        if self.max_queue_seconds is not None and wait is not None and wait + self.gap > self.max_queue_seconds:
            self.refused["Overloaded"] += 1
            over = wait + self.gap - self.max_queue_seconds
            return Refusal("Overloaded",
                           f"the service is at capacity ({1 / self.gap:.1f} requests/s): {self.in_flight} requests "
                           f"ahead would take {wait:.2f} s, over the {self.max_queue_seconds:g} s budget; retry later",
                           max(self.retry_after, math.ceil(over)))
        return None

    def done(self) -> None:
        """Give back a work slot when the request is answered (whatever the answer)."""
        now = time.perf_counter()
        with self.lock:
            self.in_flight -= 1
            if self._last_answer is not None:
                sample = now - self._last_answer
                self.gap = sample if self.gap is None else self.gap + self.smoothing * (sample - self.gap)
                self.samples += 1
            # Only an answer that leaves work behind starts a gap: the next answer then measures how
            # fast the saturated service turns requests around.
            self._last_answer = now if self.in_flight > 0 else None

    @property
    def throughput(self) -> float | None:
        """Requests/s the service sustains when saturated, as measured so far."""
        return None if not self.gap else 1 / self.gap


__all__ = ["Admission", "Refusal"]
