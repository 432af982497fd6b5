"""Models: registries, classifiers, the video classifier and backbone weight loading (the aggregation
heads: test_aggregators.py)."""

import logging

import pytest
import timm
import torch
import torch.nn.functional as F

from shortvid.models import (
    CheckpointError,
    ServableModel,
    VideoClassifier,
    create_aggregator,
    create_classifier,
    create_model,
    list_aggregators,
    list_classifiers,
    list_models,
)
from shortvid.models.classifiers import MixtureOfExperts
from shortvid.models.registry import Registry
from shortvid.run import RunDir, load_weights

B, T, SIZE, D = 2, 3, 64, 16
AGGREGATOR_ARGS = {"nextvlad": {"clusters": 8, "hidden_size": 32, "groups": 4}}
CHEAP_BACKBONE_PARAMS = 6_000_000  # run forward only on backbones at most this big


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def frames(batch: int = B, count: int = T, size: int = SIZE) -> torch.Tensor:
    return torch.randn(batch, count, 3, size, size)


def tiny(**overrides) -> VideoClassifier:
    return create_model("tsn_tiny", num_classes=5, **overrides)


def first_conv(model: VideoClassifier) -> torch.Tensor:
    return next(p for p in model.backbone.parameters() if p.dim() == 4)


def padded(x: torch.Tensor, lengths: list[int], fill: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` [B, T, ...] with frames past each length replaced by ``fill``, plus the mask."""
    mask = torch.arange(x.shape[1]).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    out = x.clone()
    out[~mask] = fill
    return out, mask


# Registries

def test_registered_names():
    assert {"tsn", "tsn_resnet34", "tsn_resnet50", "tsn_resnet101", "tsn_mobilenetv3",
            "tsn_nextvlad_resnet50", "tsn_tiny"} <= set(list_models())
    assert {"mean", "nextvlad"} <= set(list_aggregators())
    assert {"linear", "moe"} <= set(list_classifiers())


def test_unknown_name_suggests_close_ones():
    with pytest.raises(ValueError, match="tsn_tiny"):
        create_model("tsn_tin", num_classes=3)
    with pytest.raises(ValueError, match="registered: .*mean"):
        create_aggregator("avg", D)


def test_registry_decorator_forms_and_duplicates():
    reg = Registry("thing")

    @reg.register
    def plain():
        return 1

    @reg.register("named")
    def other():
        return 2

    assert reg.names() == ["named", "plain"] and reg.get("named") is other
    with pytest.raises(ValueError, match="already registered"):
        reg.register("plain")(other)


# Classifiers

@pytest.mark.parametrize("name", list_classifiers())
def test_classifier_shapes_gradients_and_reset(name):
    head = create_classifier(name, D, 7)
    x = torch.randn(B, D, requires_grad=True)
    logits = head(x)
    assert logits.shape == (B, 7) and torch.isfinite(logits).all()
    F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)).backward()
    assert x.grad.abs().sum() > 0 and all(p.grad is not None for p in head.parameters())
    head.reset_classifier(3)
    assert head(x).shape == (B, 3) and head.num_classes == 3


def test_moe_logits_are_the_mixture_probability():
    head = create_classifier("moe", D, 4, num_experts=3)
    assert isinstance(head, MixtureOfExperts)
    x = torch.randn(B, D)
    gates = head.gates(x).view(B, 4, 4).softmax(-1)
    experts = torch.sigmoid(head.experts(x).view(B, 4, 3))
    probability = (gates[..., :3] * experts).sum(-1)
    torch.testing.assert_close(torch.sigmoid(head(x)), probability)


def test_moe_is_stable_on_extreme_inputs():
    head = create_classifier("moe", D, 4)
    x = torch.randn(B, D, requires_grad=True)
    logits = head(x * 1e4)
    F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)).backward()
    assert torch.isfinite(logits).all() and torch.isfinite(x.grad).all()


# Video classifier

# composites: the contract test, test_fusion.py
@pytest.mark.parametrize("name", [name for name in list_models() if name not in ("fused", "by_frame_count")])
def test_every_registered_model_builds(name):
    model = create_model(name, num_classes=5)
    assert isinstance(model, VideoClassifier)
    assert model.config == {"name": name, "num_classes": 5}
    assert model.aggregator.in_features == model.num_features
    assert model.classifier.in_features == model.aggregator.out_features
    if sum(p.numel() for p in model.backbone.parameters()) > CHEAP_BACKBONE_PARAMS:
        return
    with torch.no_grad():
        logits = model.eval()(frames(1, 2))
    assert logits.shape == (1, 5) and torch.isfinite(logits).all()


def test_forward_all_outputs():
    model = tiny(imagenet_head=True).eval()
    x, mask = padded(frames(), [3, 2], 0.0)
    with torch.no_grad():
        out = model.forward_all(x, mask)
        per_frame = model.imagenet_head(model.backbone(x[1, :2]))
    assert out["logits"].shape == (B, 5)
    assert out["features"].shape == (B, T, model.num_features) == (B, T, 96)
    assert out["imagenet"].shape == (B, 1000)
    torch.testing.assert_close(out["imagenet"][1], per_frame.mean(0), rtol=1e-4, atol=1e-5)
    assert out["features"][1, 2].abs().sum() == 0  # the padded frame was never computed
    torch.testing.assert_close(out["logits"], model(x, mask))
    assert "imagenet" not in tiny().forward_all(x, mask)


@pytest.mark.parametrize("train", [False, True])
def test_padded_frames_do_not_change_the_output(train):
    model = tiny(aggregator="nextvlad", aggregator_args=AGGREGATOR_ARGS["nextvlad"]).train(train)
    x = frames(B, 4)
    lengths = [4, 2]
    with torch.no_grad():
        first = model(*padded(x, lengths, 0.0))
        second = model(*padded(x, lengths, 5.0))
    torch.testing.assert_close(first, second)
    if not train:
        with torch.no_grad():
            alone = model(x[1:, :2])
        torch.testing.assert_close(first[1:], alone, rtol=1e-4, atol=1e-5)


def test_gradients_reach_every_part():
    model = tiny(imagenet_head=True, classifier="moe").train()
    x, mask = padded(frames(), [3, 1], 0.0)
    out = model.forward_all(x, mask)
    loss = F.binary_cross_entropy_with_logits(out["logits"], torch.zeros(B, 5)) + out["imagenet"].square().mean()
    loss.backward()
    for part in (model.backbone, model.aggregator, model.classifier, model.imagenet_head):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert all(g is not None for g in grads)
    assert first_conv(model).grad.abs().sum() > 0


def test_channels_last():
    model = tiny().eval()
    assert first_conv(model).is_contiguous(memory_format=torch.channels_last)
    x = frames()
    with torch.no_grad():
        plain = model(x)
        cl = model(x.flatten(0, 1).contiguous(memory_format=torch.channels_last).view_as(x))
    torch.testing.assert_close(plain, cl)


def test_reset_classifier():
    model = tiny(classifier="moe")
    model.reset_classifier(11)
    assert model.num_classes == 11 and model.config["num_classes"] == 11
    assert model(frames()).shape == (B, 11)
    rebuilt = create_model(**model.config)
    rebuilt.load_state_dict(model.state_dict())


def test_overrides_reach_the_parts():
    model = tiny(dropout=0.3, classifier_args={"num_experts": 3}, classifier="moe",
                 backbone_args={"drop_path_rate": 0.1})
    assert model.classifier.dropout.p == 0.3 and model.classifier.num_experts == 3
    assert tiny(dropout=0.3, classifier_args={"dropout": 0.1}).classifier.dropout.p == 0.1
    assert create_model("tsn", num_classes=2, backbone="test_efficientnet").num_features == 256
    with pytest.raises(TypeError):
        tiny(no_such_option=1)
    with pytest.raises(ValueError, match="num_classes"):
        tiny(backbone_args={"num_classes": 10})


def test_config_round_trip():
    overrides = {"aggregator": "nextvlad", "aggregator_args": dict(AGGREGATOR_ARGS["nextvlad"]),
                 "classifier": "moe", "imagenet_head": True}
    model = tiny(**overrides).eval()
    overrides["aggregator_args"]["clusters"] = 99  # the config is a copy, not a view
    assert model.config["aggregator_args"]["clusters"] == 8
    rebuilt = create_model(**model.config).eval()
    rebuilt.load_state_dict(model.state_dict())
    x = frames()
    with torch.no_grad():
        for key, value in model.forward_all(x).items():
            torch.testing.assert_close(rebuilt.forward_all(x)[key], value)


def test_data_config_comes_from_timm():
    config = tiny().data_config
    assert config["input_size"][0] == 3 and len(config["mean"]) == 3 and len(config["std"]) == 3


# The contract every registered model honours (shortvid.models.contract), timm-style over the registry

CLASSES = 5
TINY_MEMBER = {"name": "tsn_tiny", "num_classes": CLASSES}
SMALL = {  # how each composite is built small; every other registered model takes a tiny backbone
    "fused": {"general": {"model": TINY_MEMBER, "scores": "sigmoid"},
              "specialists": [{"model": {**TINY_MEMBER, "num_classes": 2}, "scores": "softmax", "classes": [3, 1],
                               "scale": [0.5, 1.0, 2.0], "shift": [0.1, 0.0, -0.1]}]},
    "by_frame_count": {"members": {"1": TINY_MEMBER, "3": {**TINY_MEMBER, "aggregator": "max"}}},
}
SMALL_BACKBONE = {"backbone": "test_resnet"}


def small(name: str):
    kwargs = SMALL.get(name, SMALL_BACKBONE)
    try:
        return create_model(name, num_classes=CLASSES, **kwargs)
    except TypeError as error:
        pytest.fail(f"{name}: add how to build it small to SMALL in tests/test_models.py ({error})")


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_honours_the_contract(name, tmp_path):
    model = small(name).eval()
    assert isinstance(model, ServableModel)
    assert model.num_classes == CLASSES and model.config["name"] == name
    assert model.config["num_classes"] == CLASSES
    assert {"mean", "std", "input_size"} <= set(model.data_config)
    x = frames(B, 4)
    with torch.no_grad():
        logits = model(x)
        masked = model(x, torch.ones(B, 4, dtype=torch.bool))
        padded_zero = model(*padded(x, [4, 2], 0.0))
        padded_five = model(*padded(x, [4, 2], 5.0))
        alone = model(x[1:, :2])
        outputs = model.forward_all(x)
    assert logits.shape == padded_zero.shape == (B, CLASSES) and torch.isfinite(logits).all()
    torch.testing.assert_close(masked, logits)  # no mask: every frame is real
    torch.testing.assert_close(padded_zero, padded_five)  # masked frames' values never matter
    torch.testing.assert_close(padded_zero[1:], alone, rtol=1e-4, atol=1e-5)  # as if unpadded
    torch.testing.assert_close(outputs["logits"], logits)
    assert model.imagenet_head is None or isinstance(model.imagenet_head, torch.nn.Module)

    # Rebuilt from its config, as the run directory does: the same model.
    rebuilt = create_model(**model.config).eval()
    load_weights(rebuilt, model.state_dict())
    run = RunDir(tmp_path)
    run.save_checkpoint({"model_config": model.config, "model": model.state_dict()}, run.best)
    loaded = run.load_model()
    assert isinstance(loaded, ServableModel) and type(loaded) is type(model) and loaded.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), logits)
        torch.testing.assert_close(loaded(x), logits)


# Backbone weights

@pytest.fixture
def timm_checkpoint(tmp_path):
    """A whole test_resnet (ImageNet classifier included), seeded, saved as a state dict."""
    torch.manual_seed(1234)
    state = timm.create_model("test_resnet").state_dict()
    path = tmp_path / "test_resnet.pth"
    torch.save(state, path)
    return path, state


def assert_backbone_equals(model: VideoClassifier, state: dict) -> None:
    loaded = model.backbone.state_dict()
    backbone_keys = [k for k in state if not k.startswith("fc.")]
    assert set(backbone_keys) == set(loaded)
    for key in backbone_keys:
        assert torch.equal(loaded[key], state[key]), key


def test_checkpoint_loads_backbone_and_imagenet_head(timm_checkpoint):
    path, state = timm_checkpoint
    model = tiny(checkpoint_path=path, imagenet_head=True)
    assert_backbone_equals(model, state)
    assert torch.equal(model.imagenet_head.weight, state["fc.weight"])
    assert torch.equal(model.imagenet_head.bias, state["fc.bias"])
    assert model.classifier.fc.weight.shape == (5, 96)  # the class head is new
    assert "checkpoint_path" not in model.config


def test_checkpoint_without_classifier(timm_checkpoint, tmp_path, caplog):
    _, state = timm_checkpoint
    headless = {k: v for k, v in state.items() if not k.startswith("fc.")}
    path = tmp_path / "headless.pth"
    torch.save(headless, path)
    assert_backbone_equals(tiny(checkpoint_path=path), state)
    with caplog.at_level(logging.WARNING, logger="shortvid.models.backbones"):
        model = tiny(checkpoint_path=path, imagenet_head=True)
    assert "no ImageNet classifier" in caplog.text
    assert_backbone_equals(model, state)
    assert model.imagenet_head.weight.shape == (1000, 96)


def test_checkpoint_wrapped_and_prefixed(timm_checkpoint, tmp_path):
    _, state = timm_checkpoint
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    model = tiny(checkpoint_path=str(path), imagenet_head=True)
    assert_backbone_equals(model, state)
    assert torch.equal(model.imagenet_head.weight, state["fc.weight"])


def test_checkpoint_with_another_class_count_keeps_its_head(timm_checkpoint, tmp_path):
    """A `shortvid pretrain` backbone has a K-way head: it becomes the "ImageNet head", not dropped."""
    _, state = timm_checkpoint
    path = tmp_path / "finetuned.pth"
    head = torch.randn(63, 96)
    torch.save({**state, "fc.weight": head, "fc.bias": torch.zeros(63)}, path)
    model = tiny(checkpoint_path=path, imagenet_head=True)
    assert_backbone_equals(model, state)
    assert torch.equal(model.imagenet_head.weight, head)


def test_torchvision_resnet_state_dict(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18_torchvision.pth"
    torch.save(state, path)
    model = create_model("tsn", backbone="resnet18", num_classes=63, checkpoint_path=path, imagenet_head=True)
    assert_backbone_equals(model, state)
    assert torch.equal(model.imagenet_head.weight, state["fc.weight"])


def test_bad_checkpoints_raise_typed_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        tiny(checkpoint_path=tmp_path / "missing.pth")
    other = tmp_path / "other.pth"
    torch.save(timm.create_model("test_efficientnet").state_dict(), other)
    with pytest.raises(CheckpointError, match=str(other)):
        tiny(checkpoint_path=other)
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in timm.create_model("test_resnet").state_dict().items() if "layer4" not in k}, partial)
    with pytest.raises(CheckpointError, match="missing"):
        tiny(checkpoint_path=partial)


def test_checkpoint_path_never_downloads(timm_checkpoint, monkeypatch):
    path, state = timm_checkpoint
    real = timm.create_model

    def offline(*args, pretrained=False, **kwargs):
        assert not pretrained, "must not fetch hub weights"
        return real(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    assert_backbone_equals(tiny(pretrained=True, checkpoint_path=path), state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_forward_and_reset():
    model = tiny(imagenet_head=True, aggregator="nextvlad", aggregator_args=AGGREGATOR_ARGS["nextvlad"]).cuda()
    x, mask = padded(frames(), [3, 1], 0.0)
    out = model.forward_all(x.cuda(), mask.cuda())
    out["logits"].sum().backward()
    model.reset_classifier(7)
    assert model(x.cuda(), mask.cuda()).shape == (B, 7)
