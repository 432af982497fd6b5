"""Training curves in TensorBoard, beside ``metrics.jsonl``: ``tensorboard --logdir runs/`` shows every run.

Each epoch's record (``TrainLoop.fit``: the losses, the learning rate, the validation numbers, the times;
for ``pretrain`` its own losses) becomes scalars, tagged by what they are (``train/loss``, ``train/lr``,
``val/mean_jaccard``, ``time/epoch_seconds``...); a classifier's validation adds each class's AP
(``val_ap/CLASS``) and the confusion matrix as an image (``val/confusion``, ``analyze``'s heatmap). Event
files go to ``RUN/tensorboard``; a resumed run drops what its killed process wrote past its checkpoint
(``purge_step``), so the curves have no duplicate epochs. Written when the ``report`` extra's
``tensorboard`` is installed, else not at all: ``metrics.jsonl`` is the record either way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

TAGS = {"train_loss": "train/loss", "lr": "train/lr", "seconds": "time/epoch_seconds",
        "train_seconds": "time/train_seconds"}
"""Record keys whose tag is not ``val/REST`` (for ``val_REST``) or ``train/KEY``."""


def tag(key: str) -> str:
    """The TensorBoard tag of an epoch record's ``key``."""
    if key in TAGS:
        return TAGS[key]
    return f"val/{key[4:]}" if key.startswith("val_") else f"train/{key}"


class Curves:
    """One run's TensorBoard writer; ``open`` gives None where TensorBoard is not installed."""

    def __init__(self, writer):
        self.writer = writer

    @classmethod
    def open(cls, root: str | Path, first_epoch: int = 0) -> Curves | None:
        """A writer on ``root/tensorboard`` whose events start at ``first_epoch`` (a resumed run's next)."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch's writer needs the tensorboard package (the report extra)
            return None
        return cls(SummaryWriter(log_dir=str(Path(root) / "tensorboard"), purge_step=first_epoch or None))

    def epoch(self, record: dict) -> None:
        """Every finite number of an epoch's record, at its ``epoch``."""
        for key, value in record.items():
            if key != "epoch" and isinstance(value, int | float) and not isinstance(value, bool) \
                    and math.isfinite(value):
                self.writer.add_scalar(tag(key), value, record["epoch"])

    def per_class(self, names: Sequence[str], aps: np.ndarray, epoch: int) -> None:
        """Each class's validation AP (classes without a positive video are left out)."""
        for name, ap in zip(names, aps, strict=True):
            if math.isfinite(ap):
                self.writer.add_scalar(f"val_ap/{name}", float(ap), epoch)

    def confusion(self, matrix: np.ndarray, names: Sequence[str], order: list[int], sizes: list[int],
                  epoch: int) -> None:
        """The validation confusion matrix as ``analyze`` draws it; nothing without matplotlib."""
        from ..extras import MissingExtraError
        from ..plots import confusion_figure

        try:
            figure = confusion_figure(matrix, names, order, sizes)
        except MissingExtraError:
            return
        self.writer.add_figure("val/confusion", figure, epoch)  # and closes it

    def close(self) -> None:
        self.writer.close()
