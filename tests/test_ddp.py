"""Training on several processes: torchrun + DistributedDataParallel over gloo on the CPU, in real
torchrun subprocesses. One run directory written by rank 0, exact resumption after a kill at a fixed
world size, validation numbers equal to one process's on the same weights, the teacher's cached
features shared by the ranks; and the sampler's sharding and torchrun's environment, in-process."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import torch
from torch.utils.data import DataLoader

from shortvid.data.annotations import load_dataset
from shortvid.data.cache import FrameCache
from shortvid.data.datasets import CachedVideoDataset
from shortvid.infer.classifier import Classifier
from shortvid.policy import DecisionPolicy
from shortvid.run import RunDir
from shortvid.train import teacher_cache
from shortvid.train.config import ConfigError
from shortvid.train.loop import EpochSampler
from shortvid.train.ranks import Ranks
from shortvid.train.trainer import predict_scores, train

from conftest import tiny_config

# 18 training videos, 9 a rank, batches of 2: 4 steps a rank and epoch (drop_last leaves one out)
ARGS = ["optim.epochs=2", "checkpoint_every=1", "data.workers=0", "data.augment=true", "data.batch_size=2"]
RUN_FILES = {"config.yaml", "labels.csv", "preprocess.json", "metrics.jsonl", "policy.json", "checkpoints",
             "checkpoints/last.pt", "checkpoints/best.pt"}


def torchrun(*args: str, processes: int = 2) -> list[str]:
    """The command line of `torchrun --nproc-per-node N -m shortvid ARGS`; --standalone picks a free port."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
            "-m", "shortvid", *args]


def environment() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}  # 2 processes on 2 cores


def train_command(corpus, cache, out, *extra) -> list[str]:
    return torchrun("train", "--config", "tiny", f"data.dataset={corpus}", f"data.cache={cache}", f"out={out}",
                    "progress=false", "data.resize=72", "data.input_size=64", *ARGS, *extra)


def run_torchrun(command: list[str]) -> list[dict]:
    """Run to the end; the JSON record each rank printed (the ranks share stdout, so two records may
    share a line)."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment())
    assert result.returncode == 0, result.stderr[-4000:]
    records, decoder, text = [], json.JSONDecoder(), result.stdout
    start = text.find("{")
    while start >= 0:
        record, end = decoder.raw_decode(text, start)
        records.append(record)
        start = text.find("{", end)
    return records


def files(root) -> set[str]:
    """The run's files but its TensorBoard curves, of which there is at most one event file: rank 0's."""
    curves = sorted((root / "tensorboard").glob("*")) if (root / "tensorboard").exists() else []
    assert len(curves) <= 1 and all(path.name.startswith("events.out.tfevents") for path in curves), curves
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.relative_to(root).parts[0] != "tensorboard"}


@pytest.fixture(scope="module")
def ddp_run(tiny_corpus, tiny_cache, tmp_path_factory):
    """A 2-process run of 2 epochs, a checkpoint every step."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    records = run_torchrun(train_command(tiny_corpus, tiny_cache, out))
    assert len(records) == 1 and records[0]["run"] == str(out)  # rank 0 alone prints the result
    return out


@pytest.mark.slow
def test_two_processes_write_one_run_that_loads_and_serves(ddp_run, tiny_corpus):
    run = RunDir(ddp_run)
    assert files(ddp_run) == RUN_FILES  # nothing else: no second writer's temporary files, no per-rank copies
    metrics = run.read_metrics()
    assert [m["epoch"] for m in metrics] == [0, 1]
    assert all(math.isfinite(m["train_loss"]) and 0.0 <= m["val_mean_jaccard"] <= 1.0 for m in metrics)
    last = torch.load(run.last, weights_only=False)
    assert last["world_size"] == 2 and last["state"]["epoch"] == 2 and last["state"]["global_step"] == 8
    assert len(last["rng"]["ranks"]) == 2
    assert not any(key.startswith(("module.", "model.")) for key in last["model"])  # the unwrapped model's weights
    loaded = run.load_model("last").state_dict()
    assert loaded.keys() == last["model"].keys() and all(torch.equal(loaded[k], last["model"][k]) for k in loaded)
    video = load_dataset(tiny_corpus, "val").samples[0].path
    prediction = Classifier.load(ddp_run, device="cpu").predict(video)
    assert prediction.labels and all(label.id < len(run.label_map()) for label in prediction.labels)


def kill_mid_epoch(process: subprocess.Popen, last) -> dict:
    """Stop torchrun's workers right after rank 0 writes a checkpoint that is part-way through an
    epoch, then SIGKILL torchrun and its workers (these run in sessions of their own, so killing
    torchrun's process group alone would leave them training). Returns the checkpoint's state."""
    seen = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        stamp = last.stat().st_mtime_ns if last.exists() else None
        if stamp is not None and stamp != seen:
            seen = stamp
            processes = [process, *psutil.Process(process.pid).children(recursive=True)]
            workers = processes[1:]
            for worker in workers:
                worker.send_signal(signal.SIGSTOP)
            state = torch.load(last, weights_only=False)["state"]
            if state["step"] >= 1:  # the checkpoint on disk now is mid-epoch: kill everything
                os.killpg(process.pid, signal.SIGKILL)
                for worker in workers:
                    worker.send_signal(signal.SIGKILL)
                process.wait()
                psutil.wait_procs(workers, timeout=30)
                return torch.load(last, weights_only=False)["state"]
            for worker in workers:
                worker.send_signal(signal.SIGCONT)
        time.sleep(0.005)
    raise AssertionError("training finished before it could be killed")


@pytest.mark.slow
def test_a_two_process_run_killed_mid_epoch_resumes_to_the_same_weights(ddp_run, tiny_corpus, tiny_cache, tmp_path):
    killed = tmp_path / "killed"
    process = subprocess.Popen(train_command(tiny_corpus, tiny_cache, killed), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True, env=environment())
    try:
        state = kill_mid_epoch(process, killed / "checkpoints" / "last.pt")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert 1 <= state["step"] and state["epoch"] < 2

    run_torchrun(torchrun("train", "--resume", str(killed)))
    assert [m["epoch"] for m in RunDir(killed).read_metrics()] == [0, 1]
    a = torch.load(ddp_run / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(killed / "checkpoints" / "last.pt", weights_only=False)
    assert a["state"] == b["state"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    # every rank's losses of the interrupted epoch were kept: the epochs report what the straight run did
    assert ([m["train_loss"] for m in RunDir(killed).read_metrics()]
            == [m["train_loss"] for m in RunDir(ddp_run).read_metrics()])

    # with another number of processes: refused, rather than silently inexact
    other = subprocess.run([sys.executable, "-m", "shortvid", "train", "--resume", str(killed), "optim.epochs=3"],
                           capture_output=True, text=True, timeout=300)
    assert other.returncode == 2 and "nproc-per-node" in other.stderr, other.stderr


@pytest.mark.slow
def test_validation_numbers_are_one_process_numbers_on_the_saved_weights(ddp_run, tiny_corpus, tiny_cache):
    """Each epoch's numbers equal one process's on that epoch's weights: last.pt gives the last epoch's
    loss and mean Jaccard, best.pt the policy. Fails if validation ran on a part of the set, on one
    rank's diverged copy (batch-norm statistics), or on weights other than those saved."""
    run = RunDir(ddp_run)
    metrics = run.read_metrics()
    val = CachedVideoDataset(load_dataset(tiny_corpus, "val", labels=run.label_map()), FrameCache(tiny_cache), 3,
                             "test", run.preprocess().transform(), seed=0)
    loader = DataLoader(val, batch_size=2, shuffle=False)  # as training's validation loader
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun worker (OMP_NUM_THREADS=1)
    try:
        for checkpoint, epoch in (("last", metrics[-1]["epoch"]), ("best", None)):
            model = run.load_model(checkpoint)
            scores, targets, loss = predict_scores(model, loader, torch.device("cpu"), "bce")
            policy, jaccard = DecisionPolicy.fit(scores, targets)
            if checkpoint == "best":
                epoch = torch.load(run.best, weights_only=False)["state"]["best_epoch"]
                assert policy.to_dict() == run.policy()
            record = metrics[epoch]
            assert (record["val_loss"], record["val_mean_jaccard"]) == (loss, jaccard), checkpoint
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_two_processes_share_the_teacher_features_rank_0_computed(trained_run, tiny_corpus, tiny_cache, tmp_path):
    out = tmp_path / "student"
    records = run_torchrun(torchrun("distill", "--teacher", str(trained_run), "--config", "tiny",
                                    f"data.dataset={tiny_corpus}", f"data.cache={tiny_cache}", f"out={out}",
                                    "progress=false", "data.resize=72", "data.input_size=64", "data.batch_size=3",
                                    "data.workers=0", "optim.epochs=1", "distill.kind=logits", "distill.cache=true"))
    assert records and all(math.isfinite(r["distill_loss"]) and r["distill_loss"] > 0 for r in records)
    assert files(out) == RUN_FILES | {teacher_cache.FEATURES, teacher_cache.INDEX}
    index = json.loads((out / teacher_cache.INDEX).read_text())
    assert np.load(out / teacher_cache.FEATURES, mmap_mode="r").shape[0] == index["rows"]


def test_the_epoch_is_dealt_out_to_the_ranks():
    one = EpochSampler(11, seed=3)
    one.set_epoch(1)
    order = list(one)
    shards = []
    for rank in range(2):
        sampler = EpochSampler(11, seed=3, rank=rank, world_size=2)
        sampler.set_epoch(1)
        shards.append(list(sampler))
        assert len(sampler) == 5
    assert sorted(shards[0] + shards[1]) == sorted(order[:10])  # one order, cut to a multiple of 2
    for step in range(2):  # batches of 2: the ranks' k-th batches are one process's k-th batch of 4
        together = shards[0][2 * step:2 * step + 2] + shards[1][2 * step:2 * step + 2]
        assert sorted(together) == sorted(order[4 * step:4 * step + 4])
    resumed = EpochSampler(11, seed=3, rank=1, world_size=2)
    resumed.set_epoch(1, start=2)
    assert list(resumed) == shards[1][2:] and len(resumed) == 3
    with pytest.raises(ValueError):
        EpochSampler(1, seed=0, rank=0, world_size=2)


def test_torchrun_is_recognised_by_its_environment():
    assert Ranks.from_environment({}) == Ranks()
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    ranks = Ranks.from_environment(env)
    assert (ranks.rank, ranks.world_size, ranks.local_rank, ranks.distributed, ranks.main) == (1, 2, 1, True, False)
    assert ranks.device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="one GPU"):
        ranks.device("cuda:0")
    with pytest.raises(ConfigError, match="MASTER_PORT"):
        Ranks.from_environment({k: v for k, v in env.items() if k != "MASTER_PORT"})


def test_one_process_trains_without_a_process_group(tiny_corpus, tiny_cache, tmp_path, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    record = train(tiny_config(tiny_corpus, tiny_cache, tmp_path / "one", "optim.epochs=1"))
    assert not torch.distributed.is_initialized() and record["epoch"] == 0
    assert torch.load(tmp_path / "one" / "checkpoints" / "last.pt", weights_only=False)["world_size"] == 1
