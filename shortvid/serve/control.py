"""Model control: which model a service serves, and putting a new one live without a restart.

A platform retrains weekly. ``ModelSlot.reload`` loads the new run (the same run folder, retrained,
or another one) with the options the current model was loaded with, warms it (a real
classification through the service's decode and batching path, so first-call costs are paid before
any request meets it), then swaps it in with one assignment. A request takes the model that is live
when it is admitted and finishes on it; the old model is freed once the last such request is
answered. A run that fails to load or to warm up leaves the old model serving, and the failure is
kept for ``GET /v1/model`` and the log. One reload runs at a time.

``shortvid serve`` reloads on SIGHUP and on ``POST /admin/reload`` (off unless an admin token is set;
``shortvid.serve.http``), in the manner of Triton's and TorchServe's model management APIs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import ShortvidError
from ..infer.classifier import Classifier
from ..run import RunDir

log = logging.getLogger("shortvid.serve")


class ReloadError(ShortvidError):
    """A new model could not be put live; the one that was serving still is."""


class ReloadInProgress(ReloadError):
    """Another reload is running."""


@dataclass(frozen=True)
class ServedModel:
    """A classifier as a service serves it, and what identifies it in answers and ``/v1/model``."""

    classifier: Classifier
    fingerprint: str | None  # RunDir.fingerprint of its run's files, read as it goes live
    loaded_at: float = field(default_factory=time.time)

    @classmethod
    def of(cls, classifier: Classifier) -> "ServedModel":
        """``classifier``, fingerprinted from its run (hashed here, for the service alone: other users
        of ``Classifier.load`` do not pay for reading the weights twice)."""
        run = classifier.run
        checkpoint = classifier.load_options.get("checkpoint", "best")
        return cls(classifier, RunDir(run).fingerprint(checkpoint) if run is not None else None)

    @property
    def id(self) -> str:
        """The first 12 hex digits of the run's fingerprint: the same for two runs that give the same
        answers; "unversioned" for a classifier not loaded from a run."""
        return self.fingerprint[:12] if self.fingerprint else "unversioned"

    def describe(self) -> dict:
        classifier = self.classifier
        labels = classifier.labels
        return {"id": self.id, "run": classifier.run, "fingerprint": self.fingerprint,
                "checkpoint": classifier.load_options.get("checkpoint"),
                "backend": classifier.backend.name, "precision": classifier.backend.precision,
                "device": str(classifier.device), "frames": classifier.preprocess.frames.to_dict(),
                "input_size": classifier.preprocess.input_size, "scores": classifier.preprocess.scores,
                "classes": [{"id": i, "name": labels.name(i), "group": labels.group(i)} for i in range(len(labels))],
                "loaded_at": self.loaded_at}


class ModelSlot:
    """The model live now, and reloads of it. ``warm(model)`` classifies a video with a candidate
    model through the service's path and raises if it cannot."""

    def __init__(self, classifier: Classifier, warm: Callable[[ServedModel], None]):
        self.current = ServedModel.of(classifier)
        self.warm = warm
        self.reloading = threading.Lock()
        self.counts = {"ok": 0, "failed": 0}
        self.last_reload: dict | None = None

    def reload(self, run: str | None = None) -> ServedModel:
        """Load ``run`` (default: the live model's run, as it is now on disk), warm it, make it live.
        Raises ``ReloadInProgress``, or the load's or warm-up's error with the old model still live."""
        if not self.reloading.acquire(blocking=False):
            raise ReloadInProgress(run or str(self.current.classifier.run), "another reload is in progress")
        started = time.perf_counter()
        previous = self.current
        try:
            candidate = ServedModel.of(previous.classifier.reloaded(run))
            self.warm(candidate)
        except Exception as error:
            self.counts["failed"] += 1
            self.last_reload = {"ok": False, "run": run or previous.classifier.run, "at": time.time(),
                                "error": {"type": type(error).__name__, "message": str(error)},
                                "serving": previous.id}
            log.error("reload of %s failed, still serving %s: %s: %s", run or previous.classifier.run, previous.id,
                      type(error).__name__, error)
            raise
        else:
            self.current = candidate
            seconds = time.perf_counter() - started
            self.counts["ok"] += 1
            self.last_reload = {"ok": True, "run": candidate.classifier.run, "at": time.time(),
                                "seconds": round(seconds, 3), "previous": previous.id, "serving": candidate.id}
            log.info("now serving %s (%s), was %s; loaded and warmed in %.1f s", candidate.id,
                     candidate.classifier.run, previous.id, seconds)
            return candidate
        finally:
            self.reloading.release()

    def reload_logged(self) -> None:
        """``reload()`` for a signal handler's thread: the outcome is logged and kept, never raised."""
        try:
            self.reload()
        except ReloadInProgress:
            log.warning("reload asked while another is in progress: ignored")
        except Exception:  # noqa: BLE001 - logged and kept in last_reload by reload()
            pass

    def describe(self) -> dict:
        return {**self.current.describe(), "reloads": dict(self.counts), "last_reload": self.last_reload}


__all__ = ["ModelSlot", "ReloadError", "ReloadInProgress", "ServedModel"]
