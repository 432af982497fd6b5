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


def near_reach(filled: int, cap: int, mode: Mode = "test", rng: np.random.Generator | None = None) -> list[int]:
    """How far into its GOP (frames decoded after the keyframe) each of ``filled`` segments after one
    keyframe may reach, for the ``fill="near"`` policy: the ``i``-th (from 1) reaches ``i * cap``, so
    filling ``filled`` segments decodes at most ``filled * cap`` frames past the keyframe, and frames
    for segments beyond the reach are spread ``cap`` apart instead of bunched at its end. Train: each
    reach is drawn uniformly from ``(i - 1) * cap + 1`` to ``i * cap``, so the frames vary between
    epochs without passing the cap.
    """
    if cap < 1:
        raise ValueError(f"cap must be at least 1, got {cap}")
    if mode == "test":
        return [i * cap for i in range(1, filled + 1)]
    rng = rng if rng is not None else np.random.default_rng()
    return [int(rng.integers((i - 1) * cap + 1, i * cap + 1)) for i in range(1, filled + 1)]


def match_within_reach(times: Sequence[float], targets: Sequence[float],
                       reachable: Sequence[Sequence[bool]]) -> list[int | None]:
    """Give each target (in order) a distinct one of ``times`` (sorted), in the same order, only where
    ``reachable[target][time]``: as many targets as possible and, among those choices, the least total
    distance; a target left without one is None. Exact (dynamic programming over the monotone
    assignments, ``len(targets) x len(times)`` steps); used by the ``fill="near"`` policy, where
    ``reachable`` says whether a frame is within the decode cap of the segment.
    """
    n, k = len(times), len(targets)
    if not n or not k:
        return [None] * k
    # One unmatched target costs more than any set of distances, so the count comes first.
    penalty = 1.0 + k * (max(max(times), max(targets)) - min(min(times), min(targets)))
    # best[i][j]: the cost of the first i targets using only the first j times
    best = [[0.0] * (n + 1) for _ in range(k + 1)]
    step = [[""] * (n + 1) for _ in range(k + 1)]
    for i in range(1, k + 1):
        best[i][0], step[i][0] = best[i - 1][0] + penalty, "none"
        for j in range(1, n + 1):
            options = [(best[i][j - 1], "skip"), (best[i - 1][j] + penalty, "none")]
            if reachable[i - 1][j - 1]:
                options.append((best[i - 1][j - 1] + abs(times[j - 1] - targets[i - 1]), "take"))
            best[i][j], step[i][j] = min(options)
    picks: list[int | None] = [None] * k
    i, j = k, n
    while i > 0:
        if step[i][j] == "take":
            picks[i - 1] = j - 1
            i, j = i - 1, j - 1
        elif step[i][j] == "none":
            i -= 1
        else:
            j -= 1
    return picks
