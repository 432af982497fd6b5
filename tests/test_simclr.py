"""SimCLR pretraining: NT-Xent against a hand computation, the two views of a video, and a pretrain
on the tiny cache whose backbone loads into a TSN and whose interrupted run resumes to the same
weights."""

import json
import math

import numpy as np
import pytest
import timm
import torch

from shortvid.data.cache import CachedClip, FrameCache
from shortvid.models import create_model
from shortvid.run import RunDir
from shortvid.train.config import ConfigError, load_config
from shortvid.train.simclr import (
    SimCLRAugment,
    SimCLRAugmentConfig,
    SimCLRConfig,
    SimCLRVideos,
    build_simclr_model,
    nt_xent_loss,
    pretrain_simclr,
    view_frames,
)

from conftest import stop_at_checkpoint


def hand_nt_xent(z1, z2, tau):
    """SimCLR's eq. 1 written out: l(i, j) = -log(exp(s_ij / tau) / sum_{k != i} exp(s_ik / tau)),
    averaged over both orders of every pair."""
    views = [np.asarray(v, float) / np.linalg.norm(v) for v in list(z1) + list(z2)]
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        sims = [float(views[i] @ views[k]) / tau for k in range(2 * n)]
        denominator = sum(math.exp(sims[k]) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(sims[j]) / denominator)
    return total / (2 * n)


def test_nt_xent_matches_a_hand_computation_and_its_extremes():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    z2 = torch.tensor([[3.0, 1.0], [-1.0, 1.0], [0.5, -1.0]])
    for tau in (0.1, 0.5, 1.0):
        assert nt_xent_loss(z1, z2, tau).item() == pytest.approx(hand_nt_xent(z1, z2, tau), rel=1e-5)
    # 2 examples, orthogonal views: every similarity is 0 but one's own (excluded) -> log(3).
    assert nt_xent_loss(torch.eye(4)[:2], torch.eye(4)[2:], 0.5).item() == pytest.approx(math.log(3), rel=1e-6)

    z = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
    identical = nt_xent_loss(z, z, 0.05).item()
    assert 0.0 <= identical < 0.01  # the minimum (0) is approached as tau -> 0
    shuffled = nt_xent_loss(z, z.roll(1, dims=0), 0.05).item()  # every partner is another example
    assert shuffled > 10.0
    assert nt_xent_loss(z, z, 0.5).item() < nt_xent_loss(z, z.roll(1, dims=0), 0.5).item()


def test_view_frames_takes_two_distinct_keyframes_when_there_are_two():
    rng = np.random.default_rng(0)
    for _ in range(50):
        first, second = view_frames([0.0, 1.5, 3.0], rng)
        assert first != second
        # A cache filled by repeating keyframes holds duplicates: frames 0 and 1 are one keyframe.
        assert sorted(view_frames([0.0, 0.0, 2.0], rng)) == [0, 2]
    assert view_frames([0.0, 0.0, 0.0], rng) == (0, 0)
    assert view_frames([1.0], rng) == (0, 0)
    pairs = {tuple(sorted(view_frames([0.0, 1.0, 2.0, 3.0], rng))) for _ in range(100)}
    assert len(pairs) == 6  # every pair of keyframes is drawn


class OneFrameCache:
    """A cache holding one video of a single keyframe."""

    def read(self, name):
        frame = np.random.default_rng(1).integers(0, 256, (72, 96, 3), dtype=np.uint8)
        return CachedClip(name, frame[None], (0.0,), (True,), 0.0, 1.0)


def augment(size=48, **overrides):
    return SimCLRAugment(size, SimCLRAugmentConfig(**overrides), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def test_the_two_views_are_two_keyframes_augmented_independently(tiny_cache):
    cache = FrameCache(tiny_cache)
    names = sorted(cache.entries)
    videos = SimCLRVideos(cache, names, augment(), seed=3)
    videos.set_epoch(1)
    distinct_videos = 0
    for index, name in enumerate(names):
        item = videos[index]
        assert item["views"].shape == (2, 3, 48, 48) and item["views"].dtype == torch.float32
        times = cache.read(name).times
        a, b = item["picks"].tolist()
        if len(set(times)) >= 2:
            distinct_videos += 1
            assert times[a] != times[b]
        assert not torch.equal(item["views"][0], item["views"][1])
    assert distinct_videos >= len(names) // 2
    # Seeded by (seed, epoch, index): the same item again, another in the next epoch.
    assert torch.equal(videos[0]["views"], videos[0]["views"])
    videos.set_epoch(2)
    assert not torch.equal(videos[0]["views"], SimCLRVideos(cache, names, augment(), seed=3)[0]["views"])

    # One keyframe: the same frame twice, augmented differently.
    single = SimCLRVideos(OneFrameCache(), ["only"], augment(), seed=0)[0]
    assert single["picks"].tolist() == [0, 0]
    assert not torch.equal(single["views"][0], single["views"][1])
    # Without augmentation (full crop, no flip, jitter, grey or blur) the two views are equal.
    plain = augment(crop_scale=[1.0, 1.0], flip=0.0, color_strength=0.0, grayscale_p=0.0, blur_p=0.0)
    fixed = SimCLRVideos(OneFrameCache(), ["only"], plain, seed=0)[0]
    assert torch.allclose(fixed["views"][0], fixed["views"][1])


def test_augmentation_scales_blur_to_the_crop():
    small, full = augment(64), augment(224)
    assert full.blur_kernel == 23 and full.blur_sigma == pytest.approx((0.1, 2.0))
    assert small.blur_kernel == 7 and small.blur_sigma == pytest.approx((0.1 * 64 / 224, 2.0 * 64 / 224))


def simclr_config(cache, out, *extra):
    return load_config(None, [f"data.cache={cache}", f"out={out}", "model.backbone=test_resnet", "data.input_size=48",
                              "data.batch_size=8", "data.workers=0", "optim.epochs=4", "optim.warmup_epochs=1",
                              "optim.lr=0.003", "progress=false", *extra], schema=SimCLRConfig)


def test_pretrain_writes_a_backbone_a_tsn_loads_and_resumes_after_a_stop(tiny_cache, tmp_path, monkeypatch):
    config = simclr_config(tiny_cache, tmp_path / "simclr")
    assert config.optim.temperature == 0.5 and config.model.projection_dim == 128
    with pytest.raises(ConfigError, match="unknown keys"):
        load_config(None, ["optim.tau=0.1"], schema=SimCLRConfig)
    summary = pretrain_simclr(config)

    out = tmp_path / "simclr"
    written = json.loads((out / "pretrain.json").read_text())
    assert written["method"] == "simclr" and written["backbone"] == "test_resnet" and written["epochs"] == 4
    assert written["videos"] == len(FrameCache(tiny_cache)) and written == summary
    losses = written["losses"]
    assert all(math.isfinite(loss) for loss in losses) and written["final_loss"] == losses[-1]
    assert [m["epoch"] for m in RunDir(out).read_metrics()] == [0, 1, 2, 3]

    # Learning: on fresh views of every video (a seed training never used), the trained model's NT-Xent
    # is below the untrained one's. (Epoch losses are too noisy to compare over 12 steps.)
    torch.manual_seed(config.seed)
    untrained = build_simclr_model(config.model)
    trained_model = build_simclr_model(config.model)
    trained_model.load_state_dict(torch.load(out / "checkpoints" / "last.pt", weights_only=False)["model"])
    fresh = SimCLRVideos(FrameCache(tiny_cache), sorted(FrameCache(tiny_cache).entries), augment(), seed=7)
    views = torch.stack([fresh[i]["views"] for i in range(len(fresh))])
    with torch.no_grad():
        before, after = (nt_xent_loss(*m.train()(torch.cat([views[:, 0], views[:, 1]])).chunk(2), 0.5).item()
                         for m in (untrained, trained_model))
    assert after < before

    # backbone.pth: timm's classifier-less layout, the trained backbone's weights, loadable by a TSN.
    state = torch.load(out / "backbone.pth", weights_only=True)
    assert list(state) == list(timm.create_model("test_resnet", num_classes=0).state_dict())
    trained = torch.load(out / "checkpoints" / "last.pt", weights_only=False)["model"]
    for key, value in state.items():
        assert torch.equal(value, trained[f"backbone.{key}"])
    model = create_model("tsn", backbone="test_resnet", num_classes=3, checkpoint_path=str(out / "backbone.pth"))
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert model(torch.zeros(1, 2, 3, 48, 48)).shape == (1, 3)

    with pytest.raises(ConfigError, match="already holds"):
        pretrain_simclr(config)

    # Stopped right after its first checkpoint (mid-epoch 1 of 3 steps), then resumed: the same weights.
    stopped_out = tmp_path / "stopped"
    stopped = simclr_config(tiny_cache, stopped_out, "checkpoint_every=2")
    stop_at_checkpoint(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        pretrain_simclr(stopped)
    monkeypatch.undo()
    assert torch.load(stopped_out / "checkpoints" / "last.pt", weights_only=False)["state"]["step"] == 2
    resumed = pretrain_simclr(stopped, resume=True)
    assert resumed["losses"] == pytest.approx(losses, rel=1e-5)
    again = torch.load(stopped_out / "backbone.pth", weights_only=True)
    assert all(torch.equal(again[key], state[key]) for key in state)
