"""The distillation teacher's backbone features, computed once over the frame cache (``distill.cache``).

The teacher is frozen and in eval mode (batch norm on running statistics, no dropout), so its
backbone's output for a frame depends on that frame alone. Without augmentation the frames a
student batch gets are centre crops of cached frames, so instead of running the teacher's backbone
on every batch of every epoch (epochs x videos x T frames) it runs once over every cached frame of
every training video, and each batch then needs only the teacher's heads (aggregator and classifier,
or the ImageNet head) on the gathered features of the frames the student got.

The features live in the student's run directory::

    RUN/teacher_features.npy    float16 [rows, D]: one row per cached frame, a video's rows together
    RUN/teacher_features.json   what they were computed from, and where each video's rows start

A memory-mapped file rather than a tensor in memory: a resumed run reads the features back instead
of recomputing them (minutes to hours of teacher inference on a large corpus), and the OS pages in
only what the batches touch, so a store larger than memory works. The index is written last,
after the features are on disk, so a run killed while computing leaves nothing that reads as valid.
Features are reused only when the teacher checkpoint, the frame cache, the crop, the normalisation
and every training video's frame count match; otherwise they are recomputed.

Several training processes (torchrun) share one store: rank 0 computes it while the others wait,
then they read it (``compute=False``), so no two processes ever write it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..data.cache import FrameCache
from ..data.transforms import VideoTransform
from ..errors import ShortvidError
from ..files import atomic_path, atomic_write
from ..models import VideoClassifier

FEATURES = "teacher_features.npy"
INDEX = "teacher_features.json"
VERSION = 1


class _CachedFrames(Dataset):
    """All cached frames of each video, through the evaluation transform: [n, 3, S, S] per video."""

    def __init__(self, cache: FrameCache, names: list[str], transform: VideoTransform):
        self.cache, self.names, self.transform = cache, names, transform

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> torch.Tensor:
        frames = torch.from_numpy(np.ascontiguousarray(self.cache.read(self.names[index]).frames))
        return self.transform(frames, "test")


def _concatenate(items: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(items)


class TeacherFeatures:
    """Per-frame teacher backbone features of the cached frames, looked up by (video, cached frame)."""

    def __init__(self, features: np.ndarray, starts: dict[str, int], counts: dict[str, int]):
        self.features = features  # float16 [rows, D], a memory map
        self.starts = starts
        self.counts = counts

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def gather(self, starts: torch.Tensor, picks: torch.Tensor) -> torch.Tensor:
        """Features [B, T, D] (float16) of cached frames ``picks`` [B, T] of the videos whose rows
        start at ``starts`` [B]."""
        rows = (starts.view(-1, 1) + picks).numpy()
        return torch.from_numpy(np.ascontiguousarray(self.features[rows]))

    @classmethod
    def load_or_compute(cls, folder: str | os.PathLike, model: VideoClassifier, cache: FrameCache, names: list[str],
                        transform: VideoTransform, key: dict, device: torch.device, *, batch_size: int = 16,
                        workers: int = 0, amp: bool = False, progress: bool = False,
                        compute: bool = True) -> tuple["TeacherFeatures", bool]:
        """The stored features of ``folder`` when they were made from ``key`` and cover ``names``,
        else freshly computed ones (replacing any stored). Returns (features, whether computed).
        ``compute=False``: the stored ones or a ``ShortvidError`` (a process that must only read them)."""
        folder = Path(folder)
        counts = {name: len(cache.entries[name].offsets) for name in names}
        stored = cls.load(folder, key, counts)
        if stored is not None:
            return stored, False
        if not compute:
            raise ShortvidError(str(folder / INDEX), "no teacher features made from this teacher and frame cache: "
                                                     "the training process of rank 0 should have computed them first")
        return cls.compute(folder, model, cache, names, counts, transform, key, device, batch_size=batch_size,
                           workers=workers, amp=amp, progress=progress), True

    @classmethod
    def load(cls, folder: Path, key: dict, counts: dict[str, int]) -> "TeacherFeatures | None":
        index_path, features_path = folder / INDEX, folder / FEATURES
        if not index_path.exists() or not features_path.exists():
            return None
        try:
            index = json.loads(index_path.read_text())
            features = np.load(features_path, mmap_mode="r")
        except (OSError, ValueError):
            return None
        if index.get("version") != VERSION or index.get("key") != key or features.dtype != np.float16:
            return None
        videos = index["videos"]
        if list(features.shape) != [index["rows"], index["dim"]]:
            return None
        if any(name not in videos or videos[name][1] != count for name, count in counts.items()):
            return None
        return cls(features, {name: videos[name][0] for name in counts}, counts)

    @classmethod
    @torch.inference_mode()
    def compute(cls, folder: Path, model: VideoClassifier, cache: FrameCache, names: list[str], counts: dict[str, int],
                transform: VideoTransform, key: dict, device: torch.device, *, batch_size: int = 16, workers: int = 0,
                amp: bool = False, progress: bool = False) -> "TeacherFeatures":
        """One backbone pass over every cached frame of ``names``, ``batch_size`` videos at a time."""
        folder.mkdir(parents=True, exist_ok=True)
        index_path, features_path = folder / INDEX, folder / FEATURES
        index_path.unlink(missing_ok=True)  # from here until the new index is written, nothing is valid
        starts, row = {}, 0
        for name in names:
            starts[name], row = row, row + counts[name]
        loader = DataLoader(_CachedFrames(cache, names, transform), batch_size=batch_size, shuffle=False,
                            num_workers=workers, collate_fn=_concatenate, pin_memory=device.type == "cuda")
        model.eval()
        done = 0
        with atomic_path(features_path, suffix=".npy") as temporary:
            features = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float16,
                                                 shape=(row, model.num_features))
            with tqdm(total=row, desc="teacher features", unit="frame", disable=not progress, leave=False) as bar:
                for frames in loader:
                    with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
                        out = model.forward_features(frames.to(device, non_blocking=True).unsqueeze(0))[0]
                    features[done:done + len(out)] = out.to(torch.float16).cpu().numpy()
                    done += len(out)
                    bar.update(len(out))
            if done != row:
                raise RuntimeError(f"teacher features: expected {row} frames from the cache, got {done}")
            features.flush()
            del features
        index = {"version": VERSION, "key": key, "rows": row, "dim": model.num_features,
                 "videos": {name: [starts[name], counts[name]] for name in names}}
        atomic_write(index_path, json.dumps(index) + "\n")
        return cls(np.load(features_path, mmap_mode="r"), starts, counts)


def checkpoint_key(path: Path) -> dict:
    """What identifies a teacher checkpoint file without reading it: its path, size and mtime."""
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
