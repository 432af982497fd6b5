"""Admission control for the service: shed load at the door instead of queueing it into timeouts.

Three gates, each answered at once with 503 and ``Retry-After``, before the body is read:

- **upload slots** (``max_uploads``): bodies being received are counted apart from the work queue,
  so slow senders hold upload slots, never the slots of requests whose bodies have arrived;
- **upload bytes** (``max_upload_bytes``): the bytes of every body the service holds, from its first
  byte until its request is answered, stay within a budget. A body that declares its length reserves
  it before a byte is read; a chunked one reserves as it arrives and is refused once past the budget;
- **work**: a request is admitted only while fewer than ``max_queue`` are in progress *and* those
  ahead of it are expected to be answered within ``max_queue_seconds``. Admitted requests therefore
  wait at most about the budget plus their own batch.

The expected wait is ``in_flight / capacity``, and capacity is measured, not configured: requests
answered per second of *busy* time (time with at least one request in progress), both summed over a
window that decays with wall time (``Capacity``). Busy time is what the service spent serving, so
batched answers that leave in bursts do not inflate it, a slow request or a stall lowers it only for
as long as its share of the window lasts, and with no recent evidence the estimate is dropped
(count bound only) and measured again. A service with nothing in flight admits every request: its
expected wait is zero whatever the estimate says, so no estimate can lock it out.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

REASONS = ("UploadsFull", "QueueFull", "Overloaded")


@dataclass(frozen=True)
class Refusal:
    """Why a request was not admitted, and when to try again."""

    kind: str  # one of REASONS
    message: str
    retry_after: int  # seconds


class Capacity:
    """Requests answered per second of busy time, over a window that decays with wall time.

    Both sums decay by ``exp(-age / window)``; busy time is integrated with the same weight, so one
    interval, however long (a stall of the whole process), counts for at most ``window`` busy seconds
    and fades like any other. Not thread-safe (``Admission`` locks)."""

    def __init__(self, window: float = 10.0, min_answers: float = 0.5):
        if window <= 0:
            raise ValueError(f"the capacity window must be positive, not {window}")
        self.window, self.min_answers = window, min_answers
        self.answered = 0.0  # decayed count of answers
        self.busy = 0.0  # decayed seconds with a request in progress
        self._at: float | None = None  # when the sums were last brought up to date

    def advance(self, now: float, busy: bool) -> None:
        """Bring the sums to ``now``; ``busy``: whether a request was in progress since the last call."""
        if self._at is not None and now > self._at:
            kept = math.exp(-(now - self._at) / self.window)
            self.answered *= kept
            self.busy = self.busy * kept + (self.window * (1 - kept) if busy else 0.0)
        self._at = now if self._at is None else max(self._at, now)

    def answer(self) -> None:
        """One request answered (after ``advance`` to the time it was)."""
        self.answered += 1

    def per_second(self) -> float | None:
        """Requests answered per busy second, or None without enough recent evidence."""
        if self.answered < self.min_answers or self.busy <= 0:
            return None
        return self.answered / self.busy


class Admission:
    """Upload slots and bytes, work slots, and the capacity estimate that bounds the work queue.

    Thread-safe. ``clock`` (seconds, monotonic) is a parameter so that the estimate can be checked
    against a known timeline; the service uses ``time.monotonic``."""

    def __init__(self, max_queue: int, max_queue_seconds: float | None, max_uploads: int,
                 max_upload_bytes: int | None = None, retry_after: int = 1, window: float = 10.0,
                 shedding_window: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.max_queue, self.max_queue_seconds = max_queue, max_queue_seconds
        self.max_uploads, self.max_upload_bytes, self.retry_after = max_uploads, max_upload_bytes, retry_after
        self.shedding_window, self.clock = shedding_window, clock
        self.lock = threading.Lock()
        self.in_flight = 0  # admitted and not yet answered
        self.uploads = 0  # bodies being received
        self.held_bytes = 0  # bytes reserved by bodies received or being received, until their answers
        self.capacity = Capacity(window)
        self.refused = dict.fromkeys(REASONS, 0)
        self.last_refusal: tuple[float, Refusal] | None = None  # when, and the refusal

    # -- uploads ------------------------------------------------------------------------------------
    def start_upload(self, nbytes: int = 0) -> Refusal | None:
        """Take an upload slot and reserve ``nbytes`` (the declared body length), or say why not."""
        with self.lock:
            if self.uploads >= self.max_uploads:
                return self._refuse(Refusal("UploadsFull", f"{self.max_uploads} uploads are already being "
                                                           "received; retry later", self.retry_after))
            refusal = self._reserve(nbytes)
            if refusal is None:
                self.uploads += 1
            return refusal

    def reserve(self, nbytes: int) -> Refusal | None:
        """Reserve ``nbytes`` more for a body that arrives without a declared length."""
        with self.lock:
            return self._reserve(nbytes)

    def _reserve(self, nbytes: int) -> Refusal | None:
        budget = self.max_upload_bytes
        if budget is not None and nbytes > 0 and self.held_bytes + nbytes > budget:
            return self._refuse(Refusal(
                "UploadsFull", f"the bodies held now ({_mib(self.held_bytes)}) and this one ({_mib(nbytes)}) "
                               f"would pass the upload budget of {_mib(budget)}; retry later", self.retry_after))
        self.held_bytes += nbytes
        return None

    def end_upload(self) -> None:
        """Give back the upload slot once the body is in (its bytes stay reserved until ``release``)."""
        with self.lock:
            self.uploads -= 1

    def release(self, nbytes: int) -> None:
        """Give back the bytes of a body whose request is answered."""
        with self.lock:
            self.held_bytes -= nbytes

    # -- work ---------------------------------------------------------------------------------------
    def throughput(self) -> float | None:
        """Requests/s the service answers per second of busy time, as measured recently; None without
        recent evidence."""
        with self.lock:
            self._advance()
            return self.capacity.per_second()

    def expected_wait(self) -> float:
        """Seconds until the requests in progress are answered at the measured capacity (0 when idle
        or before any measurement)."""
        with self.lock:
            self._advance()
            return self._wait()

    def _wait(self) -> float:
        rate = self.capacity.per_second()
        return 0.0 if rate is None or self.in_flight == 0 else self.in_flight / rate

    def check(self) -> Refusal | None:
        """Whether a request arriving now would be admitted, taking no slot: the service refuses it
        before reading its body, which would cost as much as classifying it."""
        with self.lock:
            self._advance()
            return self._refusal()

    def admit(self) -> Refusal | None:
        """Take a work slot, or say why not."""
        with self.lock:
            self._advance()
            refusal = self._refusal()
            if refusal is None:
                self.in_flight += 1
            return refusal

    def done(self) -> None:
        """Give back a work slot when the request is answered (whatever the answer)."""
        with self.lock:
            self._advance()
            self.in_flight -= 1
            self.capacity.answer()

    def _advance(self) -> None:
        self.capacity.advance(self.clock(), self.in_flight > 0)

    def _refusal(self) -> Refusal | None:
        if self.in_flight >= self.max_queue:
            return self._refuse(Refusal("QueueFull", f"the queue is full ({self.max_queue} requests); retry later",
                                        self.retry_after))
        wait = self._wait()
        if self.max_queue_seconds is not None and wait > self.max_queue_seconds:
            rate = self.capacity.per_second()
            return self._refuse(Refusal(
                "Overloaded", f"the service is at capacity ({rate:.1f} requests/s): {self.in_flight} requests ahead "
                              f"would take {wait:.2f} s, over the {self.max_queue_seconds:g} s budget; retry later",
                max(self.retry_after, math.ceil(wait - self.max_queue_seconds))))
        return None

    def _refuse(self, refusal: Refusal) -> Refusal:
        self.refused[refusal.kind] += 1
        self.last_refusal = (self.clock(), refusal)
        return refusal

    # -- what the service says about itself -----------------------------------------------------------
    def shedding(self) -> dict | None:
        """The latest refusal if it was within ``shedding_window`` seconds: its reason, message and age,
        and the state that caused it; None when the service has not refused recently."""
        with self.lock:
            self._advance()
            recent = self._recent_refusal()
            if recent is None:
                return None
            age, refusal = recent
            rate = self.capacity.per_second()
            return {"reason": refusal.kind, "message": refusal.message, "seconds_ago": round(age, 3),
                    "refused": dict(self.refused), "in_flight": self.in_flight, "uploads": self.uploads,
                    "held_bytes": self.held_bytes, "capacity_per_second": None if rate is None else round(rate, 3),
                    "expected_wait_seconds": round(self._wait(), 4)}

    def snapshot(self) -> dict:
        """The gauges /metrics shows, read at one instant."""
        with self.lock:
            self._advance()
            recent = self._recent_refusal()
            return {"in_flight": self.in_flight, "uploads": self.uploads, "held_bytes": self.held_bytes,
                    "max_upload_bytes": self.max_upload_bytes, "refused": dict(self.refused),
                    "throughput": self.capacity.per_second() or 0.0, "expected_wait": self._wait(),
                    "shedding": recent[1].kind if recent else None}

    def _recent_refusal(self) -> tuple[float, Refusal] | None:
        """Seconds since the latest refusal, and the refusal, if within ``shedding_window``."""
        if self.last_refusal is None:
            return None
        at, refusal = self.last_refusal
        age = self.clock() - at
        return (age, refusal) if age <= self.shedding_window else None


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB"


__all__ = ["Admission", "Capacity", "Refusal", "REASONS"]
