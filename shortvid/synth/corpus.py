"""Write a labelled synthetic corpus in the AI Challenger 2018 short-video layout.

Layout under `out`:
  videos/<name>.mp4   H.264 + AAC, faststart, forced IDR keyframes at every scene cut
  train.txt, val.txt  `<name>.mp4,<label>[,<label>...]`, integer ids, labels unsorted, no header
  labels.csv          `id,name,group`, plus `kind` (appearance, motion or sound) for the `av` catalogue
  corpus.json         the spec used (checked on reruns) and the class list
  manifest.jsonl      per video: size, fps, frame rate kind, style, cut and keyframe times

Everything is decided by `spec.seed`: labels, names and splits from one corpus-level Generator,
each video's pictures from a Generator seeded with (seed, index). Videos are written under a
temporary name and renamed when complete, so a rerun keeps finished videos and makes the rest.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from ..errors import DatasetError
from ..files import PARTIAL, atomic_path, atomic_write
from .encode import EncodeSpec, encode_video
from .plans import VideoScript, plan_video, select_classes
from .render import render_frames
from .shapes import SceneClass
from .sound import video_sound

CORPUS_FORMAT = "shortvid-synth-corpus"
CORPUS_FORMAT_VERSION = 2  # bump whenever the same spec would draw or encode different videos (2: x264 cpu-independent)
_VFR_CLOCK = 90000  # VFR frame times are kept on the container's 1/90000 s grid
_LATER_FIELDS = {"catalogue": "standard", "distractors": True, "max_shots": 4, "scenecut": True}  # added since v2


@dataclass(frozen=True)
class CorpusSpec:
    """What to generate. Sizes are (width, height) of the upright picture; shares are fractions of the
    videos (rounded to whole videos, so small corpora still get at least the rounded count).

    Modern videos: portrait `sizes`, H.264 High, a keyframe every `gop` frames plus one at every cut.
    Legacy videos (`legacy_share`): square `legacy_size`, Baseline, a keyframe every second.
    `long_tail` is the Zipf exponent of the class frequencies (0: balanced; the competition's
    17,420-to-98 spread over 63 classes is about 1.25), `min_videos_per_class` its floor.
    `render_short_side` caps the internal drawing resolution (frames are upscaled to the output size).
    `difficulty` in [0, 1]: smaller objects, lower contrast, background clutter (see `plan_video`).
    `catalogue` is where the classes come from (`plans.CATALOGUES`): `standard` (`shapes.GROUPS`) or
    `pretrain` (`compounds.PRETRAIN_GROUPS`, the pretraining stand-in for ImageNet).
    `distractors`: title cards and black lead-ins in some videos (frames that show no class).
    `max_shots`: content shots per video at most (1-4), hence cuts and keyframes.
    `scenecut`: x264 may add keyframes where it detects a change (fast motion, say) besides the forced cuts.
    The `av` catalogue's motion and sound classes move by their rule (`motion.MOTIONS`) and get the audio
    of their rule (`sound.SOUNDS`, rendered per video from (seed, index)); other videos keep the tone.
    """

    name: str = "custom"
    num_classes: int = 12
    num_groups: int = 4
    catalogue: str = "standard"
    num_videos: int = 240
    val_fraction: float = 0.2
    long_tail: float = 0.0
    min_videos_per_class: int = 4
    multilabel_share: float = 0.12
    sizes: tuple[tuple[int, int], ...] = ((180, 320), (216, 384))
    legacy_size: tuple[int, int] = (192, 192)
    legacy_share: float = 0.1
    vfr_share: float = 0.1
    rotated_share: float = 0.03
    audio_first_share: float = 0.05
    clip_name_share: float = 0.05
    duration: tuple[float, float] = (4.0, 8.0)
    fps: float = 30.0
    gop: int = 120
    render_short_side: int = 180
    difficulty: float = 0.0
    distractors: bool = True
    max_shots: int = 4
    scenecut: bool = True
    crf: int = 23
    preset: str = "veryfast"
    audio: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", tuple(tuple(int(x) for x in size) for size in self.sizes))
        object.__setattr__(self, "legacy_size", tuple(int(x) for x in self.legacy_size))
        object.__setattr__(self, "duration", tuple(float(x) for x in self.duration))
        select_classes(self.num_classes, self.num_groups, self.catalogue)
        if self.num_videos < self.num_classes * self.min_videos_per_class or self.min_videos_per_class < 1:
            raise ValueError(f"num_videos ({self.num_videos}) must be at least num_classes x min_videos_per_class "
                             f"({self.num_classes} x {self.min_videos_per_class}), and the minimum at least 1")
        for field in ("val_fraction", "difficulty", "multilabel_share", "legacy_share", "vfr_share", "rotated_share",
                      "audio_first_share", "clip_name_share"):
            if not 0.0 <= getattr(self, field) <= 1.0:
                raise ValueError(f"{field} must be within [0, 1], got {getattr(self, field)}")
        if self.val_fraction >= 1.0:
            raise ValueError("val_fraction must leave videos for training")
        if not self.sizes:
            raise ValueError("sizes must name at least one (width, height)")
        for width, height in self.sizes + (self.legacy_size,):
            if width < 16 or height < 16 or width % 2 or height % 2:
                raise ValueError(f"sizes must be even and at least 16 pixels, got {width}x{height}")
        if not 0.0 < self.duration[0] <= self.duration[1]:
            raise ValueError(f"duration must be (shortest, longest) seconds, got {self.duration}")
        if not 1 <= self.max_shots <= 4:
            raise ValueError(f"max_shots must be 1..4, got {self.max_shots}")
        if not self.fps > 0 or self.gop < 1 or self.long_tail < 0 or self.render_short_side < 16:
            raise ValueError("fps must be positive, gop at least 1, long_tail non-negative, render_short_side >= 16")

    def to_dict(self) -> dict:
        """JSON-ready form (tuples become lists). Fields added since version 2 are left out at their
        defaults, so corpora made before them keep their record (`corpus.json`) byte for byte and resume."""
        values = json.loads(json.dumps(dataclasses.asdict(self)))
        for field, default in _LATER_FIELDS.items():
            if values[field] == default:
                del values[field]
        return values

    @classmethod
    def from_dict(cls, values: dict) -> CorpusSpec:
        """Inverse of `to_dict`; unknown keys are an error."""
        unknown = set(values) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown CorpusSpec fields: {sorted(unknown)}")
        return cls(**values)

    @property
    def classes(self) -> tuple[SceneClass, ...]:
        """The drawable classes; a class's id is its position."""
        return select_classes(self.num_classes, self.num_groups, self.catalogue)


PRESETS: dict[str, CorpusSpec] = {
    # Tests: 6 classes (3 groups of 2 confusable ones), 24 videos of 1-3 s at 96x160 and 15 fps,
    # keyframe every 20 frames plus cuts; a few legacy, VFR, rotated and audio-first videos.
    # About 2 s on 2 cores.
    "tiny": CorpusSpec(
        name="tiny", num_classes=6, num_groups=3, num_videos=24, val_fraction=0.25, min_videos_per_class=2,
        multilabel_share=0.25, sizes=((96, 160),), legacy_size=(96, 96), legacy_share=0.15, vfr_share=0.15,
        rotated_share=0.05, audio_first_share=0.05, clip_name_share=0.1, duration=(1.0, 3.0), fps=15.0,
        gop=20, render_short_side=96,
    ),
    # Demo: 12 classes in 4 groups, 240 videos of 4-8 s at 30 fps, 180x320 and 216x384 portrait
    # (a third to two fifths of the competition's 540x960, drawn at full size: upscaling costs more
    # than it saves here) and 192x192 legacy; GOP 120 as in the competition, so mostly 2-4
    # keyframes per video; mild long tail, no added difficulty (the demo trains from scratch on about
    # 190 videos: mean Jaccard 0.59 at difficulty 0, 0.45 at 0.3). About 1.5 minutes on 2 idle cores.
    "small": CorpusSpec(name="small", num_classes=12, num_groups=4, num_videos=240, long_tail=0.5,
                        min_videos_per_class=8, render_short_side=216, difficulty=0.0),
    # Benchmarks: 24 classes in 4 groups, 2000 videos, long-tailed (Zipf 1.0, at least 30 videos a
    # class), 4-10 s at 30 fps with GOP 120 like the competition, but half its resolution (270x480,
    # 360x640, 240x240 legacy) drawn at 180 pixels and upscaled: full resolution would take hours
    # on 2 cores. Difficulty 0.5: a ResNet-18 trained from scratch on one clean frame of ~150
    # videos a class scored 89% at difficulty 0, 87% at 0.7 and 80% at 1, errors mostly within
    # groups; 0 would leave little room to show what a method adds. 3000 videos of 5-15 s took
    # about 4 s a video on one core (a third of it PIL's upscale), well over an hour and a half on
    # 2 cores; 2000 of 4-10 s leave the ablation's training most of its hour.
    "bench": CorpusSpec(
        name="bench", num_classes=24, num_groups=4, num_videos=2000, val_fraction=0.2, long_tail=1.0,
        min_videos_per_class=30, multilabel_share=0.1, sizes=((270, 480), (360, 640)), legacy_size=(240, 240),
        duration=(4.0, 10.0), difficulty=0.5,
    ),
    # Pretraining (a stand-in for ImageNet): 384 classes of the `pretrain` catalogue
    # (`compounds.py`), none of them a bench class, 10 videos each, single-label and balanced.
    "pretrain": CorpusSpec(
        name="pretrain", num_classes=384, num_groups=12, catalogue="pretrain", num_videos=3840, val_fraction=0.1,
        min_videos_per_class=10, multilabel_share=0.0, sizes=((112, 192), (128, 224)), legacy_size=(128, 128),
        legacy_share=0.05, vfr_share=0.05, rotated_share=0.02, audio_first_share=0.0, clip_name_share=0.0,
        duration=(1.5, 3.0), fps=10.0, gop=15, render_short_side=128, difficulty=0.3, distractors=False, audio=False,
    ),
    # Audio-visual: 28 classes of the `av` catalogue (`shapes.AV_GROUPS`): 12 appearance classes (stars,
    # rings), 8 motion classes sharing one look and 8 sound classes sharing another. 30 fps, GOP 120
    # over 2-4 s, at most 3 content shots, no title cards, legacy videos or x264 scene detection (fast
    # motion set it off): 1-3 keyframes a video, so that keyframes cannot tell a motion or sound class
    # from its siblings. 1120 videos (40 a class), about 3 minutes on 2 cores.
    "av": CorpusSpec(
        name="av", num_classes=28, num_groups=4, catalogue="av", num_videos=1120, val_fraction=0.2,
        min_videos_per_class=40, multilabel_share=0.1, sizes=((180, 320),), legacy_share=0.0,
        duration=(2.0, 4.0), fps=30.0, gop=120, render_short_side=180, distractors=False, max_shots=3,
        scenecut=False,
    ),
    # Tests: the `av` classes, 2 videos each, at 96x160 and 15 fps over 1.5-2.5 s (GOP 60).
    "av-tiny": CorpusSpec(
        name="av-tiny", num_classes=28, num_groups=4, catalogue="av", num_videos=56, val_fraction=0.25,
        min_videos_per_class=2, multilabel_share=0.1, sizes=((96, 160),), legacy_size=(96, 96), legacy_share=0.0,
        duration=(1.5, 2.5), fps=15.0, gop=60, render_short_side=96, distractors=False, max_shots=3,
        scenecut=False,
    ),
}


def preset(name: str, **overrides) -> CorpusSpec:
    """A named preset (`tiny`, `small`, `bench`, `pretrain`, `av`, `av-tiny`) with fields replaced by `overrides`."""
    if name not in PRESETS:
        raise ValueError(f"unknown corpus preset {name!r}; choose one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


@dataclass(frozen=True)
class VideoPlan:
    """One video's corpus-level choices: identity, labels (dominant first), split and encoding style."""

    index: int
    name: str
    split: str
    labels: tuple[int, ...]
    listed_labels: tuple[int, ...]  # the order written to the annotation file
    width: int
    height: int
    duration: float
    legacy: bool
    vfr: bool
    rotated: bool
    audio_first: bool

    @property
    def file_name(self) -> str:
        return f"{self.name}.mp4"


@dataclass(frozen=True)
class VideoRecord:
    """What was written for one video (or found already written)."""

    plan: VideoPlan
    frames: int
    duration: float
    cut_times: tuple[float, ...]
    keyframe_times: tuple[float, ...]
    reused: bool

    def to_dict(self) -> dict:
        plan = self.plan
        return {
            "name": plan.file_name, "split": plan.split, "labels": list(plan.labels),
            "width": plan.width, "height": plan.height, "legacy": plan.legacy, "vfr": plan.vfr,
            "rotation": 90 if plan.rotated else 0, "audio_first": plan.audio_first, "frames": self.frames,
            "duration": round(self.duration, 6), "cut_times": [round(t, 6) for t in self.cut_times],
            "keyframe_times": [round(t, 6) for t in self.keyframe_times],
        }


@dataclass(frozen=True)
class CorpusSummary:
    """Counts describing a generated corpus, and how long the run took."""

    out: Path
    videos: int
    split_counts: dict[str, int]
    class_counts: dict[str, dict[str, int]]  # class name -> split -> videos carrying that label
    multilabel_share: float
    keyframe_histogram: dict[int, int]  # keyframes per video -> videos
    generated: int
    reused: int
    seconds: float

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["out"] = str(self.out)
        return values

    def format(self) -> str:
        """A few human-readable lines for logs and the CLI."""
        per_class = {name: sum(counts.values()) for name, counts in self.class_counts.items()}
        classes = ", ".join(f"{name} {count}" for name, count in per_class.items())
        if len(per_class) > 30:  # hundreds of names (pretrain) say less than their range
            ordered = sorted(per_class.values())
            classes = f"{ordered[0]}-{ordered[-1]} (median {ordered[len(ordered) // 2]}) over {len(ordered)} classes"
        keyframes = ", ".join(f"{count}: {videos}" for count, videos in sorted(self.keyframe_histogram.items()))
        return "\n".join([
            f"{self.videos} videos in {self.out} ({self.generated} generated, {self.reused} kept) "
            f"in {self.seconds:.1f} s",
            "splits: " + ", ".join(f"{split} {count}" for split, count in self.split_counts.items()),
            f"multi-label: {self.multilabel_share:.1%}",
            f"videos per class: {classes}",
            f"keyframes per video (count: videos): {keyframes}",
        ])


def _exact_count(share: float, total: int) -> int:
    return int(math.floor(share * total + 0.5))


def _class_counts(rng: np.random.Generator, spec: CorpusSpec) -> np.ndarray:
    """Videos per dominant class: Zipf-like over a random class order, floored at the minimum."""
    ranks = rng.permutation(spec.num_classes) + 1
    weights = ranks.astype(float) ** -spec.long_tail
    ideal = weights / weights.sum() * spec.num_videos
    counts = np.maximum(np.floor(ideal).astype(int), spec.min_videos_per_class)
    while counts.sum() < spec.num_videos:
        counts[np.argmax(ideal - counts)] += 1
    while counts.sum() > spec.num_videos:
        counts[np.argmax(np.where(counts > spec.min_videos_per_class, counts - ideal, -np.inf))] -= 1
    return counts


def _extra_labels(rng: np.random.Generator, primary: int, how_many: int, classes: Sequence[SceneClass],
                  weights: np.ndarray) -> list[int]:
    """Further labels for a multi-label video: half the time from the same group (cat with dog)."""
    chosen = [primary]
    for _ in range(how_many):
        same_group = [c for c in range(len(classes)) if classes[c].group == classes[primary].group and c not in chosen]
        pool = same_group if same_group and rng.random() < 0.5 else [c for c in range(len(classes)) if c not in chosen]
        pool_weights = weights[pool] / weights[pool].sum()
        chosen.append(int(rng.choice(pool, p=pool_weights)))
    return chosen[1:]


def _unique_ids(rng: np.random.Generator, count: int) -> list[int]:
    ids: dict[int, None] = {}
    while len(ids) < count:
        ids.setdefault(int(rng.integers(10**8, 10**10)), None)
    return list(ids)


def _flagged(rng: np.random.Generator, share: float, total: int, candidates: Sequence[int] | None = None) -> set[int]:
    """Exactly round(share * total) indices, drawn from `candidates` (default: all)."""
    pool = list(range(total)) if candidates is None else list(candidates)
    count = min(_exact_count(share, total), len(pool))
    return {pool[i] for i in rng.choice(len(pool), size=count, replace=False)} if count else set()


def plan_corpus(spec: CorpusSpec) -> list[VideoPlan]:
    """Decide every video's name, labels, split and style from `spec.seed` alone (no drawing)."""
    rng = np.random.default_rng(spec.seed)
    classes = spec.classes
    total = spec.num_videos
    counts = _class_counts(rng, spec)
    weights = counts / counts.sum()
    primaries = rng.permutation(np.repeat(np.arange(spec.num_classes), counts))
    multi = sorted(_flagged(rng, spec.multilabel_share, total))
    triple = set(rng.choice(multi, size=_exact_count(0.2, len(multi)), replace=False).tolist()) if multi else set()
    labels = [[int(p)] for p in primaries]
    for index in multi:
        labels[index] += _extra_labels(rng, labels[index][0], 2 if index in triple else 1, classes, weights)
    val: set[int] = set()
    for class_id in range(spec.num_classes):
        members = [i for i in range(total) if labels[i][0] == class_id]
        take = _exact_count(spec.val_fraction, len(members))
        if spec.val_fraction > 0 and len(members) >= 2:
            take = min(max(take, 1), len(members) - 1)
        val.update(members[i] for i in rng.permutation(len(members))[:take])
    legacy = _flagged(rng, spec.legacy_share, total)
    vfr = _flagged(rng, spec.vfr_share, total)
    rotated = _flagged(rng, spec.rotated_share, total, [i for i in range(total) if i not in legacy])
    audio_first = _flagged(rng, spec.audio_first_share, total)
    clipped = _flagged(rng, spec.clip_name_share, total)
    ids = _unique_ids(rng, total)
    plans = []
    for index in range(total):
        width, height = spec.legacy_size if index in legacy else spec.sizes[int(rng.integers(len(spec.sizes)))]
        duration = round(float(rng.uniform(*spec.duration)), 2)
        name = str(ids[index])
        if index in clipped:
            start = int(rng.integers(0, 60))
            name = f"{name}_{start}_{start + math.ceil(duration)}"
        listed = tuple(labels[index][i] for i in rng.permutation(len(labels[index])))
        plans.append(VideoPlan(index, name, "val" if index in val else "train", tuple(labels[index]), listed,
                               width, height, duration, index in legacy, index in vfr, index in rotated,
                               index in audio_first))
    return plans


def frame_times(rng: np.random.Generator, duration: float, fps: float, variable: bool) -> np.ndarray:
    """Frame times in seconds: a constant rate, or (variable) jittered intervals with occasional drops
    like phone recordings, on a 1/90000 s grid and strictly increasing."""
    count = max(2, round(duration * fps))
    if not variable:
        return np.arange(count) / fps
    intervals = rng.uniform(0.6, 1.4, size=2 * count + 2) / fps
    dropped = rng.random(intervals.size) < 0.05
    intervals[dropped] *= rng.integers(2, 4, size=int(dropped.sum()))
    ticks = np.round(np.concatenate([[0.0], np.cumsum(intervals)]) * _VFR_CLOCK)
    keep = max(int(np.count_nonzero(ticks < duration * _VFR_CLOCK)), 2)
    return ticks[:keep] / _VFR_CLOCK


def encode_spec_for(spec: CorpusSpec, plan: VideoPlan) -> EncodeSpec:
    """How one video is encoded: High profile with `spec.gop`, or Baseline with a keyframe per second."""
    return EncodeSpec(
        profile="baseline" if plan.legacy else "high",
        fps=spec.fps,
        gop=max(1, round(spec.fps)) if plan.legacy else spec.gop,
        bframes=0 if plan.legacy else None,
        scenecut=spec.scenecut,
        crf=spec.crf,
        preset=spec.preset,
        audio=spec.audio,
        audio_first=plan.audio_first,
        faststart=True,
        rotation=90 if plan.rotated else 0,
        threads=1,
    )


def _probe(path: Path) -> tuple[int, float, tuple[float, ...]]:
    """Frame count, duration and keyframe times of an existing video, from its packets."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times, keyframes = [], []
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            seconds = float(packet.pts * packet.time_base)
            times.append(seconds)
            if packet.is_keyframe:
                keyframes.append(seconds)
        # Read while the container is open: afterwards `stream` points into freed memory.
        duration = float(stream.duration * stream.time_base) if stream.duration else None
    if not times:
        raise ValueError("no video packets")
    return len(times), duration if duration is not None else max(times), tuple(sorted(keyframes))


def script_for(spec: CorpusSpec, plan: VideoPlan) -> VideoScript:
    """The drawing plan of one video, from a Generator seeded with (spec.seed, plan.index)."""
    rng = np.random.default_rng([spec.seed, plan.index])
    times = frame_times(rng, plan.duration, spec.fps, plan.vfr)
    return plan_video(rng, plan.labels, spec.classes, times, plan.width, plan.height, difficulty=spec.difficulty,
                      distractors=spec.distractors, max_shots=spec.max_shots)


def sound_for(spec: CorpusSpec, plan: VideoPlan, seconds: float) -> np.ndarray | None:
    """The audio track of one video (`seconds` long) from a Generator seeded with (spec.seed, plan.index, 1);
    None (the encoder's default tone) without audio or without a sound class among its labels."""
    if not spec.audio:
        return None
    return video_sound((spec.seed, plan.index, 1), plan.labels, spec.classes, seconds)


def make_video(spec: CorpusSpec, plan: VideoPlan, videos_dir: str | Path) -> VideoRecord:
    """Write one video unless a complete one is already there; runs in worker processes."""
    videos_dir = Path(videos_dir)
    path = videos_dir / plan.file_name
    script = script_for(spec, plan)
    times = script.times
    cut_times = tuple(times[i] for i in script.cut_frames)
    if path.exists():
        try:
            frames, duration, keyframes = _probe(path)
            return VideoRecord(plan, frames, duration, cut_times, keyframes, reused=True)
        except (av.FFmpegError, ValueError, IndexError):
            path.unlink()
    pictures = render_frames(script, spec.classes, render_short_side=spec.render_short_side)
    if plan.rotated:  # stored landscape with a 90-degree display rotation, as phones write them
        pictures = (np.rot90(picture, k=-1) for picture in pictures)
    sound = sound_for(spec, plan, times[-1] + 1.0 / spec.fps)
    with atomic_path(path, suffix=".mp4") as partial:
        encoded = encode_video(partial, pictures, encode_spec_for(spec, plan), times=times if plan.vfr else None,
                               keyframes=script.cut_frames, audio_samples=sound)
    return VideoRecord(plan, encoded.frames, encoded.duration, cut_times, encoded.keyframe_times, reused=False)


def _has_kinds(spec: CorpusSpec) -> bool:
    """Whether the records name each class's kind: only where some class is not an appearance class, so
    the records of corpora made before kinds existed stay byte for byte."""
    return any(c.kind != "appearance" for c in spec.classes)


def _corpus_record(spec: CorpusSpec) -> dict:
    classes = [{"id": i, "name": c.name, "group": c.group} for i, c in enumerate(spec.classes)]
    if _has_kinds(spec):
        classes = [{**entry, "kind": c.kind} for entry, c in zip(classes, spec.classes, strict=True)]
    return {"format": CORPUS_FORMAT, "version": CORPUS_FORMAT_VERSION, "spec": spec.to_dict(), "classes": classes}


def _claim_folder(out: Path, spec: CorpusSpec) -> None:
    """Record the spec in corpus.json; refuse a folder that holds a corpus made from another spec."""
    record_path = out / "corpus.json"
    record = _corpus_record(spec)
    if record_path.exists():
        try:
            existing = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise DatasetError(str(record_path), f"unreadable corpus record: {error}") from error
        if existing.get("spec") != record["spec"] or existing.get("version") != record["version"]:
            raise DatasetError(str(out), "holds a corpus generated from a different spec or generator version; "
                                         "use another folder or delete this one")
    atomic_write(record_path, json.dumps(record, indent=2) + "\n")


def _run_jobs(spec: CorpusSpec, plans: list[VideoPlan], videos_dir: Path, workers: int,
              progress: bool) -> list[VideoRecord]:
    """Make every video, longest first for load balance, in `workers` processes (1: in this process)."""
    order = sorted(plans, key=lambda plan: -plan.duration * plan.width * plan.height)
    records: list[VideoRecord] = []
    with tqdm(total=len(plans), desc=f"synth {spec.name}", unit="video", disable=not progress) as bar:
        if workers <= 1:
            for plan in order:
                records.append(make_video(spec, plan, videos_dir))
                bar.update()
            return records
        context = multiprocessing.get_context("spawn")  # safe beside threads (torch) in the parent
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [pool.submit(make_video, spec, plan, videos_dir) for plan in order]
            try:
                for future in concurrent.futures.as_completed(futures):
                    records.append(future.result())
                    bar.update()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    return records


def _summary(out: Path, spec: CorpusSpec, records: list[VideoRecord], seconds: float) -> CorpusSummary:
    names = [c.name for c in spec.classes]
    class_counts = {name: {"train": 0, "val": 0} for name in names}
    for record in records:
        for label in record.plan.labels:
            class_counts[names[label]][record.plan.split] += 1
    splits = Counter(record.plan.split for record in records)
    keyframes = Counter(len(record.keyframe_times) for record in records)
    reused = sum(record.reused for record in records)
    return CorpusSummary(
        out=out,
        videos=len(records),
        split_counts={"train": splits["train"], "val": splits["val"]},
        class_counts=class_counts,
        multilabel_share=sum(len(r.plan.labels) > 1 for r in records) / max(len(records), 1),
        keyframe_histogram=dict(sorted(keyframes.items())),
        generated=len(records) - reused,
        reused=reused,
        seconds=seconds,
    )


def generate_corpus(out: str | Path, spec: CorpusSpec, *, workers: int | None = None,
                    progress: bool = True) -> CorpusSummary:
    """Generate (or finish) the corpus described by `spec` under `out` and summarise it.

    Deterministic in `spec.seed`; `workers` processes (default: CPU count). Complete videos
    already in `out/videos` are kept, so rerunning after an interruption finishes the job; a
    folder holding a corpus of another spec is refused (DatasetError). The annotation files are
    written last, once every video exists.
    """
    started = time.perf_counter()
    out = Path(out)
    videos_dir = out / "videos"
    videos_dir.mkdir(parents=True, exist_ok=True)
    _claim_folder(out, spec)
    for leftover in videos_dir.glob(f".*{PARTIAL}.mp4"):
        leftover.unlink()
    plans = plan_corpus(spec)
    workers = max(1, min(workers or os.cpu_count() or 1, len(plans)))
    records = sorted(_run_jobs(spec, plans, videos_dir, workers, progress), key=lambda record: record.plan.index)
    for split in ("train", "val"):
        lines = [f"{r.plan.file_name},{','.join(str(label) for label in r.plan.listed_labels)}"
                 for r in records if r.plan.split == split]
        atomic_write(out / f"{split}.txt", "".join(line + "\n" for line in lines))
    if _has_kinds(spec):
        rows = ["id,name,group,kind"] + [f"{i},{c.name},{c.group},{c.kind}" for i, c in enumerate(spec.classes)]
    else:
        rows = ["id,name,group"] + [f"{i},{c.name},{c.group}" for i, c in enumerate(spec.classes)]
    atomic_write(out / "labels.csv", "\n".join(rows) + "\n")
    atomic_write(out / "manifest.jsonl", "".join(json.dumps(r.to_dict()) + "\n" for r in records))
    return _summary(out, spec, records, time.perf_counter() - started)
