"""The service's metrics in the Prometheus text format (version 0.0.4), written by hand.

Counters and histograms are kept here under one lock; the admission gauges (queue depth, uploads,
upload bytes, capacity, refusals, shedding) live in ``Admission`` and the model's identity and
reloads in ``ModelSlot``, both read when the text is rendered.
"""

from __future__ import annotations

import threading

from .admission import REASONS, Admission
from .control import ModelSlot

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
        for bound, count in zip(self.buckets, self.counts, strict=True):
            lines.append(f'{self.name}_bucket{{le="{_number(bound)}"}} {count}')
        lines += [f'{self.name}_bucket{{le="+Inf"}} {self.count}', f"{self.name}_sum {_number(self.sum)}",
                  f"{self.name}_count {self.count}"]
        return lines


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Metrics:
    """Request counts by status, latency and stage histograms, batch sizes; the admission gauges
    (queue depth, uploads, throughput, refusals) are read from ``Admission`` when rendered."""

    def __init__(self, max_batch: int):
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = {}
        self.answers: dict[tuple[str, int], int] = {}  # classify answers by model id and status
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

    def count(self, method: str, path: str, status: int, seconds: float | None, model: str | None = None) -> None:
        """One answered request; ``model``: the id of the model that answered it, once admitted."""
        with self.lock:
            key = (method, path, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            if model is not None:
                self.answers[(model, status)] = self.answers.get((model, status), 0) + 1
            if seconds is not None:
                self.latency.observe(seconds)

    def observe(self, histogram: Histogram, value: float) -> None:
        with self.lock:
            histogram.observe(value)

    def render(self, ready: bool, admission: Admission, models: ModelSlot) -> str:
        gauges = admission.snapshot()
        model = models.current
        info = {"model": model.id, "run": model.classifier.run or "", "backend": model.classifier.backend.name,
                "precision": model.classifier.backend.precision, "device": str(model.classifier.device)}
        with self.lock:
            lines = ["# HELP shortvid_http_requests_total HTTP requests answered, by method, path and status.",
                     "# TYPE shortvid_http_requests_total counter"]
            for (method, path, status), n in sorted(self.requests.items()):
                lines.append(f'shortvid_http_requests_total{{method="{method}",path="{path}",status="{status}"}} {n}')
            lines += ["# HELP shortvid_model_answers_total Classify requests answered after admission, by the "
                      "model that answered them and status.", "# TYPE shortvid_model_answers_total counter"]
            lines += [f'shortvid_model_answers_total{{model="{model_id}",status="{status}"}} {n}'
                      for (model_id, status), n in sorted(self.answers.items())]
            for histogram in (self.latency, self.queue_wait, self.decode, self.batch_wait, self.model,
                              self.batch_size):
                lines += histogram.render()
            model_queue = self.model_queue
        budget = gauges["max_upload_bytes"]
        lines += [
            "# HELP shortvid_queue_depth Classify requests admitted and not yet answered.",
            "# TYPE shortvid_queue_depth gauge", f"shortvid_queue_depth {gauges['in_flight']}",
            "# HELP shortvid_uploads_in_progress Request bodies being received.",
            "# TYPE shortvid_uploads_in_progress gauge", f"shortvid_uploads_in_progress {gauges['uploads']}",
            "# HELP shortvid_upload_bytes Bytes of request bodies held (being received, or received and not yet "
            "answered).", "# TYPE shortvid_upload_bytes gauge", f"shortvid_upload_bytes {gauges['held_bytes']}",
            "# HELP shortvid_upload_budget_bytes The most bytes of request bodies held at once.",
            "# TYPE shortvid_upload_budget_bytes gauge",
            f"shortvid_upload_budget_bytes {budget if budget is not None else '+Inf'}",
            "# HELP shortvid_model_queue_depth Decoded clips waiting for the model.",
            "# TYPE shortvid_model_queue_depth gauge", f"shortvid_model_queue_depth {model_queue}",
            "# HELP shortvid_throughput_requests_per_second Requests answered per second of busy time, over a "
            "decaying window (0: no recent measurement).", "# TYPE shortvid_throughput_requests_per_second gauge",
            f"shortvid_throughput_requests_per_second {_number(round(gauges['throughput'], 3))}",
            "# HELP shortvid_expected_wait_seconds Time the requests in progress are expected to take.",
            "# TYPE shortvid_expected_wait_seconds gauge",
            f"shortvid_expected_wait_seconds {_number(round(gauges['expected_wait'], 4))}",
            "# HELP shortvid_rejected_total Requests refused with 503, by reason.",
            "# TYPE shortvid_rejected_total counter"]
        lines += [f'shortvid_rejected_total{{reason="{reason}"}} {n}'
                  for reason, n in sorted(gauges["refused"].items())]
        lines += ["# HELP shortvid_shedding Whether the service refused a request with 503 recently, by reason.",
                  "# TYPE shortvid_shedding gauge"]
        lines += [f'shortvid_shedding{{reason="{reason}"}} {int(gauges["shedding"] == reason)}' for reason in REASONS]
        lines += ["# HELP shortvid_ready Whether the model is loaded and warmed up.",
                  "# TYPE shortvid_ready gauge", f"shortvid_ready {int(ready)}",
                  "# HELP shortvid_model_info The model being served (its id is the start of its content hash) "
                  "and what runs it.", "# TYPE shortvid_model_info gauge",
                  "shortvid_model_info{" + ",".join(f'{key}="{_label(value)}"' for key, value in info.items()) + "} 1",
                  "# HELP shortvid_model_reloads_total Reloads of the model, by result.",
                  "# TYPE shortvid_model_reloads_total counter"]
        lines += [f'shortvid_model_reloads_total{{result="{result}"}} {n}'
                  for result, n in sorted(models.counts.items())]
        return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    """A Prometheus label value, escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


__all__ = ["Metrics", "Histogram", "SECONDS_BUCKETS", "BATCH_SIZE_BUCKETS"]
