"""Batch jobs on Ray: ``predict_ray`` classifies many videos, ``extract_ray`` fills a frame cache.

Ray Data runs the job on a pool of actors (one per ``actors``, each with ``cpus_per_actor`` CPUs and
``gpus_per_actor`` GPUs). A prediction actor loads the run once and classifies each block of paths
with ``classify_many`` (decode threads ahead of batched model calls): every worker opens its own
files, and only the small result rows travel back. An extraction actor decodes and encodes frames;
the driver alone appends them to the cache (``shortvid.data.cache.extract``), so the cache is the one
the local engine makes.

What a batch engine must get right here:

- **Every input path gets exactly one row**: a prediction, or a typed error naming it. A video that
  raises is its own error row (nothing escapes the actor, so Ray drops no block).
- **A video that kills its worker** (a crash in a native library, an abort, running out of memory)
  is isolated: Ray restarts the actor and retries the block (at most ``max_retries`` times); the
  retried block runs one video at a time, each recorded in a small ledger actor before it starts,
  so the video that was running when the worker died is known and reported as ``WorkerCrashed``
  instead of being tried again. Isolating one such video takes two retries (``MIN_RETRIES``): the
  first runs the block one video at a time and dies on it, the second reports it and runs the rest.
  A block that still fails after its retries is dropped by Ray, and the driver reports its paths as
  ``WorkerCrashed``, its healthy videos with the guilty ones.
- **A crash is not a verdict on the video**: a rerun into the same output classifies ``WorkerCrashed``
  rows again (every error row with ``retry_failed``), and the new row supersedes the old
  (``shortvid.infer.store``).
- **Actors are sized from the cluster's resources**; a request that cannot fit is refused before
  anything starts (an actor pool waiting for CPUs that never come would hang the job).
- Without ``address`` a private local Ray starts with this machine's CPUs; with one, the job joins
  that cluster and passes no resource counts of its own. A Ray already started in this process (by
  the caller) is used as it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import pickle
import socket
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from .data.cache import ExtractJob, ExtractSummary, extract
from .decode import AudioSpec, DecodeLimits, FrameSpec
from .errors import ShortvidError, WorkerCrashed
from .extras import require
from .infer.batch import classify_many
from .infer.store import PredictionStore, prediction_row, settled

MIN_RETRIES = 2  # one retry runs a crashed block one video at a time, the next reports the video that killed it


class DistributedError(ShortvidError):
    """A distributed job cannot start or run as asked (cluster too small, Ray missing...)."""


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide a job runs (the ``--engine ray`` options)."""

    address: str | None = None  # None: a private local Ray with this machine's CPUs; "auto" or HOST:PORT: join it
    actors: int | None = None  # None: as many as the cluster's resources hold
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    block_size: int = 16  # videos per Ray Data block (one classify_many call each)
    max_retries: int = 4  # retries of a block whose worker died: at least MIN_RETRIES, finite
    object_store_mb: int | None = None  # local Ray only: its object store (default: Ray's)

    def __post_init__(self):
        # Ray reads -1 as "retry forever", and with fewer than MIN_RETRIES a crashing video drops its
        # whole block: refuse both before anything starts.
        if not isinstance(self.max_retries, int) or self.max_retries < MIN_RETRIES:
            raise DistributedError("--max-retries", f"must be a whole number of at least {MIN_RETRIES}, got "
                                   f"{self.max_retries!r}: isolating a video that kills its worker takes one retry "
                                   f"that runs the block one video at a time and one that reports the video")


@dataclass
class JobSummary:
    """What a batch job did."""

    total: int = 0
    done: int = 0  # rows written by this run
    skipped: int = 0  # already in the output (resumed)
    retried: int = 0  # of those done, paths whose earlier row was a crash (or, with retry_failed, any error)
    failed: Counter = field(default_factory=Counter)  # error rows by type
    missing: int = 0  # paths with no row at the end (should never happen)
    seconds: float = 0.0
    actors: int = 0

    @property
    def videos_per_s(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def format(self) -> str:
        failed = ", ".join(f"{kind} {n}" for kind, n in sorted(self.failed.items())) or "none"
        return (f"{self.total} videos: {self.done} done ({sum(self.failed.values())} failed: {failed}), "
                f"{self.skipped} skipped as already done, {self.retried} retried after a crash or failure, "
                f"{self.missing} missing; {self.seconds:.1f} s, "
                f"{self.videos_per_s:.1f} videos/s on {self.actors} actors")

    def to_dict(self) -> dict:
        return {"total": self.total, "done": self.done, "skipped": self.skipped, "retried": self.retried,
                "failed": dict(self.failed), "missing": self.missing, "seconds": round(self.seconds, 2),
                "videos_per_s": round(self.videos_per_s, 2), "actors": self.actors}


@contextlib.contextmanager
def ray_session(options: RayOptions) -> Iterator[None]:
    """Ray for this job: the caller's if already started, else the cluster at ``options.address``,
    else a private local one (shut down afterwards)."""
    require("ray", "the Ray engine")
    import ray

    if ray.is_initialized():
        yield
        return
    settings = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if options.address:
        _token_auth_if_available()
        ray.init(address=options.address, **settings)
    else:
        memory = {"object_store_memory": options.object_store_mb * 2**20} if options.object_store_mb else {}
        ray.init(num_cpus=os.cpu_count() or 1, **memory, **settings)
    try:
        yield
    finally:
        ray.shutdown()


def _token_auth_if_available() -> None:
    """Ray 2.5x clusters authenticate clients with a token (``~/.ray/auth_token``, or ``RAY_AUTH_TOKEN``),
    but a client joining one by address uses it only when ``RAY_AUTH_MODE=token``: set that when a
    token is at hand and the mode was left to us."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    token_file = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or os.path.isfile(token_file):
        os.environ["RAY_AUTH_MODE"] = "token"


def actor_count(options: RayOptions) -> int:
    """How many actors the job runs: ``options.actors``, or as many as the cluster holds; a
    ``DistributedError`` saying what the cluster has when the request cannot fit."""
    import ray

    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if options.cpus_per_actor <= 0 or options.gpus_per_actor < 0:
        raise DistributedError("--cpus-per-actor", "an actor needs some CPU and no negative GPU count")
    fit = math.floor(cpus / options.cpus_per_actor + 1e-9)
    if options.gpus_per_actor:
        fit = min(fit, math.floor(gpus / options.gpus_per_actor + 1e-9))
    wanted = options.actors if options.actors is not None else fit
    if wanted < 1 or wanted > fit:
        raise DistributedError(
            "ray cluster", f"{wanted} actor(s) of {options.cpus_per_actor:g} CPU and {options.gpus_per_actor:g} GPU "
            f"do not fit: the cluster has {cpus:g} CPUs and {gpus:g} GPUs (at most {fit} such actors)")
    return wanted


class _Ledger:
    """Which blocks were started, and which items of a retried block were running: a Ray actor shared
    by the job's workers (it takes no CPU)."""

    def __init__(self):
        self.attempts: dict[str, int] = {}
        self.running: dict[str, set[str]] = {}

    def begin(self, block: str) -> int:
        attempt = self.attempts.get(block, 0)
        self.attempts[block] = attempt + 1
        return attempt

    def start(self, block: str, item: str) -> None:
        self.running.setdefault(block, set()).add(item)

    def finish(self, block: str, item: str) -> None:
        self.running.get(block, set()).discard(item)

    def crashed(self, block: str) -> set[str]:
        """Items started by an earlier attempt of ``block`` and never finished: what killed it."""
        return set(self.running.get(block, ()))


class _Isolated:
    """The Ray Data actor: runs a processor on each block, the fast way first and, when a retry shows
    that a worker died on the block, one item at a time with the ledger (module docstring)."""

    def __init__(self, make_processor: Callable[[], "Processor"], ledger: str):
        import ray

        self.processor = make_processor()
        self.ledger = ray.get_actor(ledger)
        self.node = f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"

    def __call__(self, batch: dict) -> dict:
        import ray

        items = [str(item) for item in batch["item"]]
        block = hashlib.sha1("\n".join(items).encode()).hexdigest()
        if ray.get(self.ledger.begin.remote(block)) == 0:
            rows = self.processor.many(items, self.node)
        else:
            crashed = ray.get(self.ledger.crashed.remote(block))
            rows = []
            for item in items:
                if item in crashed:
                    rows.append(self.processor.crashed(item, "its worker process died on it"))
                    continue
                ray.get(self.ledger.start.remote(block, item))
                rows.extend(self.processor.many([item], self.node))
                ray.get(self.ledger.finish.remote(block, item))
        return {"row": [pickle.dumps(row) for row in rows]}


class Processor:
    """What a job does to its items (strings), as rows; subclassed per job."""

    def many(self, items: list[str], node: str) -> list[dict]:
        raise NotImplementedError

    def crashed(self, item: str, why: str) -> dict:
        raise NotImplementedError


class PredictProcessor(Processor):
    """Classifies paths with a run, loaded once per actor."""

    def __init__(self, run: str, device: str = "auto", backend: str = "auto", precision: str = "fp32",
                 adaptive: bool = False, limits: dict | None = None, batch_size: int = 8, workers: int | None = None):
        from .infer.classifier import Classifier

        self.classifier = Classifier.load(run, device=device, backend=backend, precision=precision, adaptive=adaptive,
                                          limits=DecodeLimits(**limits) if limits else None)
        self.batch_size, self.workers = batch_size, workers

    def many(self, items: list[str], node: str) -> list[dict]:
        outcomes = classify_many(self.classifier, items, batch_size=self.batch_size, workers=self.workers)
        return [prediction_row(outcome.to_dict(), node) for outcome in outcomes]

    def crashed(self, item: str, why: str) -> dict:
        return crashed_prediction(item, why)


def crashed_prediction(path: str, why: str) -> dict:
    """The row of a video whose worker died on it."""
    return prediction_row({"path": path, "error": WorkerCrashed(path, why).to_dict()})


class ExtractProcessor(Processor):
    """Decodes and encodes one video per item (``shortvid.data.cache.extract_one``'s job, pickled)."""

    def __init__(self, function: Callable[[ExtractJob], dict]):
        self.function = function

    def many(self, items: list[str], node: str) -> list[dict]:
        return [self.function(_job(item)) for item in items]

    def crashed(self, item: str, why: str) -> dict:
        job = _job(item)
        return {"name": job.name, "path": job.path, "error": WorkerCrashed(job.path, why).to_dict()}


def _job(item: str) -> ExtractJob:
    return pickle.loads(bytes.fromhex(item))


def run_isolated_on_ray(items: Sequence[str], make_processor: Callable[[], Processor], options: RayOptions,
                        actors: int) -> Iterator[dict]:
    """The processor's rows for ``items`` (in any order), on ``actors`` Ray actors with crash isolation.
    Items whose block was dropped after its retries get no row here: the caller reports them."""
    import ray
    import ray.data

    if not items:
        return
    ledger_name = f"shortvid-ledger-{uuid.uuid4().hex}"
    ledger = ray.remote(num_cpus=0)(_Ledger).options(name=ledger_name).remote()
    context = ray.data.DataContext.get_current()
    saved = context.max_errored_blocks, context.enable_progress_bars
    context.max_errored_blocks, context.enable_progress_bars = -1, False  # a dropped block is reported below
    data_log = logging.getLogger("ray.data")
    level = data_log.level
    data_log.setLevel(logging.WARNING)  # not a line per dataset execution on the user's terminal
    try:
        with warnings.catch_warnings():
            # Ray 2.60 has no named parameter for an actor's task retries; its extra keyword arguments
            # (`ray_remote_args`) are deprecated in favour of ones it does not offer yet.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            dataset = ray.data.from_items([{"item": item} for item in items]).map_batches(
                _Isolated, fn_constructor_kwargs={"make_processor": make_processor, "ledger": ledger_name},
                batch_size=options.block_size, compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=options.cpus_per_actor,
                **({"num_gpus": options.gpus_per_actor} if options.gpus_per_actor else {}),
                max_restarts=-1, max_task_retries=options.max_retries)
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for row in batch["row"]:
                yield pickle.loads(row)
    finally:
        context.max_errored_blocks, context.enable_progress_bars = saved
        data_log.setLevel(level)
        ray.kill(ledger)


def _resume(store: PredictionStore, sources: Iterable[str],
            retry_failed: bool) -> tuple[list[str], list[str], JobSummary]:
    """A job's paths (each once), those it must classify (no row yet, a crash row, or any error row with
    ``retry_failed``), and its summary so far."""
    paths = list(dict.fromkeys(str(source) for source in sources))
    latest = store.latest()
    todo = [path for path in paths if path not in latest or not settled(latest[path], retry_failed)]
    summary = JobSummary(total=len(paths), skipped=len(paths) - len(todo),
                         retried=sum(path in latest for path in todo))
    return paths, todo, summary


def _missing(store: PredictionStore, paths: list[str]) -> int:
    """How many of ``paths`` have no row in ``store`` (a crash row counts: it is the path's row)."""
    return len(set(paths) - store.latest().keys())


def predict_local(run: str, sources: Iterable[str], out: str | os.PathLike, *, fmt: str = "parquet",
                  device: str = "auto", backend: str = "auto", precision: str = "fp32", adaptive: bool = False,
                  limits: DecodeLimits | None = None, batch_size: int = 8, workers: int | None = None,
                  retry_failed: bool = False, progress: Callable[[JobSummary], None] | None = None) -> JobSummary:
    """``predict_ray``'s job on this machine (``classify_many``: decode threads ahead of batched model
    calls), with the same output folder, rows and resume."""
    started = time.perf_counter()
    store = PredictionStore(out, fmt)
    paths, todo, summary = _resume(store, sources, retry_failed)
    summary.actors = 1
    if todo:
        from .infer.classifier import Classifier

        classifier = Classifier.load(str(run), device=device, backend=backend, precision=precision, adaptive=adaptive,
                                     limits=limits)
        node, rows = socket.gethostname(), []
        for outcome in classify_many(classifier, todo, batch_size=batch_size, workers=workers):
            rows.append(prediction_row(outcome.to_dict(), node))
            _count(summary, rows[-1])
            if len(rows) >= 256:
                store.write(rows)
                rows = []
                if progress:
                    progress(summary)
        store.write(rows)
    summary.missing = _missing(store, paths)
    summary.seconds = time.perf_counter() - started
    return summary


def predict_ray(run: str, sources: Iterable[str], out: str | os.PathLike, *, options: RayOptions = RayOptions(),
                fmt: str = "parquet", device: str = "auto", backend: str = "auto", precision: str = "fp32",
                adaptive: bool = False, limits: DecodeLimits | None = None, batch_size: int = 8,
                workers: int | None = None, retry_failed: bool = False,
                progress: Callable[[JobSummary], None] | None = None) -> JobSummary:
    """Classify every path or URI of ``sources`` with ``run`` on Ray; one row each in ``out``
    (``shortvid.infer.store``). Paths already in ``out`` are skipped (resume), except crash rows and,
    with ``retry_failed``, every error row: those are classified again."""
    started = time.perf_counter()
    store = PredictionStore(out, fmt)
    paths, todo, summary = _resume(store, sources, retry_failed)
    if not todo:
        summary.seconds = time.perf_counter() - started
        return summary
    make = _Factory(PredictProcessor, run=str(run), device=device, backend=backend, precision=precision,
                    adaptive=adaptive, limits=limits.to_dict() if limits else None, batch_size=batch_size,
                    workers=workers)
    with ray_session(options):
        summary.actors = actor_count(options)
        written: set[str] = set()
        pending: list[dict] = []
        for row in run_isolated_on_ray(todo, make, options, summary.actors):
            if row["path"] in written:
                continue  # a retried block may repeat rows another attempt had returned
            written.add(row["path"])
            pending.append(row)
            _count(summary, row)
            if len(pending) >= 256:
                store.write(pending)
                pending = []
                if progress:
                    progress(summary)
        for path in todo:
            if path not in written:  # its block was dropped after its retries
                row = crashed_prediction(path, f"its worker died {options.max_retries + 1} times on its block")
                pending.append(row)
                _count(summary, row)
        store.write(pending)
    summary.missing = _missing(store, paths)
    summary.seconds = time.perf_counter() - started
    return summary


def extract_ray(videos: Iterable[tuple[str, str]], out: str | os.PathLike, spec: FrameSpec = FrameSpec(size=256), *,
                options: RayOptions = RayOptions(), fmt: str = "jpeg", quality: int = 95, timeout: float = 30.0,
                retry_failed: bool = False, limits: DecodeLimits | None = None,
                progress: bool = True, audio: AudioSpec | None = None, sound_format: str = "float32") -> ExtractSummary:
    """``shortvid.data.cache.extract`` with the decoding on Ray: the same cache, written by this process (each
    ``ExtractJob`` travels pickled whole, its ``audio`` included)."""
    with ray_session(options):
        actors = actor_count(options)

        def run_jobs(function: Callable[[ExtractJob], dict], jobs: list[ExtractJob]) -> Iterator[dict]:
            items = [pickle.dumps(job).hex() for job in jobs]
            seen: set[str] = set()
            for record in run_isolated_on_ray(items, _Factory(ExtractProcessor, function=function), options, actors):
                if record["name"] not in seen:
                    seen.add(record["name"])
                    yield record
            for job in jobs:
                if job.name not in seen:
                    why = f"its worker died {options.max_retries + 1} times on its block"
                    yield {"name": job.name, "path": job.path, "error": WorkerCrashed(job.path, why).to_dict()}

        return extract(videos, out, spec, fmt=fmt, quality=quality, timeout=timeout, retry_failed=retry_failed,
                       progress=progress, limits=limits, run_jobs=run_jobs, audio=audio,
                       sound_format=sound_format)


class _Factory:
    """Builds a processor inside each actor (the run is loaded there, not pickled from the driver)."""

    def __init__(self, kind: type, **arguments):
        self.kind, self.arguments = kind, arguments

    def __call__(self) -> Processor:
        return self.kind(**self.arguments)


def _count(summary: JobSummary, row: dict) -> None:
    summary.done += 1
    if row.get("error"):
        summary.failed[row["error"]["type"]] += 1


__all__ = ["MIN_RETRIES", "DistributedError", "JobSummary", "RayOptions", "actor_count", "extract_ray", "predict_local",
           "predict_ray", "ray_session", "run_isolated_on_ray"]
