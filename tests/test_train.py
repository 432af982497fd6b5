"""Training end to end on the tiny corpus: configs, overfitting, resuming after a kill, and the run
directory that evaluation, prediction and the judge read."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from shortvid.data.cache import FrameCountError
from shortvid.run import RunDir
from shortvid.train.config import ConfigError, load_config, save_config, shipped_configs
from shortvid.train.loop import EpochSampler, LoopState
from shortvid.train.trainer import train

from conftest import tiny_config


def test_configs_load_with_overrides_and_reject_unknown_keys(tmp_path):
    assert {"tiny", "mobilenet_cpu", "resnet50"} <= set(shipped_configs())
    config = load_config("resnet50", ["optim.lr=0.5", "data.balanced=true", "model.args={dropout: 0.2}"])
    assert config.model.name == "tsn_resnet50" and config.optim.lr == 0.5 and config.data.balanced is True
    assert config.model.args == {"dropout": 0.2}
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  epochs: 2\n")
    assert load_config(path).optim.epochs == 2
    with pytest.raises(ConfigError, match="optim.lrr|lrr"):
        load_config("tiny", ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="not a shipped config"):
        load_config("nope")
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config("tiny", ["novalue"])


@pytest.mark.parametrize("flip", [True, False])
def test_data_flip_reaches_the_training_transform(flip):
    """``data.flip=false`` for classes that say left from right (motion direction): no flip among the
    augmentations, which are otherwise kept."""
    from torchvision.transforms import v2

    from shortvid.models import create_model
    from shortvid.train.trainer import train_transform

    config = load_config("tiny", [f"data.flip={str(flip).lower()}", "data.augment=true"])
    steps = [type(step) for step in train_transform(config, create_model("tsn_tiny", num_classes=3)).train.transforms]
    assert (v2.RandomHorizontalFlip in steps) is flip and v2.RandomResizedCrop in steps


def test_epoch_sampler_is_seeded_and_resumable():
    sampler = EpochSampler(10, seed=1)
    sampler.set_epoch(2)
    order = list(sampler)
    assert sorted(order) == list(range(10))
    sampler.set_epoch(2, start=4)
    assert list(sampler) == order[4:]
    sampler.set_epoch(3)
    assert list(sampler) != order
    weighted = EpochSampler(1000, seed=0, weights=torch.tensor([1.0] * 999 + [999.0], dtype=torch.double))
    assert sum(i == 999 for i in weighted) > 400  # the heavy sample is drawn about half the time


def test_run_directory(trained_run):
    run = RunDir(trained_run)
    metrics = run.read_metrics()
    assert [m["epoch"] for m in metrics] == [0, 1, 2]
    assert all(0.0 <= m["val_mean_jaccard"] <= 1.0 for m in metrics)
    assert run.best.exists() and run.last.exists() and run.policy() is not None
    assert len(run.label_map()) == 6
    preprocess = run.preprocess()
    assert preprocess.frames.k == 3 and preprocess.frames.size == 72 and preprocess.input_size == 64


@pytest.mark.slow
def test_a_tiny_dataset_is_overfitted(tiny_corpus, tiny_cache, tmp_path):
    config = tiny_config(tiny_corpus, tiny_cache, tmp_path / "overfit", "optim.epochs=30", "optim.lr=0.01",
                         "data.val_split=train", "data.augment=false", "optim.warmup_epochs=0.5")
    train(config)
    metrics = RunDir(tmp_path / "overfit").read_metrics()
    assert metrics[-1]["train_loss"] < 0.5 * metrics[0]["train_loss"]
    # evaluated on its own training videos: the top label of every one is a true label
    assert metrics[-1]["val_top1"] == 1.0


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(tiny_corpus, tiny_cache, tmp_path):
    args = ["optim.epochs=2", "checkpoint_every=1", "data.workers=0", "data.augment=true"]
    straight = tmp_path / "straight"
    train(tiny_config(tiny_corpus, tiny_cache, straight, *args))

    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "shortvid.cli", "train", "--config", "tiny", f"data.dataset={tiny_corpus}",
               f"data.cache={tiny_cache}", f"out={killed}", "progress=false", "data.batch_size=6", "data.resize=72",
               "data.input_size=64", *args]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = killed / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if last.exists():
            state = torch.load(last, weights_only=False)["state"]
            if state["epoch"] == 0 and state["step"] >= 1:  # mid-way through the first epoch
                break
        time.sleep(0.05)
    assert process.poll() is None, "training finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    state = torch.load(last, weights_only=False)["state"]
    assert state["epoch"] == 0 and state["step"] >= 1

    result = subprocess.run([sys.executable, "-m", "shortvid.cli", "train", "--resume", str(killed)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert [m["epoch"] for m in RunDir(killed).read_metrics()] == [0, 1]
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = torch.load(last, weights_only=False)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # The resumed epoch reports every batch's loss, those before the kill included.
    numbers = ("train_loss", "val_loss", "val_mean_jaccard", "val_mAP")
    assert ([[m[k] for k in numbers] for m in RunDir(killed).read_metrics()]
            == [[m[k] for k in numbers] for m in RunDir(straight).read_metrics()])


def test_checkpoints_from_before_the_shared_loop_resume_where_they_stopped():
    """The trainer's ``state`` had no per-batch values, SimCLR's kept ``epoch_losses``: both still resume."""
    trainer = {"epoch": 1, "step": 2, "global_step": 5, "best": 0.25, "best_epoch": 0}
    assert LoopState.from_checkpoint(trainer, 0) == LoopState(1, 2, 5, 0.25, 0, {})
    simclr = {"epoch": 0, "step": 2, "global_step": 2, "epoch_losses": [2.5, 2.75], "last_loss": None}
    assert LoopState.from_checkpoint(simclr, 0) == LoopState(0, 2, 2, -1.0, -1, {"loss": [2.5, 2.75]})
    state = LoopState(0, 1, 1, values={"loss": [0.5], "distill_loss": [0.25]})
    every_rank = [state.values, {"loss": [0.75], "distill_loss": []}]
    assert LoopState.from_checkpoint(state.to_checkpoint(every_rank), 1).values == every_rank[1]


def test_training_refuses_to_overwrite_a_run(trained_run, tiny_corpus, tiny_cache):
    with pytest.raises(ConfigError, match="--resume"):
        train(tiny_config(tiny_corpus, tiny_cache, trained_run))


def test_cache_size_must_match_the_config(tiny_corpus, tiny_cache, tmp_path):
    with pytest.raises(ConfigError, match="data.resize"):
        train(tiny_config(tiny_corpus, tiny_cache, tmp_path / "x", "data.resize=96"))


def test_more_frames_than_the_cache_holds_is_refused(tiny_corpus, tiny_cache, tmp_path):
    with pytest.raises(FrameCountError, match=re.escape(f"{tiny_cache}: holds 3 frames a video") + ".* 5 were asked"):
        train(tiny_config(tiny_corpus, tiny_cache, tmp_path / "x", "data.k=5"))


def test_configs_and_runs_written_with_num_segments_still_load(tmp_path):
    """data.num_segments is now data.k: YAML files, runs' config.yaml and overrides of before still read."""
    run_config = tmp_path / "config.yaml"  # a run's config.yaml as runs wrote it before the rename
    save_config(load_config("tiny", ["data.k=2"]), run_config)
    run_config.write_text(run_config.read_text().replace("\n  k: 2\n", "\n  num_segments: 2\n"))
    assert "num_segments: 2" in run_config.read_text()
    assert load_config(run_config).data.k == 2
    assert load_config(run_config, ["data.k=4"]).data.k == 4  # a new-style override wins over the old name
    assert load_config("tiny", ["data.num_segments=5"]).data.k == 5  # an old-style override
    both = tmp_path / "both.yaml"
    both.write_text("data:\n  num_segments: 2\n  k: 3\n")
    with pytest.raises(ConfigError, match="k is given twice, once under its old name num_segments"):
        load_config(both)
