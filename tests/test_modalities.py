"""Motion and sound in the models (issue 21): the encoders, the modality fusions, ``VideoClassifier``'s extra
inputs, the composites, ONNX export with the extra inputs, the backends and int8 of such a graph."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shortvid.data.annotations import load_dataset
from shortvid.decode import AudioSpec, FrameSpec
from shortvid.decode.scaling import rgb_difference
from shortvid.export import ExportError, export_model, graph_inputs
from shortvid.infer.backends import OnnxBackend, TorchBackend
from shortvid.infer.classifier import Classifier
from shortvid.models import (
    INPUT_NAMES,
    AudioEncoder,
    MotionEncoder,
    ServableModel,
    VideoClassifier,
    create_aggregator,
    create_classifier,
    create_fusion,
    create_model,
    list_fusions,
    model_inputs,
)
from shortvid.models.backbones import create_backbone
from shortvid.models.inputs import ordered
from shortvid.quantize import calibration_inputs, quantize_onnx, quantize_run
from shortvid.run import Preprocess, RunDir, load_weights

from conftest import shared

B, T, M, SIZE, MELS, N = 3, 4, 2, 32, 64, 24
TINY = {"backbone": "test_resnet"}
CLASSES = 5
ATOL = 1e-4


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def av_model(motion: int = M, audio: bool = True, **overrides) -> VideoClassifier:
    """``tsn_tiny`` with tiny motion and audio encoders."""
    extra = {}
    if motion:
        extra.update(motion=motion, motion_args=dict(TINY))
    if audio:
        extra.update(audio=True, audio_args=dict(TINY))
    return create_model("tsn_tiny", num_classes=CLASSES, **extra, **overrides)


def inputs(batch: int = B, frames: int = T, motion: int = M, audio_frames: int = N, seed: int = 1) -> dict:
    """A batch of every model input, ``audio_mask`` mixed (the second video has no sound)."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "frames": torch.randn(batch, frames, 3, SIZE, SIZE, generator=generator),
        "motion": torch.randn(batch, frames, motion, 3, SIZE, SIZE, generator=generator),
        "audio": torch.randn(batch, MELS, audio_frames, generator=generator) * 5 - 10,
        "audio_mask": torch.tensor([True, False, True, True][:batch]),
    }


def logits(model, batch: dict, mask=None) -> torch.Tensor:
    with torch.no_grad():
        return model(batch["frames"], mask, **model_inputs(model, batch))


def padded(batch: dict, lengths: list[int], fill: float) -> tuple[dict, torch.Tensor]:
    """``batch`` with frames and motion frames past each video's length replaced by ``fill``, and the mask."""
    mask = torch.arange(batch["frames"].shape[1]).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    out = dict(batch)
    for name in ("frames", "motion"):
        out[name] = batch[name].clone()
        out[name][~mask] = fill
    return out, mask


# The inputs' names

def test_model_inputs_picks_what_the_model_takes():
    batch = inputs()
    assert av_model().inputs == INPUT_NAMES == ("motion", "audio", "audio_mask")
    assert av_model(audio=False).inputs == ("motion",) and av_model(motion=0).inputs == ("audio", "audio_mask")
    assert model_inputs(create_model("tsn_tiny", num_classes=2), batch) == {}
    assert model_inputs(torch.nn.Linear(2, 2), batch) == {}  # no `inputs` attribute: takes none
    picked = model_inputs(av_model(motion=0), batch, "cpu")
    assert list(picked) == ["audio", "audio_mask"] and picked["audio"] is batch["audio"]
    with pytest.raises(ValueError, match=r"takes motion, audio, audio_mask .*no audio_mask"):
        model_inputs(av_model(), {k: v for k, v in batch.items() if k != "audio_mask"})
    assert ordered(["audio_mask", "motion", "audio", "motion"]) == INPUT_NAMES
    with pytest.raises(ValueError, match="unknown model inputs depth"):
        ordered(["depth"])


def test_a_missing_input_is_a_clear_error():
    model = av_model().eval()
    batch = inputs()
    with pytest.raises(ValueError, match="takes motion, audio, audio_mask besides frames .*not given motion"):
        model(batch["frames"], audio=batch["audio"], audio_mask=batch["audio_mask"])
    with pytest.raises(ValueError, match="not given audio, audio_mask"):
        model(batch["frames"], motion=batch["motion"])
    with pytest.raises(ValueError, match=r"motion must be \[B, T, M=2"):
        model(batch["frames"], motion=batch["motion"][:, :, :1], audio=batch["audio"], audio_mask=batch["audio_mask"])
    with pytest.raises(ValueError, match="audio must be"):
        model(**{**batch, "audio": batch["audio"][:, :10]})
    # inputs a model does not take are ignored, so a caller may pass a whole prepared batch
    keyframes_only = create_model("tsn_tiny", num_classes=CLASSES).eval()
    with torch.no_grad():
        torch.testing.assert_close(keyframes_only(**batch), keyframes_only(batch["frames"]))


# Motion

def test_rgb_difference_matches_the_decoders():
    """At full size the encoder's differences are ``decode.scaling.rgb_difference``'s, channel by channel."""
    generator = np.random.default_rng(0)
    keyframe = generator.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    following = generator.integers(0, 256, (2, M, 8, 8, 3), dtype=np.uint8)
    expected = rgb_difference(keyframe, following)  # [2, M, H, W, 3]
    encoder = MotionEncoder(M, "test_resnet", scale=1.0)
    as_input = lambda x: torch.from_numpy(x).float().movedim(-1, -3)  # noqa: E731
    got = encoder.differences(as_input(keyframe), as_input(following))  # [2, 3M, H, W]
    assert got.shape == (2, 3 * M, 8, 8)
    torch.testing.assert_close(got, as_input(expected.astype(np.float32)).flatten(1, 2))


def test_motion_is_pooled_to_scale():
    encoder = MotionEncoder(M, "test_resnet", scale=0.5)
    frames, motion = torch.randn(2, 3, 16, 16), torch.randn(2, M, 3, 16, 16)
    full = MotionEncoder(M, "test_resnet", scale=1.0).differences(frames, motion)
    torch.testing.assert_close(encoder.differences(frames, motion), F.avg_pool2d(full, 2))
    assert MotionEncoder(1, "test_resnet", scale=0.25).differences(frames, motion[:, :1]).shape == (2, 3, 4, 4)
    for scale in (0.3, 0.0, 2.0):
        with pytest.raises(ValueError, match="motion scale must be 1/n"):
            MotionEncoder(M, "test_resnet", scale=scale)
    with pytest.raises(ValueError, match="at least one motion frame"):
        MotionEncoder(0, "test_resnet")


def test_still_video_gives_zero_differences():
    """Motion frames equal to their keyframe: without the keyframe's own channels, the embedding of all-zero
    differences, whatever the frames hold."""
    encoder = MotionEncoder(M, "test_resnet", keyframe=False).eval()
    frames = torch.randn(2, T, 3, SIZE, SIZE)
    still = frames.unsqueeze(2).expand(-1, -1, M, -1, -1, -1)
    with torch.no_grad():
        embedded = encoder(frames, still)
        zeros = encoder.backbone(torch.zeros(1, 3 * M, SIZE // 2, SIZE // 2))
        moving = encoder(frames, still + 0.5 * torch.randn_like(still))
    assert embedded.shape == (2, encoder.out_features)
    torch.testing.assert_close(embedded, zeros.expand(2, -1))
    assert (moving - embedded).abs().max() > 1e-3


def test_the_keyframe_tells_which_side_of_a_moving_edge_is_the_object():
    """A light bar moving right and a dark bar moving left change the same pixels by the same amounts: equal
    differences. Only with the keyframe's channels (the default) does the encoder tell them apart."""
    light = torch.zeros(1, 1, 3, 8, 8)
    light[..., 2:4] = 1.0  # a light bar at columns 2-3 on dark
    light_moved = torch.zeros(1, 1, 1, 3, 8, 8)
    light_moved[..., 3:5] = 1.0  # one column to the right
    dark, dark_moved = 1.0 - light_moved[:, :, 0], 1.0 - light.unsqueeze(2)  # dark bar at 3-4, then at 2-3
    with_keyframe, differences_only = MotionEncoder(1, "test_resnet", scale=1.0).eval(), \
        MotionEncoder(1, "test_resnet", scale=1.0, keyframe=False).eval()
    torch.testing.assert_close(differences_only.differences(light[0], light_moved[0]),
                               differences_only.differences(dark[0], dark_moved[0]))
    stacked = with_keyframe.stacked(light[0], light_moved[0])
    assert stacked.shape == (1, 6, 8, 8)
    torch.testing.assert_close(stacked[:, :3], light[0])
    torch.testing.assert_close(stacked[:, 3:], with_keyframe.differences(light[0], light_moved[0]))
    with torch.no_grad():
        torch.testing.assert_close(differences_only(light, light_moved), differences_only(dark, dark_moved))
        assert (with_keyframe(light, light_moved) - with_keyframe(dark, dark_moved)).abs().max() > 1e-4
    first_conv = next(m for m in with_keyframe.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 6


def test_masked_frames_never_reach_the_motion_encoder():
    encoder = MotionEncoder(M, "test_resnet").eval()
    batch = inputs()
    lengths = [4, 2, 1]
    first, mask = padded(batch, lengths, 0.0)
    second, _ = padded(batch, lengths, float("nan"))
    with torch.no_grad():
        out = encoder(first["frames"], first["motion"], mask)
        torch.testing.assert_close(encoder(second["frames"], second["motion"], mask), out)
        alone = encoder(batch["frames"][1:2, :2], batch["motion"][1:2, :2])
        empty = encoder(batch["frames"], batch["motion"], torch.zeros(B, T, dtype=torch.bool))
    torch.testing.assert_close(out[1:2], alone, rtol=1e-4, atol=1e-5)
    assert empty.abs().sum() == 0  # no valid frame: zero, like masked_mean


# Sound

def test_audio_mask_gives_the_learned_no_sound_vector():
    encoder = AudioEncoder(MELS, "test_resnet").eval()
    batch = inputs()
    with torch.no_grad():
        out = encoder(batch["audio"], batch["audio_mask"])
        changed = encoder(batch["audio"] * 0 + float("nan"), torch.zeros(B, dtype=torch.bool))
        alone = encoder(batch["audio"][2:], batch["audio_mask"][2:])
    assert out.shape == (B, encoder.out_features) and torch.isfinite(out).all()
    torch.testing.assert_close(out[1], encoder.no_sound.detach())
    torch.testing.assert_close(changed, encoder.no_sound.detach().expand(B, -1))
    torch.testing.assert_close(out[2:], alone)
    assert (out[0] - out[1]).abs().max() > 1e-3


def test_changing_the_audio_of_a_video_without_sound_does_not_change_its_logits():
    model = av_model().eval()
    batch = inputs()
    other = dict(batch, audio=batch["audio"].clone())
    other["audio"][1] = torch.randn(MELS, N) * 20
    first, second = logits(model, batch), logits(model, other)
    torch.testing.assert_close(first, second)
    other["audio"][0] += 3.0  # a video with sound: its audio matters
    assert (logits(model, other)[0] - first[0]).abs().max() > 1e-4


def test_no_sound_is_learned_and_silent_videos_do_not_move_the_batch_norm():
    encoder = AudioEncoder(MELS, "test_resnet").train()
    batch = inputs()
    encoder(batch["audio"], batch["audio_mask"]).sum().backward()
    assert encoder.no_sound.grad is not None and encoder.no_sound.grad.abs().sum() > 0
    heard = AudioEncoder(MELS, "test_resnet").train()
    heard.load_state_dict(AudioEncoder(MELS, "test_resnet").state_dict())
    encoder.load_state_dict(heard.state_dict())
    encoder(batch["audio"], batch["audio_mask"])
    heard(batch["audio"][batch["audio_mask"]], torch.ones(2, dtype=torch.bool))
    torch.testing.assert_close(encoder.norm.running_mean, heard.norm.running_mean)


@pytest.mark.parametrize("frames", [1, 3, 23, 198])
def test_audio_of_any_length(frames):
    encoder = AudioEncoder(MELS, "test_resnet").eval()
    with torch.no_grad():
        out = encoder(torch.randn(2, MELS, frames), torch.ones(2, dtype=torch.bool))
    assert out.shape == (2, encoder.out_features) and torch.isfinite(out).all()


# Fusions

@pytest.mark.parametrize("name", list_fusions())
@pytest.mark.parametrize("dims", [{"visual": 12, "audio": 8}, {"visual": 12, "motion": 6, "audio": 8}])
def test_every_fusion(name, dims):
    fusion = create_fusion(name, dims)
    embeddings = {modality: torch.randn(B, width, requires_grad=True) for modality, width in dims.items()}
    out = fusion(embeddings)
    assert out.shape == (B, fusion.out_features) and torch.isfinite(out).all()
    out.square().sum().backward()
    assert all(x.grad.abs().sum() > 0 for x in embeddings.values())
    assert all(p.grad is not None for p in fusion.parameters())
    with pytest.raises(ValueError, match="fuses"):
        fusion({k: v for k, v in embeddings.items() if k != "audio"})
    reordered = dict(reversed(list(embeddings.items())))  # fused by name, not by position
    torch.testing.assert_close(fusion(reordered), out)


def test_fusion_details():
    dims = {"visual": 12, "motion": 6, "audio": 8}
    assert {"concat", "gate", "attention"} <= set(list_fusions())
    assert create_fusion("concat", dims).out_features == create_fusion("gate", dims).out_features == 26
    attention = create_fusion("attention", dims, width=16, hidden=4)
    embeddings = {modality: torch.randn(B, width) for modality, width in dims.items()}
    weights = attention.weights(embeddings)
    assert attention.out_features == 16 and weights.shape == (B, 3)
    torch.testing.assert_close(weights.sum(1), torch.ones(B))
    plain = create_fusion("concat", dims, norm=False)
    torch.testing.assert_close(plain(embeddings), torch.cat(list(embeddings.values()), 1))
    with pytest.raises(ValueError, match="at least two modalities"):
        create_fusion("concat", {"visual": 12})
    with pytest.raises(ValueError, match="unknown modality fusion 'sum'"):
        create_fusion("sum", dims)


@pytest.mark.parametrize("name", list_fusions())
def test_modality_dropout_drops_whole_modalities_in_training_only(name):
    dims = {"visual": 12, "motion": 6, "audio": 8}
    embeddings = {modality: torch.randn(64, width) for modality, width in dims.items()}
    torch.manual_seed(0)
    fusion = create_fusion(name, dims, dropout=0.5)
    reference = create_fusion(name, dims)
    reference.load_state_dict(fusion.state_dict())  # no parameters of its own: same weights, same state dict
    fusion.eval(), reference.eval()
    torch.testing.assert_close(fusion(embeddings), reference(embeddings))
    fusion.train(), reference.train()
    dropped = fusion(embeddings)
    assert (dropped - reference(embeddings)).abs().amax(1).gt(1e-6).float().mean() > 0.3
    kept = fusion.in_order(embeddings)
    present = torch.stack([x.abs().sum(1) > 0 for x in kept], 1)  # [B, modalities]
    assert present.any(1).all() and not present.all()  # some dropped, never all of one video's
    for x, original in zip(kept, embeddings.values(), strict=True):  # a modality is kept whole or dropped whole
        rows = x.abs().sum(1) > 0
        torch.testing.assert_close(x[rows], original[rows])
    with pytest.raises(ValueError, match="modality dropout"):
        create_fusion(name, dims, dropout=1.0)


def test_drop_modalities_keeps_one_of_each_row():
    from shortvid.models.modalities import drop_modalities

    torch.manual_seed(0)
    keep = drop_modalities(20000, 3, 0.5)
    assert keep.any(1).all()
    # each entry kept with 1 - p, plus the rows that lost all three (p^3) keeping one of their three
    assert abs(keep.float().mean().item() - (0.5 + 0.5 ** 3 / 3)) < 0.01
    assert drop_modalities(100, 2, 0.0).all()


# The video classifier with motion and sound

@pytest.mark.parametrize("fusion", ["concat", "gate", "attention"])
@pytest.mark.parametrize("motion, audio", [(M, True), (1, False), (0, True)])
def test_model_shapes_and_gradients(fusion, motion, audio):
    model = av_model(motion, audio, fusion=fusion, imagenet_head=True).train()
    batch = inputs(motion=max(motion, 1))
    out = model.forward_all(batch["frames"], **model_inputs(model, batch))
    assert out["logits"].shape == (B, CLASSES) and out["imagenet"].shape == (B, 1000)
    assert ("motion_embedding" in out) == bool(motion) and ("audio_embedding" in out) == audio
    assert model.classifier.in_features == model.fusion.out_features
    assert model.motion_frames == motion and model.mels == MELS
    out["logits"].sum().backward()
    for part in (model.backbone, model.motion_encoder, model.audio_encoder, model.fusion, model.classifier):
        if part is not None:
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


def test_stream_heads_classify_each_modality_in_training_only():
    """Each modality's own logits from ``forward_all`` (each reaching its own stream alone), the fused logits
    as without them, nothing of them in ``forward``; a new class count resets them too."""
    torch.manual_seed(0)
    plain = av_model().eval()
    torch.manual_seed(0)
    model = av_model(stream_heads=True).eval()
    assert set(model.state_dict()) - set(plain.state_dict()) == {
        f"stream_heads.{name}.{p}" for name in ("visual", "motion", "audio") for p in ("weight", "bias")}
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("stream_heads")})
    batch = inputs()
    extra = model_inputs(model, batch)
    with torch.no_grad():
        out = model.forward_all(batch["frames"], **extra)
        torch.testing.assert_close(out["logits"], plain(batch["frames"], **extra))
        torch.testing.assert_close(model(batch["frames"], **extra), out["logits"])
    assert all(out[f"{name}_logits"].shape == (B, CLASSES) for name in ("visual", "motion", "audio"))
    model.train()
    model.forward_all(batch["frames"], **extra)["visual_logits"].sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    assert all(p.grad is None for p in model.motion_encoder.parameters())  # the visual head reaches its own stream
    model.reset_classifier(7)
    assert all(head.out_features == 7 for head in model.stream_heads.values())
    with pytest.raises(ValueError, match="stream heads"):
        VideoClassifier(plain.backbone, plain.aggregator, create_classifier("linear", plain.aggregator.out_features,
                                                                            CLASSES), stream_heads=True)
    assert create_model("tsn_tiny", num_classes=CLASSES, stream_heads=True).stream_heads is None  # frames only


@pytest.mark.parametrize("train", [False, True])
def test_padded_frames_and_their_motion_are_invisible(train):
    model = av_model(aggregator="max").train(train)
    batch = inputs()
    lengths = [4, 2, 3]
    zero, mask = padded(batch, lengths, 0.0)
    five, _ = padded(batch, lengths, 5.0)
    torch.testing.assert_close(logits(model, zero, mask), logits(model, five, mask))
    if not train:
        alone = {name: value[1:2, :2] if name in ("frames", "motion") else value[1:2] for name, value in batch.items()}
        torch.testing.assert_close(logits(model, zero, mask)[1:2], logits(model, alone), rtol=1e-4, atol=1e-5)


def test_keyframes_only_models_are_unchanged():
    """No motion, no sound: the parts, state-dict keys and logits of the model built from its parts alone."""
    torch.manual_seed(3)
    model = create_model("tsn_tiny", num_classes=CLASSES, aggregator="max").eval()
    torch.manual_seed(3)
    net, _ = create_backbone("test_resnet")
    pool = create_aggregator("max", 96)
    before = VideoClassifier(net, pool, create_classifier("linear", 96, CLASSES)).eval()
    assert list(model.state_dict()) == list(before.state_dict())
    assert not any(key.startswith(("motion_encoder", "audio_encoder", "fusion")) for key in model.state_dict())
    assert model.inputs == () and model.fusion is None and model.motion_frames == 0
    assert model.config == {"name": "tsn_tiny", "num_classes": CLASSES, "aggregator": "max"}
    frames = inputs()["frames"]
    with torch.no_grad():
        torch.testing.assert_close(model(frames), before(frames), rtol=0, atol=0)
        assert set(model.forward_all(frames)) == {"logits", "features"}
    with pytest.raises(ValueError, match="a modality fusion needs a motion or audio encoder"):
        VideoClassifier(net, pool, create_classifier("linear", 96, CLASSES),
                        fusion=create_fusion("concat", {"visual": 96, "audio": 96}))
    with pytest.raises(ValueError, match="the fusion takes"):
        VideoClassifier(net, pool, create_classifier("linear", 192, CLASSES),
                        audio_encoder=AudioEncoder(MELS, "test_resnet"),
                        fusion=create_fusion("concat", {"visual": 96, "motion": 96}))
    with pytest.raises(ValueError, match="a model with audio needs a modality fusion"):
        VideoClassifier(net, pool, create_classifier("linear", 96, CLASSES),
                        audio_encoder=AudioEncoder(MELS, "test_resnet"))


def test_config_rebuilds_the_model(tmp_path):
    model = av_model(fusion="gate", fusion_args={"reduction": 4}, classifier="moe").eval()
    assert isinstance(model, ServableModel)
    assert model.config["motion"] == M and model.config["audio"] is True and model.config["fusion"] == "gate"
    rebuilt = create_model(**model.config).eval()
    load_weights(rebuilt, model.state_dict())
    run = RunDir(tmp_path)
    run.save_checkpoint({"model_config": model.config, "model": model.state_dict()}, run.best)
    loaded = run.load_model()
    batch = inputs()
    expected = logits(model, batch)
    torch.testing.assert_close(logits(rebuilt, batch), expected)
    torch.testing.assert_close(logits(loaded, batch), expected)
    assert loaded.inputs == model.inputs


def test_reset_classifier_and_pre_logits():
    model = av_model(fusion="attention", fusion_args={"width": 24}).eval()
    batch = inputs()
    extra = model_inputs(model, batch)
    with torch.no_grad():
        embeddings = model.embed(batch["frames"], **extra)
        fused = model.forward_head(model.forward_features(batch["frames"]), pre_logits=True, embeddings=embeddings)
    assert set(embeddings) == {"motion", "audio"} and fused.shape == (B, 24)
    model.reset_classifier(7)
    assert logits(model, batch).shape == (B, 7) and model.config["num_classes"] == 7
    create_model(**model.config).load_state_dict(model.state_dict())


# Composites

def test_fused_classifier_passes_each_member_its_inputs():
    general = av_model()
    specialist = create_model("tsn_tiny", num_classes=2, motion=M, motion_args=dict(TINY))  # sees, does not hear
    config = {"general": {"model": general.config, "scores": "sigmoid"},
              "specialists": [{"model": specialist.config, "scores": "softmax", "classes": [3, 1],
                               "scale": [0.5, 1.0, 2.0], "shift": [0.1, 0.0, -0.1]}]}
    fused = create_model("fused", num_classes=CLASSES, **config).eval()
    fused.general.load_state_dict(general.state_dict())
    fused.specialists[0].load_state_dict(specialist.state_dict())
    assert fused.inputs == INPUT_NAMES and isinstance(fused, ServableModel)
    assert fused.motion_frames == M and fused.mels == MELS
    batch = inputs()
    scale, shift = torch.tensor([0.5, 1.0, 2.0]).view(3, 1, 1), torch.tensor([0.1, 0.0, -0.1]).view(3, 1, 1)
    with torch.no_grad():
        p = torch.sigmoid(general.eval()(**batch))
        moved = {"motion": batch["motion"] * scale + shift}
        q = torch.softmax(specialist.eval()(batch["frames"] * scale + shift, **moved), -1)
        got = torch.sigmoid(fused(**batch))
    torch.testing.assert_close(got, fused.fuse(p, [q]), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="not given motion"):
        fused(batch["frames"], audio=batch["audio"], audio_mask=batch["audio_mask"])


def test_frame_count_switch_slices_each_members_rows():
    members = {"1": av_model(motion=0).config, "3": av_model(aggregator="max").config}
    switch = create_model("by_frame_count", num_classes=CLASSES, members=members).eval()
    assert switch.inputs == INPUT_NAMES and switch.motion_frames == M
    batch = inputs()
    batch_padded, mask = padded(batch, [1, 3, 4], 0.0)
    with torch.no_grad():
        got = switch(batch_padded["frames"], mask, **model_inputs(switch, batch_padded))
        first = switch.members["1"](batch["frames"][:1, :1], audio=batch["audio"][:1],
                                    audio_mask=batch["audio_mask"][:1])
        rest = switch.members["3"](batch_padded["frames"][1:], mask[1:], motion=batch_padded["motion"][1:],
                                   audio=batch["audio"][1:], audio_mask=batch["audio_mask"][1:])
    torch.testing.assert_close(got, torch.cat([first, rest]), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="members take motion of different sizes"):
        create_model("by_frame_count", num_classes=CLASSES,
                     members={"1": av_model(motion=1).config, "3": av_model(motion=2).config})


# Backends and ONNX

def test_torch_backend_passes_the_inputs():
    model = av_model().eval()
    backend = TorchBackend(model, torch.device("cpu"))
    assert backend.inputs == INPUT_NAMES
    batch = inputs()
    with torch.no_grad():
        torch.testing.assert_close(backend(batch["frames"], None, **model_inputs(model, batch)), logits(model, batch))
    assert TorchBackend(create_model("tsn_tiny", num_classes=2), torch.device("cpu")).inputs == ()


@pytest.fixture
def av_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    model = av_model(fusion="attention").eval()
    return model, export_model(model, tmp_path / "av.onnx", SIZE)


def test_onnx_graph_takes_the_inputs_and_matches_pytorch(av_onnx):
    import onnxruntime as ort

    model, path = av_onnx
    assert graph_inputs(path) == INPUT_NAMES
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shapes = {i.name: i.shape for i in session.get_inputs()}
    assert list(shapes) == ["frames", *INPUT_NAMES]
    assert shapes["motion"] == ["batch", "frames", M, 3, SIZE, SIZE]
    assert shapes["audio"] == ["batch", MELS, "audio_frames"] and shapes["audio_mask"] == ["batch"]
    for batch_size, frames, audio_frames in ((1, 1, 7), (3, 4, 198), (2, 3, 50)):
        batch = inputs(batch_size, frames, audio_frames=audio_frames, seed=batch_size)
        feeds = {name: value.numpy() for name, value in batch.items()}
        (got,) = session.run(["logits"], feeds)
        assert np.abs(got - logits(model, batch).numpy()).max() < ATOL


def test_onnx_backend_runs_a_padded_batch_with_the_inputs(av_onnx):
    model, path = av_onnx
    backend = OnnxBackend(path, torch.device("cpu"))
    assert backend.inputs == INPUT_NAMES
    batch, mask = padded(inputs(), [1, 4, 2], 0.0)
    extra = model_inputs(model, batch)
    expected = logits(model, batch, mask)
    assert (backend(batch["frames"], mask, **extra) - expected).abs().max() < ATOL
    assert (backend(batch["frames"], None, **extra) - logits(model, batch)).abs().max() < ATOL
    with pytest.raises(ValueError, match="not given audio_mask"):
        backend(batch["frames"], mask, motion=extra["motion"], audio=extra["audio"])


def test_keyframes_only_export_is_as_before(tmp_path):
    pytest.importorskip("onnxruntime")
    path = export_model(create_model("tsn_tiny", num_classes=3).eval(), tmp_path / "m.onnx", SIZE)
    assert graph_inputs(path) == ()
    assert OnnxBackend(path, torch.device("cpu")).inputs == ()


def test_int8_of_a_graph_with_motion_and_sound(av_onnx, tmp_path):
    import onnx

    model, path = av_onnx
    backend_fp32 = OnnxBackend(path, torch.device("cpu"))
    batch = inputs()
    extra = model_inputs(model, batch)
    expected = backend_fp32(batch["frames"], None, **extra)
    dynamic = quantize_onnx(path, tmp_path / "dynamic.onnx", "dynamic")
    calibration = [{name: value[i:i + 1].numpy() for name, value in inputs(seed=i).items()} for i in range(3)]
    static = quantize_onnx(path, tmp_path / "static.onnx", "static", calibration)
    for quantized, ops in ((dynamic, {"ConvInteger", "MatMulInteger"}), (static, {"QuantizeLinear"})):
        assert ops & set(Counter(node.op_type for node in onnx.load(str(quantized)).graph.node))
        backend = OnnxBackend(quantized, torch.device("cpu"))
        assert backend.inputs == INPUT_NAMES
        got = backend(batch["frames"], None, **extra)
        assert got.shape == expected.shape and torch.isfinite(got).all()
    with pytest.raises(ExportError, match="calibration batches lack audio, audio_mask, motion; int8-dynamic"):
        quantize_onnx(path, tmp_path / "refused.onnx", "static", [batch["frames"][:1].numpy()])


# Through the real decoder and datasets: a run that sees and hears, on the av-tiny corpus

@pytest.fixture(scope="module")
def av_corpus(tmp_path_factory) -> Path:
    """The `av-tiny` corpus (motion, sound and appearance classes), generated once per session."""
    from shortvid.synth.corpus import generate_corpus, preset

    return shared(tmp_path_factory, "av_tiny_corpus",
                  lambda root: generate_corpus(root, preset("av-tiny"), workers=2, progress=False))


@pytest.fixture
def av_run(av_corpus, tmp_path) -> Path:
    labels = load_dataset(av_corpus, "train").label_map
    model = create_model("tsn_tiny", num_classes=len(labels), motion=M, motion_args=dict(TINY), audio=True,
                         audio_args=dict(TINY), fusion="gate").eval()
    preprocess = Preprocess(FrameSpec(k=3, size=40, motion=M, fill="none"), SIZE, "sigmoid",
                            audio=AudioSpec(seconds=1.0))
    RunDir(tmp_path / "av").write_inference(model, labels, preprocess)
    return tmp_path / "av"


def test_a_run_that_sees_and_hears_serves_and_quantises(av_run, av_corpus):
    """Decoded videos (motion frames and sound) give the same scores on PyTorch and ONNX Runtime, padded
    or not, and static int8 calibrates on the training videos' motion frames and sound."""
    samples = load_dataset(av_corpus, "val").samples[:6]
    on_torch = Classifier.load(av_run, device="cpu", backend="torch")
    on_onnx = Classifier.load(av_run, device="cpu", backend="onnx")
    assert on_torch.backend.inputs == on_onnx.backend.inputs == INPUT_NAMES
    clips = [on_torch.read(sample.path) for sample in samples]
    assert clips[0].motion.shape[1] == M and clips[0].sound is not None
    assert len({len(clip.frames) for clip in clips}) > 1  # videos of 1-3 keyframes: a padded batch
    torch_scores, _ = on_torch.scores_many(clips)
    onnx_scores, _ = on_onnx.scores_many(clips)
    assert np.abs(torch_scores - onnx_scores).max() < ATOL
    alone = np.stack([on_onnx.scores(clip)[0] for clip in clips])
    assert np.abs(alone - onnx_scores).max() < ATOL

    batches = calibration_inputs(av_run, 3, dataset=av_corpus, names=INPUT_NAMES)
    assert len(batches) == 3 and set(batches[0]) == {"frames", *INPUT_NAMES}
    frames = batches[0]["frames"].shape[1]
    assert batches[0]["motion"].shape == (1, frames, M, 3, SIZE, SIZE) and batches[0]["audio"].shape == (1, MELS, 98)
    assert batches[0]["audio_mask"].shape == (1,) and batches[0]["audio_mask"].dtype == np.bool_
    path = quantize_run(av_run, "static", videos=3, dataset=av_corpus)
    int8 = Classifier.load(av_run, device="cpu", backend="onnx", precision="int8")
    assert int8.backend.path == path and int8.backend.inputs == INPUT_NAMES
    assert np.isfinite(int8.scores_many(clips)[0]).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_step_with_padding_and_silence():
    model = av_model(fusion="attention", imagenet_head=True).cuda().train()
    batch, mask = padded(inputs(), [4, 1, 2], 0.0)
    batch = {name: value.cuda() for name, value in batch.items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model.forward_all(batch["frames"], mask.cuda(), **model_inputs(model, batch))
    out["logits"].float().sum().backward()
    assert out["logits"].shape == (B, CLASSES) and model.audio_encoder.no_sound.grad is not None
