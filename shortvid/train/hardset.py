"""The seed's hard-set fine-tuning: collect the training videos a run gets wrong, then fine-tune on
them in two steps, first with the backbone's stem and first two stages frozen until validation stops
improving, then the whole network.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..data.annotations import Annotations, load_dataset
from ..decode import DecodeLimits
from ..errors import DatasetError
from ..metrics import jaccard, predicted_matrix
from .config import load_config
from .ranks import process_group
from .trainer import train


def mine_hard_set(run_dir: str | os.PathLike, dataset: str | os.PathLike, *, split: str = "train",
                  margin: float | None = None, name: str = "hard", device: str = "auto", progress: bool = True,
                  backend: str | None = "auto", precision: str | None = "fp32",
                  limits: DecodeLimits | None = None) -> dict:
    """Write ``DATASET/<name>.txt``: the ``split`` videos the run gets wrong under its decision policy
    (Jaccard below 1), or, with ``margin``, whose lowest true-label score beats the highest wrong
    one by less than ``margin``. The file reads as a split of the same dataset (same names, so the
    same frame cache serves it). ``backend``, ``precision`` and ``limits``: how the run classifies, as
    in ``Classifier.load``. A video that fails (to decode, or in the model) is counted in ``failed``,
    its typed errors in ``failures``, and left out."""
    from ..infer.batch import classify_split
    from ..infer.classifier import Classifier

    root = Path(dataset)
    if not (root.is_dir() and (root / f"{split}.txt").is_file()):
        raise DatasetError(str(root), f"hard-set mining writes a split beside {split}.txt: give an AI Challenger "
                                      f"folder")
    classifier = Classifier.load(run_dir, device=device, backend=backend, precision=precision, limits=limits,
                                 spin=True)  # one video at a time
    annotations = load_dataset(root, split, labels=classifier.labels, on_error="skip")
    hard, failures = [], []
    for video in classify_split(classifier, annotations.samples, progress=progress, desc="mine"):
        if video.error is not None:
            failures.append(video.error.to_dict())
        elif is_hard(video.scores, video.sample.labels, classifier.decide(video.scores)[0], margin):
            hard.append(video.sample)
    if not hard:
        raise DatasetError(str(root), f"the run gets every {split} video right: no hard set")
    Annotations(hard, classifier.labels, annotations.root).write_aichallenger(root / f"{name}.txt", write_labels=False)
    return {"split": name, "file": str(root / f"{name}.txt"), "videos": len(annotations.samples),
            "hard": len(hard), "failed": len(failures), "failures": failures[:100]}


def is_hard(scores: np.ndarray, truth: tuple[int, ...], decided, margin: float | None) -> bool:
    """Wrong under the policy (Jaccard < 1), or right by less than ``margin`` in score."""
    predicted = [tuple(label.id for label in decided)]
    if jaccard(predicted, predicted_matrix([truth], len(scores)))[0] < 1.0:
        return True
    if margin is None:
        return False
    wrong = np.delete(scores, list(truth))
    return bool(len(wrong)) and float(scores[list(truth)].min() - wrong.max()) < margin


def easy_split(hard: str) -> str:
    """The name of the split ``mix_in_easy`` writes for the hard set ``hard``."""
    return f"{hard}+easy"


def mix_in_easy(dataset: str | os.PathLike, hard: str, fraction: float, seed: int = 0, split: str = "train") -> str:
    """Write ``DATASET/<hard>+easy.txt``: the hard set plus ``fraction`` of it in easy videos drawn
    from ``split`` (so the fine-tuned model does not forget what it got right)."""
    root = Path(dataset)
    hard_set = load_dataset(root, hard)
    names = {s.name for s in hard_set.samples}
    easy = [s for s in load_dataset(root, split, labels=hard_set.label_map).samples if s.name not in names]
    rng = np.random.default_rng(seed)
    count = min(len(easy), int(round(fraction * len(hard_set.samples))))
    chosen = [easy[i] for i in sorted(rng.choice(len(easy), count, replace=False))] if count else []
    mixed = easy_split(hard)
    Annotations(hard_set.samples + chosen, hard_set.label_map, hard_set.root).write_aichallenger(
        root / f"{mixed}.txt", write_labels=False)
    return mixed


def finetune(run_dir: str | os.PathLike, out: str | os.PathLike, *, hard: str = "hard", stages: int = 2,
             epochs: int = 10, patience: int = 2, lr_scale: float = 0.1, easy_fraction: float = 1.0,
             overrides: tuple[str, ...] = ()) -> dict:
    """Two runs under ``out``: ``frozen`` (stem and first ``stages`` stages frozen, from ``run_dir``'s
    weights) and ``full`` (everything trained, from ``frozen``'s best). Each stops when validation
    has not improved for ``patience`` epochs. Returns both runs' last metrics.

    ``easy_fraction`` mixes correctly classified training videos back in, as a fraction of the hard
    set (0: the hard set alone). The default, 1.0, is measured: on ``bench`` the hard set alone lost
    0.036 mean Jaccard both from scratch and from pretrained backbones, as many easy videos gained
    0.040 and 0.055 (ABLATION.md, hard-set tables).

    Under torchrun both runs train on every process, in one process group: rank 0 alone writes the
    mixed split, the others read it once written; ``train`` returns once its run is on disk."""
    base = load_config(Path(run_dir) / "config.yaml", list(overrides))
    out = Path(out)
    with process_group(base.device) as ranks:
        if easy_fraction > 0:
            split = ranks.main_first(lambda main: mix_in_easy(base.data.dataset, hard, easy_fraction, base.seed)
                                     if main else easy_split(hard))
        else:
            split = hard
        lr = base.optim.lr * lr_scale
        common = [f"data.train_split={split}", f"optim.epochs={epochs}", f"optim.patience={patience}",
                  f"optim.lr={lr}", "optim.warmup_epochs=0", "model.pretrained=false", "model.checkpoint_path=null",
                  *overrides]
        frozen = load_config(Path(run_dir) / "config.yaml", [*common, f"out={out / 'frozen'}",
                                                            f"model.init_from={run_dir}",
                                                            f"model.freeze_stages={stages}"])
        first = train(frozen)
        full = load_config(Path(run_dir) / "config.yaml", [*common, f"out={out / 'full'}",
                                                          f"model.init_from={out / 'frozen'}", "model.freeze_stages=0"])
        second = train(full)
    return {"frozen": first, "full": second, "run": str(out / "full")}
