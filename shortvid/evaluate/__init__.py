"""Evaluation: the competition's accuracy (mean Jaccard) and ranking metrics (`metrics`), and the
decision policy that turns class scores into label sets (`policy`)."""

from shortvid.evaluate.metrics import (
    average_precision,
    confusion_pairs,
    evaluation_report,
    gap_at_k,
    jaccard,
    mean_ap,
    mean_jaccard,
    per_class_ap,
    timing_summary,
    top_k_hit,
)
from shortvid.evaluate.policy import DecisionPolicy

__all__ = [
    "DecisionPolicy",
    "average_precision",
    "confusion_pairs",
    "evaluation_report",
    "gap_at_k",
    "jaccard",
    "mean_ap",
    "mean_jaccard",
    "per_class_ap",
    "timing_summary",
    "top_k_hit",
]
