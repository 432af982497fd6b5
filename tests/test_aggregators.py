"""The aggregation heads (frame features to one video vector): the contract every registered head
keeps (shapes, padding, masks, gradients, frame order), and each head's formula: mean (TSN's consensus),
max pooling, NeXtVLAD, and the YouTube-8M heads NetVLAD, NetFV, DBoF, LSTM and BiGRU."""

import pytest
import torch
import torch.nn.functional as F

from shortvid.models import create_aggregator, create_model, list_aggregators
from shortvid.models.aggregators import NetFV, NetVLAD, NeXtVLAD
from shortvid.train.config import load_config

D = 16
NEW = ["netvlad", "netfv", "dbof", "lstm", "bigru"]
SMALL_ARGS = {
    "netvlad": {"clusters": 4},
    "netfv": {"clusters": 3},
    "dbof": {"clusters": 32, "hidden_size": 24},
    "dbof_mean": {"clusters": 32, "hidden_size": 24, "pool": "mean"},
    "lstm": {"hidden_size": 12},
    "bigru": {"hidden_size": 10},
    "nextvlad": {"clusters": 8, "hidden_size": 32, "groups": 4},
    "mean": {},
    "max": {},
}
OUT_FEATURES = {"netvlad": 4 * D, "netfv": 2 * 3 * D, "dbof": 24, "dbof_mean": 24, "lstm": 12, "bigru": 20,
                "nextvlad": 32, "mean": D, "max": D}
ORDER_FREE = ["mean", "max", "nextvlad", "netvlad", "netfv", "dbof", "dbof_mean"]
ORDER_AWARE = ["lstm", "bigru"]
ALL = ORDER_FREE + ORDER_AWARE


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def make(key: str, train: bool = False):
    name = "dbof" if key == "dbof_mean" else key
    return create_aggregator(name, D, **SMALL_ARGS[key]).train(train)


def lengths_mask(lengths: list[int], frames: int) -> torch.Tensor:
    return torch.arange(frames).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


def fill_padding(x: torch.Tensor, mask: torch.Tensor, fill: float) -> torch.Tensor:
    out = x.clone()
    out[~mask] = fill
    return out


def test_every_registered_head_is_tested():
    assert set(list_aggregators()) == set(ALL) - {"dbof_mean"}
    assert "logistic" not in list_aggregators()  # that is mean + the linear classifier


def test_unknown_name_suggests_registered_ones():
    with pytest.raises(ValueError, match="registered: .*mean"):
        create_aggregator("avg", D)


@pytest.mark.parametrize("key", ALL)
@pytest.mark.parametrize("frames", [1, 2, 3, 8])
def test_output_shapes(key, frames):
    agg = make(key)
    with torch.no_grad():
        out = agg(torch.randn(3, frames, D), torch.ones(3, frames, dtype=torch.bool))
    assert agg.in_features == D and agg.out_features == OUT_FEATURES[key]
    assert out.shape == (3, OUT_FEATURES[key]) and torch.isfinite(out).all()


@pytest.mark.parametrize("key", ALL)
def test_without_a_mask_every_frame_is_valid(key):
    agg = make(key)
    x = torch.randn(2, 3, D)
    with torch.no_grad():
        torch.testing.assert_close(agg(x), agg(x, torch.ones(2, 3, dtype=torch.bool)))


def test_default_sizes_and_projection():
    assert create_aggregator("netvlad", 96).out_features == 32 * 96
    assert create_aggregator("netfv", 96).out_features == 2 * 16 * 96
    assert create_aggregator("dbof", 96).out_features == 512
    assert create_aggregator("lstm", 96).out_features == 512
    assert create_aggregator("bigru", 96).out_features == 1024
    for name in ("netvlad", "netfv"):
        agg = create_aggregator(name, D, clusters=4, hidden_size=20, gating=True).eval()
        assert agg.out_features == 20 and agg(torch.randn(2, 3, D)).shape == (2, 20)
    with pytest.raises(ValueError, match="pool"):
        create_aggregator("dbof", D, pool="sum")


@pytest.mark.parametrize("key", ALL)
@pytest.mark.parametrize("fill", [0.0, 1e6, float("nan"), float("-inf")])
def test_padding_has_no_influence(key, fill):
    """Padded = each video run alone, unpadded, whatever the padding holds."""
    agg = make(key)
    x = torch.randn(3, 8, D)
    lengths = [8, 3, 1]
    mask = lengths_mask(lengths, 8)
    with torch.no_grad():
        out = agg(fill_padding(x, mask, fill), mask)
        alone = torch.cat([agg(x[i:i + 1, :n]) for i, n in enumerate(lengths)])
    torch.testing.assert_close(out, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("key", ALL)
def test_padding_has_no_influence_in_training(key):
    """Training mode too: batch statistics come from valid frames only."""
    agg = make(key, train=True)
    x = torch.randn(3, 5, D)
    mask = lengths_mask([5, 2, 3], 5)
    torch.manual_seed(1)
    first = agg(fill_padding(x, mask, 0.0), mask)
    torch.manual_seed(1)
    second = agg(fill_padding(x, mask, float("nan")), mask)
    torch.testing.assert_close(first, second)


@pytest.mark.parametrize("key", ALL)
def test_holes_in_the_mask_are_skipped(key):
    """Padding need not be at the end: the valid frames, in order, are the video."""
    agg = make(key)
    x = torch.randn(1, 5, D)
    mask = torch.tensor([[False, True, False, True, True]])
    with torch.no_grad():
        out = agg(fill_padding(x, mask, 1e4), mask)
        compact = agg(x[:, mask[0]])
    torch.testing.assert_close(out, compact, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("key", ALL)
def test_gradients_reach_every_parameter(key):
    agg = make(key, train=True)
    x = torch.randn(3, 4, D, requires_grad=True)
    mask = lengths_mask([4, 2, 1], 4)
    out = agg(x, mask)
    (out * torch.randn_like(out)).sum().backward()  # not |out|^2: normalised heads make that constant
    assert x.grad[mask].abs().sum(-1).gt(0).all()  # every valid frame matters
    assert x.grad[~mask].abs().sum() == 0  # no padded frame does
    for name, p in agg.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("key", ORDER_FREE)
def test_order_free_heads_ignore_frame_order(key):
    agg = make(key)
    x = torch.randn(2, 6, D)
    mask = lengths_mask([6, 4], 6)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.no_grad():
        out = agg(x, mask)
        shuffled = agg(x[:, perm], mask[:, perm])
    torch.testing.assert_close(out, shuffled, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("key", ORDER_AWARE)
def test_recurrent_heads_see_frame_order(key):
    agg = make(key)
    x = torch.randn(2, 4, D)
    mask = lengths_mask([4, 3], 4)
    reversed_ = x.clone()
    reversed_[0] = x[0].flip(0)
    reversed_[1, :3] = x[1, :3].flip(0)
    with torch.no_grad():
        out, back = agg(x, mask), agg(reversed_, mask)
    assert (out - back).abs().amax(-1).gt(1e-4).all()


@pytest.mark.parametrize("key", ALL)
def test_video_without_valid_frames_is_finite(key):
    agg = make(key, train=True)
    x = torch.randn(3, 4, D, requires_grad=True)
    mask = lengths_mask([4, 0, 2], 4)
    out = agg(fill_padding(x, mask, float("nan")), mask)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in agg.parameters())
    if key in ("netvlad", "netfv", "lstm", "bigru", "mean"):
        assert out[1].abs().sum() == 0
    with torch.no_grad():
        empty = agg.eval()(torch.randn(2, 3, D), torch.zeros(2, 3, dtype=torch.bool))
    assert torch.isfinite(empty).all()


def test_mean_is_tsn_consensus():
    x = torch.randn(2, 3, D)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    out = make("mean")(x, mask)
    torch.testing.assert_close(out, torch.stack([x[0, :2].mean(0), x[1, 0]]))


def test_nextvlad_dimensions():
    agg = create_aggregator("nextvlad", 96, expansion=2, groups=8, clusters=16, hidden_size=40)
    assert isinstance(agg, NeXtVLAD)
    assert agg.group_features == 2 * 96 // 8
    assert agg.vlad_features == 16 * 24 and agg.reduce.in_features == 16 * 24
    assert agg.out_features == 40
    with pytest.raises(ValueError, match="divisible"):
        create_aggregator("nextvlad", 10, expansion=1, groups=4)


def test_nextvlad_is_not_a_function_of_the_mean():
    """Two videos with the same mean frame: mean pooling cannot tell them apart, NeXtVLAD can."""
    a = torch.randn(1, 2, D)
    b = torch.stack([a.mean(1), a.mean(1)], 1)
    x = torch.cat([a, b])
    mean = make("mean")(x)
    torch.testing.assert_close(mean[0], mean[1])
    with torch.no_grad():
        vlad = make("nextvlad")(x)
    assert (vlad[0] - vlad[1]).abs().max() > 1e-3


def test_netvlad_is_the_vlad_formula():
    agg = make("netvlad")
    assert isinstance(agg, NetVLAD)
    x = torch.randn(1, 3, D)
    with torch.no_grad():
        a = agg.assignment(x[0]).softmax(-1)  # [T, K]
        vlad = torch.stack([(a[:, k:k + 1] * (x[0] - agg.centres[k])).sum(0) for k in range(4)])
        expected = F.normalize(F.normalize(vlad, dim=-1).flatten(), dim=0)
        torch.testing.assert_close(agg(x)[0], expected)


def test_netfv_is_the_fisher_vector_formula():
    agg = make("netfv")
    assert isinstance(agg, NetFV)
    with torch.no_grad():
        agg.log_scales.normal_(0, 0.3)
    x = torch.randn(1, 3, D)
    with torch.no_grad():
        a = agg.assignment(x[0]).softmax(-1)
        sigma = agg.log_scales.exp()
        first, second = [], []
        for k in range(3):
            r = (x[0] - agg.centres[k]) / sigma[k]
            first.append((a[:, k:k + 1] * r).sum(0))
            second.append((a[:, k:k + 1] * (r ** 2 - 1)).sum(0))

        def norm(v):
            return F.normalize(F.normalize(torch.stack(v), dim=-1).flatten(), dim=0)

        torch.testing.assert_close(agg(x)[0], torch.cat([norm(first), norm(second)]))


def test_dbof_pools_as_asked():
    x = torch.randn(2, 3, D)
    mean, maxed = make("dbof_mean"), make("dbof")
    maxed.load_state_dict(mean.state_dict())
    with torch.no_grad():
        frames = F.relu(mean.frame_norm(mean.frame_fc(x.flatten(0, 1)))).view(2, 3, -1)
        torch.testing.assert_close(mean(x), F.relu(mean.hidden_norm(mean.hidden(frames.mean(1)))))
        torch.testing.assert_close(maxed(x), F.relu(mean.hidden_norm(mean.hidden(frames.amax(1)))))


@pytest.mark.parametrize("key", ORDER_AWARE)
def test_recurrent_heads_are_the_final_states(key):
    agg = make(key)
    x = torch.randn(1, 3, D)
    mask = torch.tensor([[True, True, False]])
    with torch.no_grad():
        outputs, _ = agg.rnn(x[:, :2])
        hidden = agg.rnn.hidden_size
        if key == "lstm":
            expected = outputs[0, -1]  # after the last valid frame
        else:  # forward after the last valid frame, backward after the first
            expected = torch.cat([outputs[0, -1, :hidden], outputs[0, 0, hidden:]])
        torch.testing.assert_close(agg(fill_padding(x, mask, 1e4), mask)[0], expected)


@pytest.mark.parametrize("key", NEW + ["dbof_mean"])
def test_tsn_tiny_trains_end_to_end(key):
    name = "dbof" if key == "dbof_mean" else key
    args = {k: v for k, v in SMALL_ARGS[key].items()}
    model = create_model("tsn_tiny", num_classes=5, aggregator=name, aggregator_args=args).train()
    assert model.aggregator.in_features == 96 and model.classifier.in_features == model.aggregator.out_features
    frames = torch.randn(2, 3, 3, 32, 32)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    target = torch.tensor([[1.0, 0, 0, 1, 0], [0, 1, 0, 0, 0]])
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    logits = model(frames, mask)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    loss = F.binary_cross_entropy_with_logits(logits, target)
    loss.backward()
    for part in (model.backbone, model.aggregator, model.classifier):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(g.abs().sum() for g in grads) > 0
    before = [p.detach().clone() for p in model.aggregator.parameters()]
    optimiser.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.aggregator.parameters(), strict=True))
    with torch.no_grad():
        model.eval()
        assert model(frames, mask).shape == (2, 5)
        assert model(frames[:1, :1]).shape == (1, 5)  # one model for every frame count


def test_config_override_syntax_from_the_docs():
    config = load_config(None, ["model.args.aggregator=netvlad", "model.args.aggregator_args={clusters: 32}"])
    assert config.model.args == {"aggregator": "netvlad", "aggregator_args": {"clusters": 32}}
