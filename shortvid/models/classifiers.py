"""Video-level classifiers: one video vector ``[B, D]`` -> class logits ``[B, C]``.

Every classifier returns logits, never probabilities, so one loss (BCE-with-logits, or softmax
cross-entropy) and one post-processing (sigmoid/softmax) serve them all. To add one, subclass
:class:`ClassifierHead`, implement ``forward`` and ``reset_classifier``, and register it with
``@register_classifier("name")``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import register_classifier


class ClassifierHead(nn.Module):
    """Base class: ``forward([B, in_features]) -> logits [B, num_classes]``."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.in_features = in_features
        self.num_classes = num_classes

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the output layers with fresh ones for ``num_classes`` classes."""
        raise NotImplementedError


@register_classifier("linear")
class LinearClassifier(ClassifierHead):
    """Dropout then one fully connected layer (TSN's head; YouTube-8M's logistic model)."""

    def __init__(self, in_features: int, num_classes: int, *, dropout: float = 0.0):
        super().__init__(in_features, num_classes)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.in_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(x))


@register_classifier("moe")
class MixtureOfExperts(ClassifierHead):
    """YouTube-8M's mixture of experts: per class, a softmax gate over ``num_experts`` logistic
    experts plus one dummy expert that always says 0, so p = sum_e gate_e * sigmoid(expert_e).

    Returns the exact logit log(p / (1 - p)), computed in log space (no clamping), so
    ``sigmoid(logits)`` is the mixture's probability and BCE-with-logits trains it stably.
    """

    def __init__(self, in_features: int, num_classes: int, *, num_experts: int = 2, dropout: float = 0.0):
        super().__init__(in_features, num_classes)
        self.num_experts = num_experts
        self.dropout = nn.Dropout(dropout)
        self._build(num_classes)

    def _build(self, num_classes: int) -> None:
        self.gates = nn.Linear(self.in_features, num_classes * (self.num_experts + 1))
        self.experts = nn.Linear(self.in_features, num_classes * self.num_experts)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self._build(num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.dropout(x)
        experts = self.num_experts
        log_gates = F.log_softmax(self.gates(x).view(-1, self.num_classes, experts + 1), dim=-1)
        expert_logits = self.experts(x).view(-1, self.num_classes, experts)
        expert_gates, dummy_gate = log_gates[..., :experts], log_gates[..., experts:]
        log_p = torch.logsumexp(expert_gates + F.logsigmoid(expert_logits), dim=-1)
        log_not_p = torch.logsumexp(torch.cat([expert_gates + F.logsigmoid(-expert_logits), dummy_gate], -1), dim=-1)
        return log_p - log_not_p
