"""``shortvid ablate``: the seed's tables, reproduced in one command on a synthetic corpus: every network
trained from scratch (``engine``), or started from ``shortvid pretrain`` backbones (``pretrained``); and
what motion and sound add (``senses``); ``report`` writes ABLATION.md."""

from .engine import Ablation, AblationPlan
from .pretrained import PretrainedAblation
from .senses import SensesAblation


def ablate(plan: AblationPlan) -> dict:
    """Run (or finish) the ablation of ``plan``; returns the summary also written to ``OUT/ablation.json``."""
    if plan.senses:
        return SensesAblation(plan).run()
    return (PretrainedAblation if plan.pretrained else Ablation)(plan).run()


__all__ = ["Ablation", "AblationPlan", "PretrainedAblation", "SensesAblation", "ablate"]
