"""`distill.cache`: the teacher's backbone features computed once over the frame cache and reused."""

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from shortvid.cli import main
from shortvid.data.annotations import load_dataset
from shortvid.data.cache import FrameCache
from shortvid.data.datasets import CachedVideoDataset
from shortvid.data.transforms import VideoTransform
from shortvid.models import create_model
from shortvid.run import RunDir
from shortvid.train import teacher_cache
from shortvid.train.config import ConfigError
from shortvid.train.teacher import Teacher
from shortvid.train.trainer import train

from conftest import tiny_config


@pytest.fixture(scope="module")
def imagenet_teacher(tiny_corpus, tiny_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache_teacher") / "run"
    train(tiny_config(tiny_corpus, tiny_cache, out, "optim.epochs=1", "model.imagenet_head=true"))
    return out


class BackboneCalls:
    """Counts the frames a model's backbone is run on."""

    def __init__(self):
        self.frames = 0

    def hook(self, module, inputs, output):
        self.frames += inputs[0].shape[0]


@pytest.fixture
def counted_teacher(monkeypatch):
    """Every model `RunDir.load_model` gives (in training: the teacher's) counts its backbone's frames."""
    calls = BackboneCalls()
    load_model = RunDir.load_model

    def counting(self, *args, **kwargs):
        model = load_model(self, *args, **kwargs)
        model.backbone.register_forward_hook(calls.hook)
        return model

    monkeypatch.setattr(RunDir, "load_model", counting)
    return calls


def test_dataset_items_say_which_cached_frames_they_hold(tiny_corpus, tiny_cache):
    cache = FrameCache(tiny_cache)
    dataset = CachedVideoDataset(load_dataset(tiny_corpus, "train"), cache, 3, "train", seed=0)
    item = dataset[0]
    assert item["picks"].dtype == torch.int64 and item["picks"].shape == (3,)
    clip = cache.read(item["name"])
    assert torch.equal(item["frames"], torch.from_numpy(clip.frames[item["picks"].numpy()]))


def test_cached_targets_match_the_uncached_teacher(imagenet_teacher, tiny_corpus, tiny_cache, tmp_path):
    # The student normalises differently from the teacher, so the uncached path re-normalises and
    # the cached one uses the teacher's own statistics: both must give the teacher the same input.
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.3, 0.25)
    train_set = CachedVideoDataset(load_dataset(tiny_corpus, "train"), FrameCache(tiny_cache), 3, "train",
                                   VideoTransform(64, augment=False, mean=mean, std=std), seed=0)
    student = create_model("tsn_tiny", num_classes=len(train_set.annotations.label_map), imagenet_head=True)
    base = [f"distill.teacher={imagenet_teacher}", "distill.kind=imagenet"]
    config = tiny_config(tiny_corpus, tiny_cache, tmp_path / "student", *base)
    cached_config = tiny_config(tiny_corpus, tiny_cache, tmp_path / "student", *base, "distill.cache=true")
    cpu = torch.device("cpu")
    plain = Teacher(str(imagenet_teacher), config, student, mean, std, cpu)
    cached = Teacher(str(imagenet_teacher), cached_config, student, mean, std, cpu, train_set=train_set,
                     store=str(tmp_path / "store"))
    assert cached.computed_features
    total = sum(len(train_set.cache.entries[s.name].offsets) for s in train_set.samples)
    stored = np.load(tmp_path / "store" / teacher_cache.FEATURES, mmap_mode="r")
    assert stored.dtype == np.float16 and stored.shape == (total, plain.model.num_features)

    for epoch in (0, 1):  # different frame picks per epoch
        train_set.set_epoch(epoch)
        for batch in DataLoader(train_set, batch_size=6):
            expected = plain.targets(batch["frames"])
            got = cached.targets(batch["frames"], batch)
            for name in ("logits", "imagenet"):
                scale = expected[name].abs().max().item()
                torch.testing.assert_close(got[name], expected[name], rtol=1e-2, atol=1e-2 * scale)

    again = Teacher(str(imagenet_teacher), cached_config, student, mean, std, cpu, train_set=train_set,
                    store=str(tmp_path / "store"))
    assert not again.computed_features  # read back, not recomputed
    other = tiny_config(tiny_corpus, tiny_cache, tmp_path / "student", *base, "distill.cache=true",
                        "data.input_size=56")
    assert Teacher(str(imagenet_teacher), other, student, mean, std, cpu, train_set=train_set,
                   store=str(tmp_path / "store")).computed_features  # another crop: recomputed


def test_cached_teacher_runs_its_backbone_once_and_not_again_on_resume(trained_run, tiny_corpus, tiny_cache, tmp_path,
                                                                       counted_teacher, monkeypatch):
    per_batch = []
    targets = Teacher.targets

    def checked(self, frames, batch=None):
        before = counted_teacher.frames
        out = targets(self, frames, batch)
        per_batch.append(counted_teacher.frames - before)
        return out

    monkeypatch.setattr(Teacher, "targets", checked)
    out = tmp_path / "student"
    args = [f"distill.teacher={trained_run}", "distill.kind=logits", "distill.cache=true", "distill.weight=2"]
    train(tiny_config(tiny_corpus, tiny_cache, out, "optim.epochs=2", *args))
    frames = np.load(out / teacher_cache.FEATURES, mmap_mode="r").shape[0]
    assert counted_teacher.frames == frames  # every cached frame once, before training
    assert per_batch and not any(per_batch)  # and never during the epochs
    metrics = RunDir(out).read_metrics()
    assert len(metrics) == 2
    assert all(math.isfinite(m["distill_loss"]) and m["distill_loss"] > 0 for m in metrics)
    assert metrics[1]["train_loss"] < metrics[0]["train_loss"]

    counted_teacher.frames, per_batch[:] = 0, []
    train(tiny_config(tiny_corpus, tiny_cache, out, "optim.epochs=3", *args), resume=True)
    assert counted_teacher.frames == 0 and per_batch  # the stored features were read back
    assert len(RunDir(out).read_metrics()) == 3


def test_cached_distillation_from_the_cli(imagenet_teacher, tiny_corpus, tiny_cache, tmp_path, capsys):
    out = tmp_path / "student"
    code = main(["distill", "--teacher", str(imagenet_teacher), "--config", "tiny", f"data.dataset={tiny_corpus}",
                 f"data.cache={tiny_cache}", f"out={out}", "progress=false", "data.batch_size=6", "data.resize=72",
                 "data.input_size=64", "optim.epochs=2", "distill.weight=5", "distill.cache=true"])
    assert code == 0, capsys.readouterr().err
    metrics = RunDir(out).read_metrics()
    assert len(metrics) == 2 and all(math.isfinite(m["distill_loss"]) and m["distill_loss"] > 0 for m in metrics)
    assert (out / teacher_cache.FEATURES).exists() and (out / teacher_cache.INDEX).exists()
    assert RunDir(out).load_model().imagenet_head is not None


def test_cached_teacher_needs_the_frame_cache(trained_run, tiny_corpus, tiny_cache, tmp_path):
    with pytest.raises(ConfigError, match="data.cache"):
        train(tiny_config(tiny_corpus, tiny_cache, tmp_path / "bad", "data.cache=null", "optim.epochs=1",
                          f"distill.teacher={trained_run}", "distill.kind=logits", "distill.cache=true"))
