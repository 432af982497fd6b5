"""Torch datasets of labelled videos: frames from the frame cache, or decoded on the fly.

Both sample ``k`` frames the TSN way with the decoder's own functions (random in each
segment when training, the segment centre when testing) and return the same item::

    {"frames": uint8 tensor [T, H, W, 3] (or whatever ``transform`` makes of it),
     "labels": float tensor [C] (multi-hot), "index": int, "name": str, "times": float tensor [T]}

``CachedVideoDataset`` items also hold ``"picks"``: int64 tensor [T], which of the video's cached
frames were chosen (indices into ``FrameCache.read(name).frames``), so per-frame values computed
once over the cache (the distillation teacher's features) can be looked up for the batch.

``transform`` is the augmentation hook: it gets the uint8 frames tensor and the mode.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from ..decode import DecodeError, FrameSpec, match_to_targets, read_frames, segment_targets
from ..decode.sampling import Mode
from ..errors import DatasetError
from .annotations import Annotations
from .cache import FrameCache

log = logging.getLogger(__name__)
Transform = Callable[[torch.Tensor, Mode], Any]


def _multi_hot(labels: tuple[int, ...], num_classes: int) -> torch.Tensor:
    target = torch.zeros(num_classes, dtype=torch.float32)
    target[list(labels)] = 1.0
    return target


class _LabelledVideos(Dataset):
    def __init__(self, annotations: Annotations, k: int, mode: Mode, transform: Transform | None, seed: int | None):
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        self.annotations = annotations
        self.samples = list(annotations.samples)
        self.num_classes = len(annotations.label_map)
        self.k = k  # frames per item
        self.mode = mode
        self.transform = transform
        self.seed = seed
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

    def _transform(self, frames: torch.Tensor, index: int) -> Any:
        if self.mode == "test" or self.seed is None:
            return self.transform(frames, self.mode)
        # Seeded training: the augmentation's random draws come from (seed, epoch, index), so they
        # repeat across runs, DataLoader worker counts and resumes.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(np.random.SeedSequence((self.seed, self._epoch, index)).generate_state(1)[0]))
            return self.transform(frames, self.mode)

    def _item(self, index: int, frames: np.ndarray, times) -> dict:
        sample = self.samples[index]
        tensor = torch.from_numpy(np.ascontiguousarray(frames))
        return {
            "frames": self._transform(tensor, index) if self.transform else tensor,
            "labels": _multi_hot(sample.labels, self.num_classes),
            "index": index,
            "name": sample.name,
            "times": torch.tensor(list(times), dtype=torch.float32),
        }


class CachedVideoDataset(_LabelledVideos):
    """Labelled videos whose frames come from a frame cache made by ``shortvid extract``: ``k`` of each
    video's cached frames, at most as many as the cache holds (``FrameCountError`` otherwise). ``spec``:
    the ``FrameSpec`` that reads them from a video, the cache's own with ``k``.

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
    ):
        super().__init__(annotations, k, mode, transform, seed)
        self.cache = cache if isinstance(cache, FrameCache) else FrameCache(cache)
        self.spec = self.cache.spec_for(k)
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
        clip = self.cache.read(self.samples[index].name)
        # Sample among the cached frames exactly as the decoder samples among keyframes.
        end = clip.start + clip.duration
        targets = segment_targets(clip.start, end, self.k, self.mode, self._rng(index), candidates=clip.times)
        picks = match_to_targets(clip.times, targets)
        item = self._item(index, clip.frames[picks], [clip.times[i] for i in picks])
        item["picks"] = torch.tensor(picks, dtype=torch.int64)
        return item


class RawVideoDataset(_LabelledVideos):
    """Labelled videos decoded on the fly: ``read_frames`` with ``spec`` (``spec.k`` frames an item).

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
    ):
        super().__init__(annotations, spec.k, mode, transform, seed)
        self.spec = spec
        self.max_failures = max_failures
        self.timeout = timeout
        self.failures: dict[str, str] = {}

    def __getitem__(self, index: int) -> dict:
        for attempt in range(len(self.samples)):
            current = (index + attempt) % len(self.samples)
            sample = self.samples[current]
            try:
                clip = read_frames(sample.path, self.spec, mode=self.mode, rng=self._rng(current), timeout=self.timeout)
            except DecodeError as error:
                self.failures[sample.name] = str(error)
                log.warning("skipping %s", error)
                if len(self.failures) > self.max_failures:
                    raise DatasetError(sample.name, f"more than {self.max_failures} videos failed to decode; "
                                                    f"last: {error.cause}") from error
                continue
            return self._item(current, clip.frames, clip.times)
        raise DatasetError(str(self.annotations.root), "no video in the dataset could be decoded")
