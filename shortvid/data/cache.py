"""The frame cache: every video decoded once, its frames kept for training and evaluation.

Layout of a cache folder::

    cache.json        how the frames were read (a FrameSpec; an AudioSpec with sound) and stored (jpeg or raw)
    manifest.jsonl    one line per video: where its frames are and what the decoder saw, or why it failed
    shards/*.bin      the frames, concatenated; a manifest line points at offsets in one shard

A video's bytes in its shard are contiguous: its frames, then (``FrameSpec.motion`` > 0) the motion frames of
each frame in turn, encoded as the frames are, then (with an ``AudioSpec``) its sound's samples (float32, or
int16 PCM) followed by the runs of its mask. A cache without motion or sound is a version-1 cache, as made
before either existed.

Frames come from ``read_frames`` with the cache's ``FrameSpec`` — the call prediction makes — so training sees
the pixels serving will see (up to JPEG's loss when stored as jpeg, the default; ``raw`` keeps them exact).
Few large append-only shards instead of one file per frame keep 200k videos manageable; a
manifest line is written only after its frames are on disk, so a killed run loses nothing and a
rerun extracts only what is missing. See ``docs/frame-cache.md``.
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing
import os
import signal
import sys
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Literal, NamedTuple, TypeVar, get_args

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..decode import DEFAULT_LIMITS, AudioSpec, DecodeError, DecodeLimits, FrameSpec, Sound, read_frames
from ..errors import DatasetError, WorkerCrashed
from ..files import atomic_write

Format = Literal["jpeg", "raw"]
# How sound samples are stored: float32, exactly as read; int16, half the bytes (docs/frame-cache.md, "Sound")
SoundFormat = Literal["float32", "int16"]
SHARD_BYTES = 1 << 30
# Fresh interpreters for workers: forking a parent that runs torch or other threads can deadlock.
_SPAWN = multiprocessing.get_context("spawn")
CACHE_VERSION = 2  # 2: motion frames or sound stored; a cache without them is written as version 1
PCM_SCALE = 32768.0  # a stored sound sample is round(sample * PCM_SCALE) as int16, clipped to its range
Job = TypeVar("Job")  # run_isolated's jobs: each with a .name and a .path


@dataclass(frozen=True)
class CachedClip:
    """The frames of one video as stored in the cache, with its motion frames and sound where the cache
    holds them (and the read asked for them)."""

    name: str
    frames: np.ndarray  # [n, H, W, 3] uint8
    times: tuple[float, ...]
    keyframe: tuple[bool, ...]
    start: float  # the video's span, for sampling among the frames
    duration: float
    motion: np.ndarray | None = None  # [n, M, H, W, 3] uint8: each frame's motion frames (Clip.motion)
    motion_valid: tuple[int, ...] | None = None  # [n] how many of each frame's motion frames are real
    sound: Sound | None = None  # the Sound read at extraction: its samples exact (float32) or within 1/65536 (int16)


@dataclass
class ExtractSummary:
    """What one ``extract`` call did."""

    total: int = 0
    extracted: int = 0
    skipped: int = 0  # already in the cache
    failed: int = 0
    seconds: float = 0.0
    errors: Counter = field(default_factory=Counter)
    keyframe_counts: Counter = field(default_factory=Counter)
    decode_ms: list[float] = field(default_factory=list)
    sound: Counter = field(default_factory=Counter)  # the extracted videos' Sound.status, with an AudioSpec

    def to_dict(self) -> dict:
        ms = np.asarray(self.decode_ms) if self.decode_ms else np.zeros(1)
        return {
            "total": self.total,
            "extracted": self.extracted,
            "skipped": self.skipped,
            "failed": self.failed,
            "seconds": round(self.seconds, 2),
            "errors": dict(self.errors),
            "keyframes_per_video": {str(k): v for k, v in sorted(self.keyframe_counts.items())},
            "decode_ms_median": round(float(np.median(ms)), 2),
            "decode_ms_p95": round(float(np.percentile(ms, 95)), 2),
            **({"sound": dict(self.sound)} if self.sound else {}),
        }


def encode_image(image: np.ndarray, fmt: Format, quality: int) -> bytes:
    if fmt == "raw":
        return image.tobytes()
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def decode_image(data: bytes, fmt: Format, shape: tuple[int, int]) -> np.ndarray:
    if fmt == "raw":
        return np.frombuffer(data, dtype=np.uint8).reshape(shape[0], shape[1], 3)
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


class FrameCountError(DatasetError):
    """A dataset or a run asks for more frames a video (or motion frames a frame) than its frame cache holds."""


class MissingAudioError(DatasetError):
    """A dataset or a run asks for the sound of videos from a frame cache extracted without it."""


def encode_sound(sound: Sound, fmt: SoundFormat = "float32") -> bytes:
    """A ``Sound``'s samples (little-endian float32 as read, or int16 PCM: ``round(sample * PCM_SCALE)``,
    clipped), then its mask as int32 ``[start, end)`` pairs of its runs of real samples; empty where there
    is nothing to keep (no real sample and all zeros: the statuses "none" and "broken")."""
    if not sound.mask.any() and not sound.samples.any():
        return b""
    if fmt == "int16":
        samples = np.clip(np.rint(sound.samples * PCM_SCALE), -32768, 32767).astype("<i2")
    else:
        samples = sound.samples.astype("<f4")
    edges = np.flatnonzero(np.diff(np.concatenate(([0], sound.mask.view(np.int8), [0]))))
    return samples.tobytes() + edges.astype("<i4").tobytes()


def decode_sound(data: bytes, length: int, fmt: SoundFormat = "float32") -> tuple[np.ndarray, np.ndarray]:
    """``encode_sound``'s samples (float32 ``[length]``) and mask (bool ``[length]``); zeros and all False
    for empty ``data``."""
    samples, mask = np.zeros(length, dtype=np.float32), np.zeros(length, dtype=bool)
    if data:
        dtype = np.dtype("<i2" if fmt == "int16" else "<f4")
        samples[:] = np.frombuffer(data, dtype=dtype, count=length)
        if fmt == "int16":
            samples /= PCM_SCALE
        for start, end in np.frombuffer(data, dtype="<i4", offset=dtype.itemsize * length).reshape(-1, 2):
            mask[start:end] = True
    return samples, mask


@dataclass(frozen=True)
class ExtractJob:
    """One video to extract, with everything its worker needs: pickled whole to the worker process
    (``run_isolated``) or Ray actor (``shortvid.distributed``)."""

    name: str  # the video's name in the annotations (the manifest's key)
    path: str
    spec: FrameSpec
    fmt: Format
    quality: int  # JPEG quality
    timeout: float  # seconds for the decode
    limits: DecodeLimits = DEFAULT_LIMITS
    audio: AudioSpec | None = None  # also read and store the sound
    sound_format: SoundFormat = "float32"


def extract_one(job: ExtractJob) -> dict:
    """Decode one video and encode its frames: the manifest record of ``job``. Runs in a worker process
    (``run_isolated``, or a Ray worker with ``shortvid.distributed``)."""
    name, path, fmt, quality = job.name, job.path, job.fmt, job.quality
    # A hard limit behind the decoder's own: a call stuck inside FFmpeg gets SIGALRM, whose default
    # action ends this process, and `run_isolated` reports the file as having crashed its worker.
    signal.alarm(math.ceil(job.timeout * 2) + 5)
    try:
        clip = read_frames(path, job.spec, timeout=job.timeout, limits=job.limits, audio=job.audio)
    except DecodeError as error:
        return {"name": name, "path": path, "error": error.to_dict()}
    except Exception as error:  # noqa: BLE001 - a bug or an unexpected library error must not stop the run
        return {"name": name, "path": path, "error": {"type": type(error).__name__, "message": f"{path}: {error}"}}
    finally:
        signal.alarm(0)
    blobs = [encode_image(frame, fmt, quality) for frame in clip.frames]
    extra: dict = {}
    if clip.motion is not None:
        extra["motion_blobs"] = [encode_image(image, fmt, quality) for frames in clip.motion for image in frames]
        extra["motion_valid"] = list(clip.motion_valid)
    if clip.sound is not None:
        extra["sound_blob"] = encode_sound(clip.sound, job.sound_format)
        extra["sound"] = {key: value for key, value in clip.sound.to_dict().items()
                          if key not in ("source", "length", "sample_rate")}
    info = clip.info
    return {
        "name": name,
        "path": path,
        "blobs": blobs,
        "shape": list(clip.frames.shape[1:3]),
        "times": [round(t, 4) for t in clip.times],
        "keyframe": list(clip.keyframe),
        "keyframes": info.keyframes,
        "start": round(info.start, 4),
        "duration": round(info.duration, 4),
        "fps": None if info.fps is None else round(info.fps, 3),
        "width": info.width,
        "height": info.height,
        "rotation": info.rotation,
        "codec": info.codec,
        "decode_ms": round(clip.decode_ms, 2),
        **extra,
    }


class FrameCache:
    """Read access to a cache folder; safe to use from DataLoader worker processes. ``spec``: how its frames
    were read (``spec.motion``, also ``motion``: the motion frames a frame it holds); ``audio``: how its
    sound was read (None: it holds none)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        config_path = self.root / "cache.json"
        if not config_path.exists():
            raise DatasetError(str(self.root), "not a frame cache (no cache.json); create one with `shortvid extract`")
        config = json.loads(config_path.read_text())
        if config.get("version", 1) > CACHE_VERSION:
            raise DatasetError(str(self.root), f"cache version {config['version']} was made by a newer shortvid "
                                               f"(this one reads versions up to {CACHE_VERSION})")
        self.spec = FrameSpec.from_dict(config["frames"])
        self.audio: AudioSpec | None = AudioSpec.from_dict(config["audio"]) if config.get("audio") else None
        self.sound_format: SoundFormat = config.get("sound_format", "float32")
        self.format: Format = config["format"]
        self.entries, self.failures = _read_manifest(self.root / "manifest.jsonl")
        self._files: dict[str, int] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def motion(self) -> int:
        """Motion frames held a frame (0: none)."""
        return self.spec.motion

    def spec_for(self, k: int, motion: int = 0) -> FrameSpec:
        """The spec of ``k`` of this cache's frames a video with ``motion`` motion frames each: its own with
        ``k`` and ``motion``, so a model trained on them serves as the cache was decoded. A
        ``FrameCountError`` naming the cache and both counts when ``k`` or ``motion`` is more than the cache
        holds (sampling would repeat frames the model then takes for distinct ones)."""
        if k > self.spec.k:
            raise FrameCountError(str(self.root), f"holds {self.spec.k} frames a video (extracted with --k "
                                  f"{self.spec.k}); {k} were asked for: ask for at most {self.spec.k}, or extract "
                                  f"a cache with --k {k}")
        self._check_motion(motion)
        return replace(self.spec, k=k, motion=motion)

    def _check_motion(self, motion: int) -> None:
        if motion > self.motion:
            raise FrameCountError(str(self.root), f"holds {self.motion} motion frames a frame (extracted with "
                                  f"--motion {self.motion}); {motion} were asked for: extract a cache with "
                                  f"`shortvid extract --motion {motion}{' --audio' if self.audio else ''}`")

    def audio_for(self, audio: bool) -> AudioSpec | None:
        """The ``AudioSpec`` of this cache's sound when ``audio`` asks for it (None when not); a
        ``MissingAudioError`` naming the cache when it holds none."""
        if not audio:
            return None
        if self.audio is None:
            motion = f" --motion {self.motion}" if self.motion else ""
            raise MissingAudioError(str(self.root), f"holds no sound (extracted without --audio); the sound was "
                                    f"asked for: extract a cache with `shortvid extract{motion} --audio`")
        return self.audio

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def read(self, name: str, *, motion: bool = True, sound: bool = True) -> CachedClip:
        """The frames of video ``name`` (its name in the annotations), with its motion frames and its sound
        where the cache holds them, unless ``motion`` or ``sound`` is False (their reads are left out)."""
        entry = self._entry(name)
        frames = np.stack([self._image(entry, offset, length, name)
                           for offset, length in zip(entry.offsets, entry.lengths, strict=True)])
        extra: dict = {}
        if motion and entry.motion_lengths:
            extra["motion"], extra["motion_valid"] = self._motion(name, entry, range(len(entry.offsets)), self.motion)
        if sound and entry.sound_status is not None:
            extra["sound"] = self._sound(name, entry)
        return CachedClip(name, frames, entry.times, entry.keyframe, entry.start, entry.duration, **extra)

    def read_motion(self, name: str, picks: Iterable[int], count: int) -> tuple[np.ndarray, tuple[int, ...]]:
        """The first ``count`` motion frames of the frames ``picks`` of video ``name`` (indices into
        ``read(name).frames``): uint8 ``[len(picks), count, H, W, 3]``, and how many of each are real.
        Only those are decoded. ``FrameCountError`` when ``count`` is more than the cache holds."""
        self._check_motion(count)
        return self._motion(name, self._entry(name), picks, count)

    def read_sound(self, name: str) -> Sound:
        """The sound of video ``name``; ``MissingAudioError`` when the cache holds none."""
        self.audio_for(True)
        return self._sound(name, self._entry(name))

    def _entry(self, name: str) -> _Entry:
        try:
            return self.entries[name]
        except KeyError:
            cause = self.failures.get(name, {}).get("message", "not extracted")
            raise DatasetError(str(self.root), f"{name} is not in the cache: {cause}") from None

    def _bytes(self, entry: _Entry, offset: int, length: int, name: str) -> bytes:
        data = os.pread(self._fd(entry.shard), length, offset)
        if len(data) != length:
            raise DatasetError(str(self.root / "shards" / entry.shard),
                               f"shard is shorter than the manifest says ({name})")
        return data

    def _image(self, entry: _Entry, offset: int, length: int, name: str) -> np.ndarray:
        return decode_image(self._bytes(entry, offset, length, name), self.format, entry.shape)

    def _motion(self, name: str, entry: _Entry, picks: Iterable[int],
                count: int) -> tuple[np.ndarray, tuple[int, ...]]:
        """The first ``count`` motion frames of frames ``picks``: they follow the frames in the shard, the
        ``motion`` of frame 0, then those of frame 1, ..."""
        held, offsets = self.motion, entry.motion_offsets()
        picks = list(picks)
        images = [self._image(entry, offsets[i * held + j], entry.motion_lengths[i * held + j], name)
                  for i in picks for j in range(count)]
        height, width = entry.shape
        stacked = np.stack(images).reshape(len(picks), count, *images[0].shape) if images else \
            np.zeros((len(picks), count, height, width, 3), np.uint8)
        return stacked, tuple(min(entry.motion_valid[i], count) for i in picks)

    def _sound(self, name: str, entry: _Entry) -> Sound:
        spec = self.audio
        data = self._bytes(entry, entry.sound_offset(), entry.sound_length, name) if entry.sound_length else b""
        samples, mask = decode_sound(data, spec.length, self.sound_format)
        return Sound(samples, mask, spec.sample_rate, entry.sound_status, entry.sound_reason, name)

    def _fd(self, shard: str) -> int:
        if os.getpid() != self._pid:  # forked into a DataLoader worker: open our own files
            self._files, self._pid = {}, os.getpid()
        if shard not in self._files:
            self._files[shard] = os.open(self.root / "shards" / shard, os.O_RDONLY)
        return self._files[shard]

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files = {}

    def __del__(self) -> None:
        if getattr(self, "_pid", None) == os.getpid():
            self.close()


class _Entry(NamedTuple):
    """What reading one video's frames needs: a few hundred bytes, so 200k fit in every DataLoader worker.
    Its motion frames and sound follow its frames in the shard, so their lengths place them."""

    shard: str
    offsets: tuple[int, ...]
    lengths: tuple[int, ...]
    shape: tuple[int, int]
    times: tuple[float, ...]
    keyframe: tuple[bool, ...]
    start: float
    duration: float
    motion_lengths: tuple[int, ...] = ()  # [n * M], frame 0's motion frames first
    motion_valid: tuple[int, ...] = ()
    sound_length: int = 0  # bytes; 0: no samples kept (silence rebuilt)
    sound_status: str | None = None  # None: no sound stored
    sound_reason: str = ""

    def motion_offsets(self) -> list[int]:
        offset = self.offsets[-1] + self.lengths[-1]
        offsets = []
        for length in self.motion_lengths:
            offsets.append(offset)
            offset += length
        return offsets

    def sound_offset(self) -> int:
        return self.offsets[-1] + self.lengths[-1] + sum(self.motion_lengths)

    @classmethod
    def from_record(cls, record: dict) -> "_Entry":
        sound = record.get("sound")
        extra = {} if sound is None else {"sound_length": sound["bytes"], "sound_status": sys.intern(sound["status"]),
                                          "sound_reason": sys.intern(sound["reason"])}
        return cls(sys.intern(record["shard"]), tuple(record["offsets"]), tuple(record["lengths"]),
                   tuple(record["shape"]), tuple(record["times"]), tuple(record["keyframe"]),
                   record["start"], record["duration"], tuple(record.get("motion_lengths", ())),
                   tuple(record.get("motion_valid", ())), **extra)


def _read_manifest(path: Path) -> tuple[dict[str, _Entry], dict[str, dict]]:
    """Successful entries and failures by name; the last line for a name wins, a torn line is ignored.
    The manifest keeps more facts per video (fps, codec, decode_ms, ...) for reports."""
    entries: dict[str, _Entry] = {}
    failures: dict[str, dict] = {}
    if not path.exists():
        return entries, failures
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill mid-write
            name = record["name"]
            if "error" in record:
                failures[name] = record["error"]
                entries.pop(name, None)
            else:
                entries[name] = _Entry.from_record(record)
                failures.pop(name, None)
    return entries, failures


def extract(
    videos: Iterable[tuple[str, str | os.PathLike]],
    out: str | os.PathLike,
    spec: FrameSpec = FrameSpec(size=256),
    *,
    fmt: Format = "jpeg",
    quality: int = 95,
    workers: int | None = None,
    timeout: float = 30.0,
    retry_failed: bool = False,
    progress: bool = True,
    limits: DecodeLimits | None = None,
    run_jobs: Callable[[Callable[[ExtractJob], dict], list[ExtractJob]], Iterable[dict]] | None = None,
    audio: AudioSpec | None = None,
    sound_format: SoundFormat = "float32",
) -> ExtractSummary:
    """Decode each ``(name, path)`` once into the cache at ``out``, in parallel processes.

    Resumable: videos already in the manifest are skipped, failures too unless ``retry_failed``, but
    never a ``WorkerCrashed`` one: a crash is not a verdict on the video, so a rerun tries it again.
    A video that fails to decode is recorded with its error and the run goes on; so is one that
    crashes its worker process outright. ``limits``: the largest frames decoded (``DecodeLimits()``).
    ``run_jobs(extract_one, jobs)`` yields the jobs' records in any order (default: ``run_isolated`` in
    ``workers`` local processes; ``shortvid.distributed.extract_ray`` runs them on Ray); this process
    alone writes the cache, so its format and resume are the same whoever decoded.
    ``spec.motion``: also store each frame's motion frames; ``audio``: also read and store each video's sound
    (``AudioSpec``), its samples as ``sound_format`` ("float32": exact; "int16": half the bytes, within
    ``0.5 / PCM_SCALE``). Either makes a version-2 cache; without them the cache is version 1, as before.
    """
    root = Path(out)
    if sound_format not in get_args(SoundFormat):
        raise ValueError(f"sound_format must be one of {', '.join(get_args(SoundFormat))}, got {sound_format!r}")
    (root / "shards").mkdir(parents=True, exist_ok=True)
    config = {"version": CACHE_VERSION if spec.motion or audio else 1, "frames": spec.to_dict(), "format": fmt,
              "quality": quality}
    if audio is not None:
        config.update(audio=audio.to_dict(), sound_format=sound_format)
    config_path = root / "cache.json"
    if config_path.exists():
        existing = json.loads(config_path.read_text())
        had = AudioSpec.from_dict(existing["audio"]) if existing.get("audio") else None
        if FrameSpec.from_dict(existing["frames"]) != spec or existing["format"] != fmt or had != audio \
                or existing.get("sound_format") != config.get("sound_format"):
            sound = existing.get("audio") or config.get("audio")
            made, asked = (_sound_words(stored) if sound else "" for stored in (existing, config))
            raise DatasetError(str(root), f"cache was made with {existing['frames']} as {existing['format']}{made}; "
                               f"asked for {config['frames']} as {fmt}{asked}: use another folder")
    else:
        atomic_write(config_path, json.dumps(config, indent=2) + "\n")

    entries, failures = _read_manifest(root / "manifest.jsonl")
    summary = ExtractSummary()
    todo = []
    seen = set()
    for name, path in videos:
        if name in seen:
            continue
        seen.add(name)
        summary.total += 1
        if name in entries or (name in failures and not retry_failed
                               and failures[name].get("type") != WorkerCrashed.__name__):
            summary.skipped += 1
        else:
            todo.append(ExtractJob(name, str(path), spec, fmt, quality, timeout, limits or DEFAULT_LIMITS, audio,
                                   sound_format))

    started = time.perf_counter()
    with _ManifestWriter(root) as writer, \
            tqdm(total=len(todo), desc="extract", unit="video", disable=not progress) as bar:
        run_jobs = run_jobs or (lambda function, jobs: run_isolated(function, jobs, workers or os.cpu_count() or 1))
        for record in run_jobs(extract_one, todo):
            writer.add(record)
            if "error" in record:
                summary.failed += 1
                summary.errors[record["error"]["type"]] += 1
            else:
                summary.extracted += 1
                summary.keyframe_counts[record["keyframes"]] += 1
                summary.decode_ms.append(record["decode_ms"])
                if "sound" in record:
                    summary.sound[record["sound"]["status"]] += 1
            bar.update(1)
    summary.seconds = time.perf_counter() - started
    return summary


def _sound_words(config: dict) -> str:
    """A cache.json's sound as an error message says it: its AudioSpec and sample format, or none."""
    if not config.get("audio"):
        return " without sound"
    return f" with sound {config['audio']} as {config.get('sound_format', 'float32')}"


def run_isolated(function: Callable[[Job], dict], jobs: list[Job], workers: int) -> Iterable[dict]:
    """``function(job)`` for every job in child processes, results in completion order.

    A child that dies outright (a decoder crash on a hostile file, or a hang ended by an alarm) breaks the
    pool: the jobs it held are retried one per fresh process afterwards, so only the guilty job is reported, as a
    record with an ``error`` of type ``WorkerCrashed``. ``job.name`` names the job, ``job.path`` its file
    (an ``ExtractJob``, or any picklable object with those two).
    """
    queue = list(reversed(jobs))
    suspects: list[Job] = []
    while queue:
        with ProcessPoolExecutor(max_workers=workers, mp_context=_SPAWN) as pool:
            running: dict[Future, Job] = {}
            try:
                while queue or running:
                    while queue and len(running) < workers * 4:
                        job = queue.pop()
                        running[pool.submit(function, job)] = job
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        result = future.result()
                        del running[future]
                        yield result
            except BrokenProcessPool:
                suspects.extend(running.values())
    for job in suspects:
        with ProcessPoolExecutor(max_workers=1, mp_context=_SPAWN) as pool:
            try:
                yield pool.submit(function, job).result()
            except BrokenProcessPool:
                error = WorkerCrashed(job.path, "the decoding process crashed or hung on this file")
                yield {"name": job.name, "path": job.path, "error": error.to_dict()}


class _ManifestWriter:
    """Appends frames to a new shard of this run and a line per video to the manifest."""

    def __init__(self, root: Path):
        self.root = root
        runs = {p.name.split("-")[1] for p in (root / "shards").glob("run-*-*.bin")}
        self.run = len(runs)
        self.part = 0
        self.shard = None
        self.manifest = None

    def __enter__(self) -> "_ManifestWriter":
        path = self.root / "manifest.jsonl"
        self.manifest = open(path, "a", encoding="utf-8")
        if path.stat().st_size:
            with open(path, "rb") as handle:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    self.manifest.write("\n")  # end a line torn by an earlier kill
        return self

    def _shard_name(self) -> str:
        return f"run-{self.run:04d}-{self.part:04d}.bin"

    def add(self, record: dict) -> None:
        """Write ``record``'s frames (``blobs``), motion frames (``motion_blobs``) and sound (``sound_blob``)
        one after the other into the shard, then its manifest line, which places them."""
        blobs = record.pop("blobs", None)
        motion_blobs = record.pop("motion_blobs", [])
        sound_blob = record.pop("sound_blob", None)
        if blobs is not None:
            if self.shard is None or self.shard.tell() > SHARD_BYTES:
                if self.shard is not None:
                    self.shard.close()
                    self.part += 1
                self.shard = open(self.root / "shards" / self._shard_name(), "ab")
            offset = self.shard.tell()
            offsets, lengths = [], []
            for blob in blobs:
                offsets.append(offset)
                lengths.append(len(blob))
                offset += len(blob)
            self.shard.write(b"".join([*blobs, *motion_blobs, sound_blob or b""]))
            self.shard.flush()
            record = {"name": record["name"], "shard": self._shard_name(), "offsets": offsets, "lengths": lengths, **{
                key: value for key, value in record.items() if key != "name"}}
            if motion_blobs:
                record["motion_lengths"] = [len(blob) for blob in motion_blobs]
            if sound_blob is not None:
                record["sound"] = {**record["sound"], "bytes": len(sound_blob)}
        self.manifest.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.manifest.flush()

    def __exit__(self, *exc) -> None:
        if self.shard is not None:
            self.shard.close()
        self.manifest.close()
