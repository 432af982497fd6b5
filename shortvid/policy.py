"""The decision policy: how many labels to return for a video's class scores.

The competition scores a video by the Jaccard index of the returned and true label sets, so an
empty answer earns 0 and one wrong extra label halves a single-label video's score. The policy
therefore always returns the best class and adds further classes only when their score clears
a threshold fitted on validation data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields

import numpy as np

from .metrics import as_scores, as_targets, top_k_indices

__all__ = ["DecisionPolicy"]

DEFAULT_THRESHOLDS = np.round(np.arange(0.01, 1.0, 0.01), 2)


@dataclass(frozen=True)
class DecisionPolicy:
    """Return the top-1 class, then the next best classes whose score clears the threshold.

    Classes are ranked by score (ties by lower id). The first is always returned; the k-th
    (k >= 2) is returned when its score >= `threshold` (or, with `relative`, when its score >=
    `threshold` * the top score, which suits softmax outputs whose scale varies per video), up to
    `max_labels` labels in all. Because the ranking is descending, the returned labels are always a
    prefix of it. Comparisons are made in float64 so that `fit` and `apply` agree exactly.
    """

    threshold: float = 0.5
    max_labels: int = 3
    relative: bool = False

    def __post_init__(self) -> None:
        if int(self.max_labels) != self.max_labels or self.max_labels < 1:
            raise ValueError(f"max_labels must be an integer >= 1, got {self.max_labels!r}")
        if not np.isfinite(self.threshold):
            raise ValueError(f"threshold must be finite, got {self.threshold!r}")
        object.__setattr__(self, "threshold", float(self.threshold))
        object.__setattr__(self, "max_labels", int(self.max_labels))
        object.__setattr__(self, "relative", bool(self.relative))

    def counts(self, scores) -> tuple[np.ndarray, np.ndarray]:
        """Ranked class ids [N, M] (M = min(max_labels, C)) and how many of them to return [N]."""
        s = as_scores(scores)
        if s.shape[1] == 0:
            raise ValueError("scores have no classes")
        ranked = top_k_indices(s, self.max_labels)
        ranked_scores = np.take_along_axis(s, ranked, axis=1)
        cutoff = self.threshold * ranked_scores[:, :1] if self.relative else self.threshold
        extra = np.count_nonzero(ranked_scores[:, 1:] >= cutoff, axis=1)
        return ranked, 1 + extra

    def apply(self, scores) -> list[tuple[int, ...]]:
        """Label sets for scores [N, C], each best first and never empty."""
        ranked, n = self.counts(scores)
        rows = ranked.tolist()
        return [tuple(row[:k]) for row, k in zip(rows, n.tolist(), strict=True)]

    def apply_one(self, scores) -> tuple[int, ...]:
        """Label set for one video's scores [C]: the serving path, same rule as `apply`, with
        less per-call overhead."""
        s = as_scores(scores, ndim=1)
        if s.size == 0:
            raise ValueError("scores have no classes")
        ranked = np.argsort(-s, kind="stable")[: self.max_labels]
        ranked_scores = s[ranked]
        cutoff = self.threshold * ranked_scores[0] if self.relative else self.threshold
        n = 1 + int(np.count_nonzero(ranked_scores[1:] >= cutoff))
        return tuple(ranked[:n].tolist())

    def to_dict(self) -> dict:
        """JSON-ready form, stored beside a model."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> DecisionPolicy:
        """Inverse of `to_dict`; missing keys take the defaults, unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown DecisionPolicy keys: {sorted(unknown)}")
        return cls(**dict(d))

    @classmethod
    def fit(
        cls,
        scores,
        targets,
        *,
        thresholds: Iterable[float] | None = None,
        max_labels: Iterable[int] = (1, 2, 3),
        relative: bool = False,
    ) -> tuple[DecisionPolicy, float]:
        """Grid search for the policy with the highest mean Jaccard on validation data.

        Tries every (threshold, max_labels) pair; `thresholds` defaults to 0.01, 0.02, ..., 0.99.
        Returns the best policy and its mean Jaccard. Among equal scores the policy returning
        fewer labels wins: smaller max_labels first, then the higher threshold. Vectorised: the
        Jaccard of returning the first k ranked classes is computed once per video and k, then
        each grid point only counts how many ranked scores clear its threshold.
        """
        s, t = as_scores(scores), as_targets(targets)
        if s.shape != t.shape:
            raise ValueError(f"scores {s.shape} and targets {t.shape} differ in shape")
        if s.shape[0] == 0 or s.shape[1] == 0:
            raise ValueError("fit needs at least one video and one class")
        grid_t = np.asarray(
            DEFAULT_THRESHOLDS if thresholds is None else list(thresholds), dtype=np.float64
        )
        grid_m = sorted({int(m) for m in max_labels})
        if grid_t.size == 0 or not grid_m or grid_m[0] < 1 or not np.isfinite(grid_t).all():
            raise ValueError("thresholds must be finite and non-empty, max_labels integers >= 1")
        grid_t = np.unique(grid_t)[::-1]

        depth = min(grid_m[-1], s.shape[1])
        ranked = top_k_indices(s, depth)
        ranked_scores = np.take_along_axis(s, ranked, axis=1)
        ranked_hits = np.take_along_axis(t, ranked, axis=1)
        # Jaccard of returning the first k ranked classes, for k = 1..depth: [N, depth].
        inter = np.cumsum(ranked_hits, axis=1)
        k = np.arange(1, depth + 1)
        union = k + t.sum(axis=1, keepdims=True) - inter
        jac = inter / union

        # Ranked class j is returned iff j < max_labels and it clears the cutoff (the scores
        # descend, so clearing is a prefix). Hence mean Jaccard(threshold, m) = mean(jac[:, 0])
        # + sum over j < m of mean(gain_j * clears_j), gain_j = jac[:, j] - jac[:, j - 1].
        cutoff = grid_t[:, None] * ranked_scores[:, 0] if relative else grid_t[:, None]
        means = np.full(grid_t.size, jac[:, 0].mean())
        best: tuple[float, int, float] | None = None
        for j in range(depth):
            if j > 0:
                clears = (ranked_scores[:, j] >= cutoff).astype(np.float64)
                means = means + clears @ (jac[:, j] - jac[:, j - 1]) / s.shape[0]
            for m in grid_m:
                if min(m, depth) == j + 1:
                    i = int(np.argmax(means))
                    if best is None or means[i] > best[0] + 1e-12:
                        best = (float(means[i]), m, float(grid_t[i]))
        score, m, thr = best
        return cls(threshold=thr, max_labels=m, relative=relative), score
