"""`shortvid distill`: a student trained with a teacher run, through the seed's ImageNet heads or logits."""

import json
import math
import subprocess
import sys

import pytest
import torch

from shortvid.run import RunDir
from shortvid.train.config import ConfigError
from shortvid.train.trainer import train

from conftest import tiny_config


@pytest.fixture(scope="module")
def teacher_with_imagenet_head(tiny_corpus, tiny_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "run"
    train(tiny_config(tiny_corpus, tiny_cache, out, "optim.epochs=1", "model.imagenet_head=true"))
    return out


@pytest.mark.slow
def test_imagenet_head_distillation_from_the_cli(teacher_with_imagenet_head, tiny_corpus, tiny_cache, tmp_path):
    teacher_weights = RunDir(teacher_with_imagenet_head).load_model().state_dict()
    out = tmp_path / "student"
    result = subprocess.run(
        [sys.executable, "-m", "shortvid.cli", "distill", "--teacher", str(teacher_with_imagenet_head),
         "--config", "tiny", f"data.dataset={tiny_corpus}", f"data.cache={tiny_cache}", f"out={out}",
         "progress=false", "data.batch_size=6", "data.resize=72", "data.input_size=64", "optim.epochs=2",
         "distill.weight=5"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    metrics = RunDir(out).read_metrics()
    assert len(metrics) == 2 and all(math.isfinite(m["distill_loss"]) and m["distill_loss"] > 0 for m in metrics)
    assert json.loads(result.stdout.splitlines()[-1])["run"] == str(out)
    assert RunDir(out).load_model().imagenet_head is not None
    after = RunDir(teacher_with_imagenet_head).load_model().state_dict()
    assert all(torch.equal(teacher_weights[k], after[k]) for k in after)  # the teacher only teaches


def test_logit_distillation_and_its_checks(trained_run, tiny_corpus, tiny_cache, tmp_path):
    record = train(tiny_config(tiny_corpus, tiny_cache, tmp_path / "logits", "optim.epochs=1",
                               f"distill.teacher={trained_run}", "distill.kind=logits"))
    assert record["distill_loss"] > 0
    with pytest.raises(ConfigError, match="ImageNet heads"):  # the fixture's run has no ImageNet head
        train(tiny_config(tiny_corpus, tiny_cache, tmp_path / "bad", f"distill.teacher={trained_run}",
                          "model.imagenet_head=true"))
