"""`shortvid pretrain` (supervised): a K-way image classifier exported as a timm state dict that
every command loads, K-way head included; `model.init_from` with the class head reset; per-module
learning rates."""

import json
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch

from shortvid.models import create_model
from shortvid.run import RunDir, RunError, load_weights
from shortvid.train.config import ConfigError
from shortvid.train.pretrain import BACKBONE_FILE, pretrain_supervised
from shortvid.train.trainer import train

from conftest import tiny_config


@pytest.fixture(scope="module")
def pretrained(tiny_corpus, tiny_cache, tmp_path_factory):
    """`shortvid pretrain` from the CLI: test_resnet on one frame of each tiny-corpus video."""
    out = tmp_path_factory.mktemp("pretrain") / "run"
    result = subprocess.run(
        [sys.executable, "-m", "shortvid.cli", "pretrain", "--config", "tiny", f"data.dataset={tiny_corpus}",
         f"data.cache={tiny_cache}", f"out={out}", "progress=false", "data.batch_size=6", "data.resize=72",
         "data.input_size=64", "optim.epochs=2", "model.name=tsn", "model.args.backbone=test_resnet"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["run"] == str(out) and summary["method"] == "supervised"
    return out, summary


@pytest.mark.slow
def test_the_export_is_the_run_as_a_timm_image_classifier(pretrained):
    out, summary = pretrained
    classes = len(RunDir(out).label_map())
    assert summary["classes"] == classes and summary["backbone"] == "test_resnet"
    assert json.loads((out / "pretrain.json").read_text())["checkpoint"] == str(out / BACKBONE_FILE)
    image_model = timm.create_model("test_resnet", num_classes=classes)
    image_model.load_state_dict(torch.load(out / BACKBONE_FILE), strict=True)  # every key, nothing else
    run_model = RunDir(out).load_model()
    frame = torch.randn(2, 1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = run_model(frame)  # one segment: mean pooling of one frame is the frame
        got = image_model.eval()(frame[:, 0])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_the_k_way_head_is_the_imagenet_head_everywhere(pretrained, tiny_corpus, tiny_cache, tmp_path):
    out, summary = pretrained
    k, checkpoint = summary["classes"], str(out / BACKBONE_FILE)
    model = create_model("tsn", backbone="test_resnet", num_classes=7, checkpoint_path=checkpoint,
                         imagenet_head=True)
    saved = torch.load(checkpoint)
    assert model.imagenet_head.out_features == k
    assert torch.equal(model.imagenet_head.weight, saved["fc.weight"])
    assert torch.equal(model.backbone.conv1[0].weight, saved["conv1.0.weight"])
    assert model.classifier.fc.out_features == 7  # the video classes' head is new

    teacher = tmp_path / "teacher"  # a pretrained teacher fine-tuned first, keeping its K-way head
    train(tiny_config(tiny_corpus, tiny_cache, teacher, "optim.epochs=1", "model.name=tsn",
                      "model.args.backbone=test_resnet", f"model.checkpoint_path={checkpoint}",
                      "model.imagenet_head=true"))
    reloaded = RunDir(teacher).load_model()  # rebuilt without the checkpoint file: the head fits the weights
    assert reloaded.imagenet_head.out_features == k
    assert torch.equal(reloaded.imagenet_head.weight, saved["fc.weight"])  # the head only teaches; not trained
    student = tmp_path / "student"  # distilled through the K-way heads (the seed's ImageNet-head MSE)
    record = train(tiny_config(tiny_corpus, tiny_cache, student, "optim.epochs=1", "model.name=tsn",
                               "model.args.backbone=test_resnet", f"model.checkpoint_path={checkpoint}",
                               "model.imagenet_head=true", f"distill.teacher={teacher}", "distill.kind=imagenet"))
    assert np.isfinite(record["distill_loss"]) and record["distill_loss"] > 0


def test_init_from_resets_only_the_class_head(trained_run, tiny_corpus, tiny_cache, tmp_path):
    source = RunDir(trained_run).load_model().state_dict()
    fewer = create_model("tsn_tiny", num_classes=2)
    fresh_head = fewer.classifier.fc.weight.detach().clone()
    load_weights(fewer, source, reset_class_head=True)
    assert all(torch.equal(fewer.state_dict()[k], v) for k, v in source.items() if not k.startswith("classifier."))
    assert torch.equal(fewer.classifier.fc.weight, fresh_head)
    with pytest.raises(RunError, match="do not fit"):  # without the reset, a head of other classes is an error
        load_weights(create_model("tsn_tiny", num_classes=2), source)

    group = next(iter(RunDir(trained_run).label_map().groups))  # a specialist starts from the general model
    record = train(tiny_config(tiny_corpus, tiny_cache, tmp_path / "specialist", "optim.epochs=1",
                               f"model.init_from={trained_run}", f"data.group={group}"))
    assert np.isfinite(record["train_loss"])


def test_per_module_learning_rates(trained_run, tiny_corpus, tiny_cache, tmp_path):
    before = RunDir(trained_run).load_model().state_dict()
    out = tmp_path / "scaled"
    train(tiny_config(tiny_corpus, tiny_cache, out, "optim.epochs=1", f"model.init_from={trained_run}",
                      "optim.lr_scale={backbone: 0.0}", "optim.warmup_epochs=0"))
    model = RunDir(out).load_model("last")
    after = dict(model.named_parameters())
    assert all(torch.equal(after[k], before[k]) for k in after if k.startswith("backbone."))  # a rate of 0
    assert not torch.equal(after["classifier.fc.weight"], before["classifier.fc.weight"])  # the rest learned


def test_only_an_image_model_pretrains(tiny_corpus, tiny_cache, tmp_path):
    with pytest.raises(ConfigError, match="image model"):
        pretrain_supervised(tiny_config(tiny_corpus, tiny_cache, tmp_path / "x", "model.args.aggregator=nextvlad"))
