"""Torch datasets of labelled videos: frames from the frame cache, or decoded on the fly.

Both sample ``k`` frames the TSN way with the decoder's own functions (random in each
segment when training, the segment centre when testing) and return the same item::

    {"frames": uint8 tensor [T, H, W, 3] (or whatever ``transform`` makes of it),
     "labels": float tensor [C] (multi-hot), "index": int, "name": str, "times": float tensor [T]}

``CachedVideoDataset`` items also hold ``"picks"``: int64 tensor [T], which of the video's cached
frames were chosen (indices into ``FrameCache.read(name).frames``), so per-frame values computed
once over the cache (the distillation teacher's features) can be looked up for the batch.

With motion frames (``motion`` M > 0) and sound (``audio``) the items gain the model inputs of the contract
in docs/motion-and-sound.md::

    "motion": uint8 tensor [T, M, H, W, 3], the frames shown after each picked frame (or what ``transform``
              makes of them, in the same call as the frames: ``transform_with_motion``)
    "audio": float32 tensor [mels, n_frames], ``log_mel`` of the video's sound
    "audio_mask": bool scalar tensor, whether the sound is real (``Sound.status == "ok"``)

Without them an item is what it was.

``transform`` is the augmentation hook: it gets the uint8 frames tensor and the mode (with motion, the
frames and their motion frames joined along the first axis, so one draw covers them).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from ..decode import AudioSpec, DecodeError, FrameSpec, Sound, log_mel, match_to_targets, read_frames, segment_targets
from ..decode.sampling import Mode
from ..errors import DatasetError
from .annotations import Annotations
from .cache import FrameCache
from .transforms import transform_with_motion

log = logging.getLogger(__name__)
Transform = Callable[[torch.Tensor, Mode], Any]


def _multi_hot(labels: tuple[int, ...], num_classes: int) -> torch.Tensor:
    target = torch.zeros(num_classes, dtype=torch.float32)
    target[list(labels)] = 1.0
    return target


class _LabelledVideos(Dataset):
    def __init__(self, annotations: Annotations, k: int, mode: Mode, transform: Transform | None, seed: int | None,
                 motion: int = 0, audio: AudioSpec | None = None, mels: int = 64):
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        if isinstance(mels, bool) or not isinstance(mels, int) or mels < 1:
            raise ValueError(f"mels must be an integer of at least 1, got {mels!r}")
        self.annotations = annotations
        self.samples = list(annotations.samples)
        self.num_classes = len(annotations.label_map)
        self.k = k  # frames per item
        self.mode = mode
        self.transform = transform
        self.seed = seed
        self.motion = motion  # motion frames a frame in each item (0: no "motion")
        self.audio = audio  # how the sound was read (None: no "audio")
        self.mels = mels  # mel bands of "audio"
        self._epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Seeded training sampling differs per epoch but repeats across runs."""
        self._epoch = epoch

    def _rng(self, index: int) -> np.random.Generator | None:
        if self.mode == "test":
            return None
        if self.seed is None:
            return np.random.default_rng()
        return np.random.default_rng((self.seed, self._epoch, index))

    def _transform(self, frames: torch.Tensor, index: int, motion: torch.Tensor | None = None) -> Any:
        """The transformed frames, or with ``motion`` the transformed (frames, motion) of one call."""
        def run() -> Any:
            if motion is None:
                return self.transform(frames, self.mode)
            return transform_with_motion(self.transform, frames, motion, self.mode)

        if self.mode == "test" or self.seed is None:
            return run()
        # Seeded training: the augmentation's random draws come from (seed, epoch, index), so they
        # repeat across runs, DataLoader worker counts and resumes.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(np.random.SeedSequence((self.seed, self._epoch, index)).generate_state(1)[0]))
            return run()

    def _item(self, index: int, frames: np.ndarray, times, motion: np.ndarray | None = None,
              sound: Sound | None = None) -> dict:
        """The item of sample ``index``: with ``motion`` ([T, M, H, W, 3]) its "motion", with ``sound`` its
        "audio" and "audio_mask"."""
        sample = self.samples[index]
        tensor = torch.from_numpy(np.ascontiguousarray(frames))
        extra: dict = {}
        if motion is None:
            frames_out = self._transform(tensor, index) if self.transform else tensor
        else:
            moving = torch.from_numpy(np.ascontiguousarray(motion))
            frames_out, extra["motion"] = self._transform(tensor, index, moving) if self.transform else (tensor, moving)
        if sound is not None:
            extra["audio"] = torch.from_numpy(log_mel(sound.samples, sound.sample_rate, self.mels))
            extra["audio_mask"] = torch.tensor(sound.status == "ok")
        return {
            "frames": frames_out,
            "labels": _multi_hot(sample.labels, self.num_classes),
            "index": index,
            "name": sample.name,
            "times": torch.tensor(list(times), dtype=torch.float32),
            **extra,
        }


class CachedVideoDataset(_LabelledVideos):
    """Labelled videos whose frames come from a frame cache made by ``shortvid extract``: ``k`` of each
    video's cached frames, at most as many as the cache holds (``FrameCountError`` otherwise). ``spec``:
    the ``FrameSpec`` that reads them from a video, the cache's own with ``k`` and ``motion``.

    ``motion``: also the first ``motion`` motion frames of each picked frame (at most the cache's, else a
    ``FrameCountError``); ``audio``: also the sound as ``mels`` log-mel bands (a ``MissingAudioError`` from
    a cache without sound). ``audio`` the attribute is then the cache's ``AudioSpec``.

    Videos missing from the cache (failed to decode, or not extracted) are left out and listed
    in ``missing`` with the cause, so training runs on what is there and says what is not.
    """

    def __init__(
        self,
        annotations: Annotations,
        cache: FrameCache | str | os.PathLike,
        k: int = 3,
        mode: Mode = "train",
        transform: Transform | None = None,
        seed: int | None = None,
        motion: int = 0,
        audio: bool = False,
        mels: int = 64,
    ):
        cache = cache if isinstance(cache, FrameCache) else FrameCache(cache)
        self.spec = cache.spec_for(k, motion)
        super().__init__(annotations, k, mode, transform, seed, motion, cache.audio_for(audio), mels)
        self.cache = cache
        self.missing: dict[str, str] = {}
        kept = []
        for sample in self.samples:
            if sample.name in self.cache:
                kept.append(sample)
            else:
                failure = self.cache.failures.get(sample.name)
                self.missing[sample.name] = failure["message"] if failure else "not extracted"
        if not kept:
            raise DatasetError(str(self.cache.root), f"none of the {len(self.samples)} videos is in the cache")
        if self.missing:
            log.warning("%d of %d videos are not in the cache %s (first: %s)", len(self.missing),
                        len(self.samples), self.cache.root, next(iter(self.missing.items())))
        self.samples = kept

    def __getitem__(self, index: int) -> dict:
        name = self.samples[index].name
        clip = self.cache.read(name, motion=False, sound=self.audio is not None)
        # Sample among the cached frames exactly as the decoder samples among keyframes.
        end = clip.start + clip.duration
        targets = segment_targets(clip.start, end, self.k, self.mode, self._rng(index), candidates=clip.times)
        picks = match_to_targets(clip.times, targets)
        motion = self.cache.read_motion(name, picks, self.motion)[0] if self.motion else None
        item = self._item(index, clip.frames[picks], [clip.times[i] for i in picks], motion, clip.sound)
        item["picks"] = torch.tensor(picks, dtype=torch.int64)
        return item


class RawVideoDataset(_LabelledVideos):
    """Labelled videos decoded on the fly: ``read_frames`` with ``spec`` (``spec.k`` frames an item, and
    ``spec.motion`` motion frames each) and ``audio`` (the sound, as ``mels`` log-mel bands; None: none).

    A video that fails to decode is logged and replaced by the next one, up to ``max_failures``
    in total; past that the dataset raises, since the data is more broken than a bad file or two.
    """

    def __init__(
        self,
        annotations: Annotations,
        spec: FrameSpec = FrameSpec(size=256),
        mode: Mode = "train",
        transform: Transform | None = None,
        seed: int | None = None,
        max_failures: int = 100,
        timeout: float = 30.0,
        audio: AudioSpec | None = None,
        mels: int = 64,
    ):
        super().__init__(annotations, spec.k, mode, transform, seed, spec.motion, audio, mels)
        self.spec = spec
        self.max_failures = max_failures
        self.timeout = timeout
        self.failures: dict[str, str] = {}

    def __getitem__(self, index: int) -> dict:
        for attempt in range(len(self.samples)):
            current = (index + attempt) % len(self.samples)
            sample = self.samples[current]
            try:
                clip = read_frames(sample.path, self.spec, mode=self.mode, rng=self._rng(current), timeout=self.timeout,
                                   audio=self.audio)
            except DecodeError as error:
                self.failures[sample.name] = str(error)
                log.warning("skipping %s", error)
                if len(self.failures) > self.max_failures:
                    raise DatasetError(sample.name, f"more than {self.max_failures} videos failed to decode; "
                                                    f"last: {error.cause}") from error
                continue
            return self._item(current, clip.frames, clip.times, clip.motion, clip.sound)
        raise DatasetError(str(self.annotations.root), "no video in the dataset could be decoded")
