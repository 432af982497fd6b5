"""Which frames to take: TSN segment targets and their matching to keyframes.

Pure functions on timestamps, shared by the decoder (choosing keyframe packets) and the frame
cache datasets (choosing among cached frames), so training and prediction sample alike.

TSN (Wang et al. 2016) splits a video into ``k`` equal segments and takes one frame from each:
the segment centre at test time, a random point of the segment when training.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np

Mode = Literal["train", "test"]


def segment_targets(
    start: float,
    end: float,
    k: int,
    mode: Mode = "test",
    rng: np.random.Generator | None = None,
    candidates: Sequence[float] | None = None,
) -> np.ndarray:
    """One target time per segment of ``[start, end)``.

    Test: the segment centres. Train: a random candidate time inside the segment when
    ``candidates`` (e.g. keyframe times) fall in it, else a uniform random time in the segment.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    end = max(end, start)
    edges = start + (end - start) * np.arange(k + 1) / k
    if mode == "test":
        return (edges[:-1] + edges[1:]) / 2
    if mode != "train":
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    rng = rng if rng is not None else np.random.default_rng()
    targets = rng.uniform(edges[:-1], edges[1:])
    if candidates is not None and len(candidates):
        times = np.asarray(candidates, dtype=float)
        for i in range(k):
            last = i == k - 1
            inside = times[(times >= edges[i]) & ((times <= edges[i + 1]) if last else (times < edges[i + 1]))]
            if len(inside):
                targets[i] = rng.choice(inside)
    return targets


def match_to_targets(times: Sequence[float], targets: Sequence[float]) -> list[int]:
    """Pick one of ``times`` (sorted) for each target, in order, minimising total distance.

    With at least as many times as targets the picks are distinct, so ``k`` different keyframes
    are used whenever a video has them. With fewer, every time is used at least once and some
    repeat, so no keyframe is wasted. Solved exactly by dynamic programming over the monotone
    assignments; sizes are tiny (a few targets, tens of keyframes).
    """
    t = np.asarray(times, dtype=float)
    c = np.asarray(targets, dtype=float)
    n, k = len(t), len(c)
    if n == 0:
        raise ValueError("no times to match")
    distinct = n >= k
    cost = np.abs(c[:, None] - t[None, :])
    total = np.full((k, n), np.inf)
    came_from = np.zeros((k, n), dtype=int)
    if distinct:
        total[0] = cost[0]
    else:
        total[0, 0] = cost[0, 0]
    for i in range(1, k):
        prev = total[i - 1]
        if distinct:
            # target i takes time j > the time of target i-1: best over all earlier j'
            best_before = np.minimum.accumulate(prev)
            arg_before = np.zeros(n, dtype=int)
            for j in range(1, n):
                arg_before[j] = j if prev[j] < prev[arg_before[j - 1]] else arg_before[j - 1]
            total[i, 1:] = best_before[:-1] + cost[i, 1:]
            came_from[i, 1:] = arg_before[:-1]
        else:
            # target i repeats the time of target i-1 or moves on to the next one
            step = np.concatenate(([np.inf], prev[:-1]))
            total[i] = np.minimum(prev, step) + cost[i]
            came_from[i] = np.where(step < prev, np.arange(n) - 1, np.arange(n))
    j = int(np.argmin(total[-1])) if distinct else n - 1
    picks = [j]
    for i in range(k - 1, 0, -1):
        j = int(came_from[i, j])
        picks.append(j)
    return picks[::-1]


def place_times(times: Sequence[float], targets: Sequence[float]) -> list[int | None]:
    """For fewer ``times`` than targets: give each time its own target, the rest get ``None``.

    Used by the ``fill="seek"`` policy: every keyframe keeps the segment it fits best, and the
    segments left over get a frame decoded at their target time.
    """
    slots = match_to_targets(targets, times)
    placed: list[int | None] = [None] * len(targets)
    for time_index, slot in enumerate(slots):
        placed[slot] = time_index
    return placed
