"""The service's metrics in the Prometheus text format (version 0.0.4), written by hand.

Counters and histograms are kept here under one lock; the admission gauges (queue depth, uploads,
throughput, refusals) live in ``Admission`` and are read from it when the text is rendered.
"""

from __future__ import annotations

import threading

from .admission import Admission

SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64)  # and the service's max_batch


class Histogram:
    """Cumulative bucket counts, sum and count of observed values; not locked (``Metrics`` locks)."""

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


class Metrics:
    """Request counts by status, latency and stage histograms, batch sizes; the admission gauges
    (queue depth, uploads, throughput, refusals) are read from ``Admission`` when rendered."""

    def __init__(self, max_batch: int, model: dict[str, str] | None = None):
        self.lock = threading.Lock()
        self.model_info = dict(model or {})  # what runs the model: backend, precision, device
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency = Histogram("shortvid_request_duration_seconds",
                                 "Time to answer a classify request (all statuses).", SECONDS_BUCKETS)
        self.queue_wait = Histogram("shortvid_queue_seconds", "Time a request waited for a decode worker.",
                                    SECONDS_BUCKETS)
        self.decode = Histogram("shortvid_decode_seconds", "Decode time per video.", SECONDS_BUCKETS)
        self.batch_wait = Histogram("shortvid_batch_wait_seconds",
                                    "Time a decoded clip waited for its model call.", SECONDS_BUCKETS)
        self.model = Histogram("shortvid_model_seconds", "Time of one batched model call (preprocess included).",
                               SECONDS_BUCKETS)
        sizes = sorted({*BATCH_SIZE_BUCKETS, max_batch})
        self.batch_size = Histogram("shortvid_batch_size", "Clips per model call.", tuple(float(s) for s in sizes))
        self.model_queue = 0  # decoded clips waiting for the model thread

    def count(self, method: str, path: str, status: int, seconds: float | None) -> None:
        with self.lock:
            key = (method, path, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            if seconds is not None:
                self.latency.observe(seconds)

    def observe(self, histogram: Histogram, value: float) -> None:
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
            if self.model_info:
                labels = ",".join(f'{key}="{value}"' for key, value in self.model_info.items())
                lines += ["# HELP shortvid_model_info What runs the model (the backend auto resolved to).",
                          "# TYPE shortvid_model_info gauge", f"shortvid_model_info{{{labels}}} 1"]
        return "\n".join(lines) + "\n"


__all__ = ["Metrics", "Histogram", "SECONDS_BUCKETS", "BATCH_SIZE_BUCKETS"]
