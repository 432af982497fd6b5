"""Audio-visual correspondence pretraining (``shortvid pretrain --method avc``): the cross-modal InfoNCE against a
hand computation, the examples, learning on a fixed batch, a pretrain on the `av-tiny` corpus whose two files
start a TSN that hears, videos without sound left out and counted, resumption, and the typed errors."""

import json
import math
import shutil
from pathlib import Path

import pytest
import timm
import torch
from torch.utils.data import default_collate

from shortvid.cli import main
from shortvid.data.annotations import load_dataset
from shortvid.data.cache import FrameCache, MissingAudioError, extract
from shortvid.decode import AudioSpec, FrameSpec, log_mel
from shortvid.errors import DatasetError
from shortvid.models import AudioEncoder, create_model
from shortvid.models.backbones import CheckpointError
from shortvid.run import RunDir
from shortvid.train.avc import (
    AUDIO_ENCODER_FILE,
    AVCAugmentConfig,
    AVCConfig,
    AVCModelConfig,
    AVCVideos,
    build_avc_model,
    correspondence,
    pretrain_avc,
)
from shortvid.train.config import ConfigError, load_config
from shortvid.train.contrastive import SimCLRAugment, distinct_frames, nt_xent_loss
from shortvid.train.trainer import train

from conftest import AV_MUTE, shared, stop_at_checkpoint, tiny_config, without_audio

AUDIO_ARGS = '{"backbone": "test_resnet"}'  # a small audio encoder: the tests' runs take seconds
MUTE = ("mute0.mp4", "mute1.mp4")


@pytest.fixture(scope="module")
def avc_cache(av_corpus, tmp_path_factory) -> Path:
    """The `av-tiny` corpus's videos (56, all with sound) and two without an audio stream (conftest's ``AV_MUTE``
    and one more), 3 keyframes of short side 48 and 1 s of sound each."""
    def make(root: Path) -> None:
        videos = [(s.name, s.path) for split in ("train", "val") for s in load_dataset(av_corpus, split)]
        second = without_audio(videos[0][1], root.parent / "avc_mute.mp4")
        videos += [(MUTE[0], av_corpus / "videos" / AV_MUTE), (MUTE[1], second)]
        extract(videos, root, FrameSpec(k=3, size=48), fmt="raw", workers=2, progress=False, audio=AudioSpec())

    return shared(tmp_path_factory, "avc_cache", make)


def overrides(cache, out, *extra) -> list[str]:
    return [f"data.cache={cache}", f"out={out}", "data.input_size=40", "data.batch_size=16", "data.workers=0",
            f"model.audio_args={AUDIO_ARGS}", "optim.epochs=2", "optim.warmup_epochs=1", "optim.lr=0.003",
            "progress=false", *extra]


@pytest.fixture(scope="module")
def pretrained(avc_cache, tmp_path_factory) -> Path:
    """Two epochs of `shortvid pretrain --method avc` (the shipped config) on the cache."""
    out = tmp_path_factory.mktemp("avc") / "run"
    assert main(["pretrain", "--method", "avc", *overrides(avc_cache, out)]) == 0
    return out


def test_cross_modal_nt_xent_matches_a_hand_computation():
    visual = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    audio = torch.tensor([[3.0, 1.0], [-1.0, 1.0], [0.5, -1.0]])
    unit = [torch.nn.functional.normalize(x, dim=1).double() for x in (visual, audio)]
    for tau in (0.1, 0.5):
        total = 0.0
        for rows, columns in ((unit[0], unit[1]), (unit[1], unit[0])):  # frames -> sounds, sounds -> frames
            similarities = rows @ columns.T / tau
            total += -torch.log_softmax(similarities, dim=1).diag().sum().item()
        assert nt_xent_loss(visual, audio, tau, within=False).item() == pytest.approx(total / 6, rel=1e-5)
    # The default (SimCLR's) also counts the other frames as negatives of a video's frames: more terms, a higher loss.
    assert nt_xent_loss(visual, audio, 0.5).item() > nt_xent_loss(visual, audio, 0.5, within=False).item()


def test_examples_are_distinct_keyframes_and_the_log_mel_of_the_sound(avc_cache):
    cache = FrameCache(avc_cache)
    names = sorted(name for name in cache.entries if name not in MUTE)[:12]
    augment = SimCLRAugment(40, AVCAugmentConfig(), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    plain = AVCVideos(cache, names, augment, frames=2, seed=1)
    for index, name in enumerate(names):
        item, clip = plain[index], cache.read(name)
        distinct = distinct_frames(clip.times)
        real = min(len(distinct), 2)
        assert item["frames"].shape == (2, 3, 40, 40) and item["mask"].tolist() == [True] * real + [False] * (2 - real)
        picks = item["picks"].tolist()
        assert set(picks[:real]) <= set(distinct) and len({clip.times[i] for i in picks[:real]}) == real
        assert torch.equal(item["audio"], torch.from_numpy(log_mel(clip.sound.samples, 16000, 64)))
    assert any(not item["mask"].all() for item in (plain[i] for i in range(len(names))))  # 1-keyframe videos
    # Seeded by (seed, epoch, index): the same item again, other crops in another epoch.
    assert torch.equal(plain[0]["frames"], plain[0]["frames"])
    plain.set_epoch(1)
    assert not torch.equal(plain[0]["frames"], AVCVideos(cache, names, augment, frames=2, seed=1)[0]["frames"])

    # The sound's augmentation: 80% of its frames at an offset, and one gain (a constant in log power).
    whole = plain[3]["audio"]
    cut = AVCVideos(cache, names, augment, frames=2, crop=0.8, gain_db=6.0, seed=1)
    cut.set_epoch(1)
    audio = cut[3]["audio"]
    kept = round(whole.shape[1] * 0.8)
    assert audio.shape == (64, kept)
    shifts = [audio - whole[:, start:start + kept] for start in range(whole.shape[1] - kept + 1)]
    flat = [shift for shift in shifts if float(shift.max() - shift.min()) < 1e-4]
    assert len(flat) == 1 and 0 < abs(float(flat[0].mean())) <= 0.6 * math.log(10) + 1e-6


def test_the_loss_falls_on_a_fixed_batch_and_own_sounds_score_above_swapped_ones(avc_cache):
    torch.manual_seed(0)
    model = build_avc_model(AVCModelConfig(backbone="test_resnet", audio_args=json.loads(AUDIO_ARGS)))
    cache = FrameCache(avc_cache)
    names = sorted(name for name in cache.entries if name not in MUTE)[:16]
    augment = SimCLRAugment(40, AVCAugmentConfig(), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    videos = AVCVideos(cache, names, augment, frames=3, seed=0)
    batch = default_collate([videos[i] for i in range(len(videos))])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def scores() -> tuple[torch.Tensor, torch.Tensor]:
        visual, audio = model(batch["frames"], batch["mask"], batch["audio"])
        return nt_xent_loss(visual, audio, 0.1, within=False), correspondence(visual, audio)

    model.train()
    with torch.no_grad():
        before, start = scores()
    for _ in range(12):
        loss, _ = scores()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after, end = scores()
    assert after < 0.6 * before
    own, swapped = end.diag().mean(), (end.sum() - end.diag().sum()) / (16 * 15)
    assert own - swapped > (start.diag().mean() - (start.sum() - start.diag().sum()) / (16 * 15)) + 0.02


def test_pretrain_writes_both_files_and_leaves_out_videos_without_sound(pretrained, avc_cache):
    summary = json.loads((pretrained / "pretrain.json").read_text())
    assert summary["method"] == "avc" and summary["backbone"] == "test_resnet" and summary["epochs"] == 2
    assert summary["videos"] == 56 and summary["skipped"] == {"none": 2}
    assert summary["audio_args"] == {"backbone": "test_resnet"} and summary["mels"] == 64
    assert summary["temperature"] == 0.1 and summary["negatives"] == "cross"  # the shipped config's
    assert [m["epoch"] for m in RunDir(pretrained).read_metrics()] == [0, 1]
    assert all(math.isfinite(loss) for loss in summary["losses"]) and all(0 <= t <= 1 for t in summary["top1"])

    trained = torch.load(pretrained / "checkpoints" / "last.pt", weights_only=False)["model"]
    backbone = torch.load(pretrained / "backbone.pth", weights_only=True)
    assert list(backbone) == list(timm.create_model("test_resnet", num_classes=0).state_dict())
    assert all(torch.equal(value, trained[f"backbone.{key}"]) for key, value in backbone.items())
    audio = torch.load(pretrained / AUDIO_ENCODER_FILE, weights_only=True)
    assert list(audio) == list(AudioEncoder(backbone="test_resnet").state_dict())
    assert all(torch.equal(value, trained[f"audio_encoder.{key}"]) for key, value in audio.items())


def test_a_tsn_that_hears_starts_from_both_files(pretrained, av_corpus, avc_cache, tmp_path):
    for name in ("backbone.pth", AUDIO_ENCODER_FILE):  # copies: the run must load once they are gone
        shutil.copy(pretrained / name, tmp_path / name)
    backbone = torch.load(tmp_path / "backbone.pth", weights_only=True)
    audio = torch.load(tmp_path / AUDIO_ENCODER_FILE, weights_only=True)
    model = create_model("tsn", backbone="test_resnet", num_classes=3, checkpoint_path=tmp_path / "backbone.pth",
                         audio=True, audio_args={"backbone": "test_resnet",
                                                 "checkpoint_path": str(tmp_path / AUDIO_ENCODER_FILE)})
    assert all(torch.equal(value, backbone[key]) for key, value in model.backbone.state_dict().items())
    assert all(torch.equal(value, audio[key]) for key, value in model.audio_encoder.state_dict().items())
    assert model.config["audio_args"] == {"backbone": "test_resnet"}  # the architecture, not the weights' source

    # Through a training config, with the overrides pretrain.json gives (pointed at the copies); at lr 0 the
    # trained parameters are the files'.
    given = json.loads((pretrained / "pretrain.json").read_text())["finetune_overrides"]
    given = [o.replace(str(pretrained), str(tmp_path)) for o in given]
    config = tiny_config(av_corpus, avc_cache, tmp_path / "run", "data.resize=48", "data.input_size=40",
                         "optim.epochs=1", "optim.lr=0", *given)
    assert config.model.audio
    assert config.model.args["audio_args"]["checkpoint_path"] == str(tmp_path / AUDIO_ENCODER_FILE)
    train(config)
    for name in ("backbone.pth", AUDIO_ENCODER_FILE):
        (tmp_path / name).unlink()
    run = RunDir(tmp_path / "run").load_model("last")
    parameters = dict(run.named_parameters())
    for prefix, state in (("backbone.", backbone), ("audio_encoder.", audio)):
        names = [key for key in state if prefix + key in parameters]
        assert names and all(torch.equal(parameters[prefix + key], state[key]) for key in names)


def test_an_audio_encoder_file_that_does_not_fit_is_a_typed_error(pretrained, tmp_path):
    path = pretrained / AUDIO_ENCODER_FILE
    with pytest.raises(CheckpointError, match=r"audio_encoder\.pth.*32 mel bands on test_resnet.*other shapes"):
        AudioEncoder(mels=32, backbone="test_resnet", checkpoint_path=str(path))
    with pytest.raises(CheckpointError, match=r"audio_encoder\.pth.*mobilenetv3_small_100.*missing"):
        create_model("tsn_tiny", num_classes=2, audio=True, audio_args={"checkpoint_path": str(path)})
    with pytest.raises(CheckpointError, match="no such audio encoder checkpoint"):
        AudioEncoder(backbone="test_resnet", checkpoint_path=str(tmp_path / "missing.pth"))
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        AudioEncoder(backbone="test_resnet", checkpoint_path=str(tmp_path / "text.pth"))


def test_an_interrupted_pretrain_resumes_to_the_same_weights(pretrained, avc_cache, tmp_path, monkeypatch):
    out = tmp_path / "stopped"
    config = load_config("avc", overrides(avc_cache, out, "checkpoint_every=2"), schema=AVCConfig)
    stop_at_checkpoint(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        pretrain_avc(config)
    monkeypatch.undo()
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=False)["state"]["step"] == 2
    assert main(["pretrain", "--method", "avc", "--resume", str(out)]) == 0
    resumed = json.loads((out / "pretrain.json").read_text())
    assert resumed["losses"] == pytest.approx(json.loads((pretrained / "pretrain.json").read_text())["losses"],
                                              rel=1e-5)
    for name in ("backbone.pth", AUDIO_ENCODER_FILE):
        again, first = (torch.load(root / name, weights_only=True) for root in (out, pretrained))
        assert all(torch.equal(again[key], first[key]) for key in first)


def test_a_cache_without_sound_or_with_too_few_sounding_videos_is_a_typed_error(small_videos, tmp_path, capsys):
    silent = tmp_path / "no-sound"
    extract([("v0.mp4", small_videos["v0.mp4"]), ("v1.mp4", small_videos["v1.mp4"])], silent, FrameSpec(k=2, size=48),
            workers=1, progress=False)
    assert main(["pretrain", "--method", "avc", *overrides(silent, tmp_path / "a")]) == 2
    error = capsys.readouterr().err
    assert str(silent) in error and "shortvid extract --audio" in error
    assert not (tmp_path / "a").exists()
    config = load_config("avc", overrides(silent, tmp_path / "a"), schema=AVCConfig)
    with pytest.raises(MissingAudioError):
        pretrain_avc(config)

    one = tmp_path / "one-sound"
    mute = without_audio(small_videos["v1.mp4"], tmp_path / "mute.mp4")
    extract([("v0.mp4", small_videos["v0.mp4"]), ("mute.mp4", mute)], one,
            FrameSpec(k=2, size=48), workers=1, progress=False, audio=AudioSpec())
    config = load_config("avc", overrides(one, tmp_path / "b"), schema=AVCConfig)
    with pytest.raises(DatasetError, match=r"at least 2 videos with sound.*found 1 \(1 left out"):
        pretrain_avc(config)
    with pytest.raises(ConfigError, match="optim.negatives"):
        pretrain_avc(load_config("avc", overrides(one, tmp_path / "c", "optim.negatives=some"), schema=AVCConfig))
