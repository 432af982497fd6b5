"""Hard-set mining and the seed's two-step fine-tuning, from the command line."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from shortvid.data.annotations import load_dataset
from shortvid.infer.classifier import Label
from shortvid.run import RunDir
from shortvid.train.hardset import is_hard


def test_what_counts_as_hard():
    scores = np.array([0.9, 0.6, 0.1])
    assert not is_hard(scores, (0,), [Label(0, "a", 0.9)], None)
    assert is_hard(scores, (1,), [Label(0, "a", 0.9)], None)  # wrong
    assert is_hard(scores, (0,), [Label(0, "a", 0.9), Label(1, "b", 0.6)], None)  # an extra label halves Jaccard
    assert is_hard(scores, (0,), [Label(0, "a", 0.9)], 0.5)  # right, but by 0.3 < 0.5
    assert not is_hard(scores, (0,), [Label(0, "a", 0.9)], 0.2)


def shortvid(*args):
    result = subprocess.run([sys.executable, "-m", "shortvid.cli", *map(str, args)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.slow
def test_mine_then_finetune_in_two_steps(trained_run, tiny_corpus, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_corpus, data)
    mined = shortvid("hardmine", trained_run, "--data", data, "--quiet")
    hard = load_dataset(data, "hard")
    assert mined["hard"] == len(hard) > 0 and mined["videos"] == len(load_dataset(data, "train"))
    train_names = {s.name for s in load_dataset(data, "train")}
    assert {s.name for s in hard} <= train_names

    out = tmp_path / "ft"
    report = shortvid("finetune", trained_run, "--out", out, "--epochs", "2", "--patience", "1", "--easy", "0.5",
                      f"data.dataset={data}")
    assert report["run"] == str(out / "full")
    mixed = load_dataset(data, "hard+easy")
    assert len(mixed) == len(hard) + min(len(train_names) - len(hard), round(0.5 * len(hard)))
    frozen = torch.load(out / "frozen" / "checkpoints" / "last.pt", weights_only=False)
    start = RunDir(trained_run).load_model().state_dict()
    stem = [k for k in start if k.startswith(("backbone.conv1", "backbone.layer1", "backbone.layer2"))
            and k in frozen["model"]]  # frozen batch norms keep no step counter
    assert stem and all(torch.equal(start[k], frozen["model"][k]) for k in stem)  # step 1 left them alone
    head = [k for k in start if k.startswith("classifier")]
    assert any(not torch.equal(start[k], frozen["model"][k]) for k in head)  # and trained the rest
    full = RunDir(out / "full").load_model().state_dict()
    assert any(not torch.equal(frozen["model"][k], full[k]) for k in stem)  # step 2 trains everything
    assert RunDir(out / "full").read_metrics()
