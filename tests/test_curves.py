"""Training curves in TensorBoard (``train.curves``): every epoch's record as scalars, per-class AP and the
confusion matrix as an image, read back with TensorBoard's own reader."""

import sys

import pytest

from shortvid.run import RunDir
from shortvid.train.curves import Curves, tag
from shortvid.train.trainer import train

from conftest import tiny_config

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def events(run) -> EventAccumulator:
    reader = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    reader.Reload()
    return reader


def test_tags_say_what_each_number_is():
    assert [tag(key) for key in ("train_loss", "val_mean_jaccard", "lr", "seconds", "distill_loss")] == [
        "train/loss", "val/mean_jaccard", "train/lr", "time/epoch_seconds", "train/distill_loss"]


def test_a_training_run_writes_its_curves(trained_run):
    """The scalars are metrics.jsonl's, epoch by epoch; each class with a positive has its AP; the confusion
    matrix is an image per epoch."""
    metrics = RunDir(trained_run).read_metrics()
    reader = events(trained_run)
    scalars = reader.Tags()["scalars"]
    for key in ("train_loss", "val_loss", "val_mean_jaccard", "val_top1", "val_mAP", "lr"):
        logged = reader.Scalars(tag(key))
        assert [event.step for event in logged] == [record["epoch"] for record in metrics]
        assert [event.value for event in logged] == pytest.approx([record[key] for record in metrics], rel=1e-6)
    names = RunDir(trained_run).label_map().names
    assert {f"val_ap/{name}" for name in names} <= set(scalars)
    assert [event.step for event in reader.Images("val/confusion")] == [0, 1, 2]


def test_a_resumed_run_has_each_epoch_once(tiny_corpus, tiny_cache, tmp_path):
    out = tmp_path / "resumed"
    train(tiny_config(tiny_corpus, tiny_cache, out, "optim.epochs=1"))
    from shortvid.train.config import load_config

    train(load_config(out / "config.yaml", ["optim.epochs=2"]), resume=True)
    steps = [event.step for event in events(out).Scalars("val/mean_jaccard")]
    assert steps == [0, 1]


def test_without_tensorboard_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were missing
    assert Curves.open(tmp_path) is None
    assert not (tmp_path / "tensorboard").exists()
