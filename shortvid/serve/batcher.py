"""The service's model thread: dynamic batching of the clips that concurrent requests decoded.

One thread owns the model. It collects clips for up to ``max_wait_ms`` after the first (or until
``max_batch``), scores them with ``shortvid.infer.batch.score_clips`` (one call; one by one if that
fails, so a clip that breaks the model fails only its own request) and resolves each clip's future.
Each clip names the classifier it is for: while a new model goes live, clips of requests admitted
before the swap are scored by the old one, and a batch never mixes the two.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from ..decode import Clip
from ..infer.batch import ClipFailure, score_clips
from ..infer.classifier import Classifier
from .metrics import Metrics

log = logging.getLogger("shortvid.serve")


@dataclass
class _Job:
    clip: Clip
    classifier: Classifier
    future: Future
    queued: float  # perf_counter when the clip was handed over


@dataclass(frozen=True)
class BatchResult:
    """What a clip's future resolves to: its row of scores and the model call it was in."""

    scores: np.ndarray  # this clip's row
    batch_size: int
    batch_wait_ms: float
    timings: dict[str, float]  # the batch's preprocess and model ms


class Batcher:
    """One thread owning the model: collects clips for up to ``max_wait_ms`` after the first (or until
    ``max_batch``, or a clip for another classifier), scores them with ``score_clips`` and resolves
    each clip's future."""

    def __init__(self, max_batch: int, max_wait_ms: float, metrics: Metrics):
        self.max_batch, self.max_wait = max(1, max_batch), max_wait_ms / 1000
        self.metrics = metrics
        self.jobs: queue.Queue[_Job | None] = queue.Queue()
        self._next: _Job | None = None  # a clip for another classifier, first of the next batch
        self.thread = threading.Thread(target=self._run, name="shortvid-model", daemon=True)

    def start(self) -> None:
        """Batch on a thread of its own (for an app embedded in any server)."""
        self.thread.start()

    def run(self) -> None:
        """Batch on the calling thread until ``stop()``: ``serve()`` gives the model the main thread,
        where PyTorch CPU calls ran faster than from a secondary thread (docs/benchmark-history.md,
        "Service under load (issue 5)")."""
        self._run()

    def stop(self) -> None:
        self.jobs.put(None)
        if self.thread.is_alive():
            self.thread.join(timeout=30)

    def submit(self, clip: Clip, classifier: Classifier) -> Future:
        """Queue a decoded clip for ``classifier``; the future resolves to its ``BatchResult`` (or the
        model's error)."""
        future: Future = Future()
        with self.metrics.lock:
            self.metrics.model_queue += 1
        self.jobs.put(_Job(clip, classifier, future, time.perf_counter()))
        return future

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first, self._next = self._next or self.jobs.get(), None
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
                if job.classifier is not first.classifier:
                    self._next = job
                    break
                batch.append(job)
            with self.metrics.lock:
                self.metrics.model_queue -= len(batch)
            # Requests that timed out meanwhile are dropped here.
            batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
            try:
                if batch:
                    self._classify(batch)
            except Exception as error:  # the model thread must outlive any one batch
                log.exception("the model thread failed on a batch")
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(error)
        while True:  # fail whatever is left at shutdown
            try:
                job, self._next = self._next or self.jobs.get_nowait(), None
            except queue.Empty:
                break
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(RuntimeError("the server is shutting down"))

    def _classify(self, batch: list[_Job]) -> None:
        for result in score_clips(batch[0].classifier, [job.clip for job in batch]):
            if isinstance(result, ClipFailure):
                batch[result.position].future.set_exception(result.error)
                continue
            self.metrics.observe(self.metrics.batch_size, len(result.positions))
            self.metrics.observe(self.metrics.model, result.seconds)
            for row, position in enumerate(result.positions):
                job = batch[position]
                wait = (result.started - job.queued) * 1000
                self.metrics.observe(self.metrics.batch_wait, wait / 1000)
                size, timings = len(result.positions), dict(result.timings)
                job.future.set_result(BatchResult(result.scores[row], size, wait, timings))


__all__ = ["Batcher", "BatchResult"]
