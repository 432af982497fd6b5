"""The frame cache and the datasets with motion frames and sound (issue 21): what ``extract`` stores is what
``read_frames`` read, old caches load as before, and dataset items carry the inputs of the contract in
docs/motion-and-sound.md, their motion frames transformed with their keyframes."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from test_audio import audio_packet_spans
from torch.utils.data import DataLoader

from shortvid.cli import main
from shortvid.data.annotations import Annotations, Sample, load_dataset
from shortvid.data.cache import PCM_SCALE, FrameCache, FrameCountError, MissingAudioError, extract
from shortvid.data.datasets import CachedVideoDataset, RawVideoDataset
from shortvid.data.labels import LabelMap
from shortvid.data.transforms import VideoTransform, transform_with_motion
from shortvid.decode import AudioSpec, DecodeLimits, FrameSpec, log_mel, read_frames
from shortvid.decode.melspec import frame_count
from shortvid.errors import DatasetError
from shortvid.synth.corpus import generate_corpus, preset
from shortvid.synth.encode import EncodeSpec, encode_video

from conftest import pattern_frames

SPEC = FrameSpec(k=3, size=48, motion=2)
AUDIO = AudioSpec(seconds=2.0)
QUANTUM = 0.5 / PCM_SCALE  # the largest error of a stored sample within int16's range


@pytest.fixture(scope="module")
def videos(small_videos, tmp_path_factory) -> dict[str, Path]:
    """v0 (a 440 Hz AAC tone, keyframes at 0, 1, 2, 3 s), the same frames without audio, v0 with its audio
    packets 5-39 overwritten (as test_audio damages them) and a text file."""
    folder = tmp_path_factory.mktemp("av_videos")
    good = small_videos["v0.mp4"]
    mute = encode_video(folder / "mute.mp4", pattern_frames(40, 64, 112),
                        EncodeSpec(fps=10, gop=100, scenecut=False, audio=False), keyframes=(0, 10, 20, 30)).path
    data = bytearray(good.read_bytes())
    rng = np.random.default_rng(0)
    for position, size in audio_packet_spans(good)[5:40]:
        data[position:position + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    (folder / "damaged.mp4").write_bytes(bytes(data))
    return {"good": good, "mute": mute, "damaged": folder / "damaged.mp4", "text": small_videos["text.mp4"]}


@pytest.fixture(scope="module")
def av_cache(videos, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("av_cache")
    summary = extract(list(videos.items()), root, SPEC, fmt="raw", workers=2, progress=False, audio=AUDIO)
    assert (summary.extracted, summary.failed) == (3, 1)
    assert summary.sound == {"ok": 2, "none": 1} and summary.to_dict()["sound"] == {"ok": 2, "none": 1}
    return root


@pytest.fixture(scope="module")
def av_corpus(tmp_path_factory) -> Path:
    """The `av-tiny` corpus (56 videos of motion, sound and appearance classes)."""
    out = tmp_path_factory.mktemp("av_corpus") / "corpus"
    generate_corpus(out, preset("av-tiny"), workers=2, progress=False)
    return out


@pytest.fixture(scope="module")
def corpus_cache(av_corpus, tmp_path_factory) -> Path:
    """The av-tiny corpus's cache, made by the command line: 3 keyframes and 2 motion frames each, 2 s of sound."""
    out = tmp_path_factory.mktemp("corpus_cache") / "cache"
    assert main(["extract", str(av_corpus), "--out", str(out), "--k", "3", "--size", "64", "--motion", "2",
                 "--audio", "--audio-seconds", "2", "--format", "raw", "--workers", "2", "--quiet"]) == 0
    return out


def test_extract_stores_motion_frames_and_sound_as_read_frames_reads_them(av_cache, videos):
    config = json.loads((av_cache / "cache.json").read_text())
    assert config["version"] == 2 and config["frames"]["motion"] == 2 and config["audio"] == AUDIO.to_dict()
    assert config["sound_format"] == "float32"
    cache = FrameCache(av_cache)
    assert cache.motion == 2 and cache.audio == AUDIO and cache.spec == SPEC and cache.sound_format == "float32"
    statuses = {}
    for name in ("good", "mute", "damaged"):
        cached, direct = cache.read(name), read_frames(videos[name], SPEC, audio=AUDIO)
        assert np.array_equal(cached.frames, direct.frames)
        assert cached.motion.shape == (3, 2, 84, 48, 3) and np.array_equal(cached.motion, direct.motion), name
        assert cached.motion_valid == direct.motion_valid == (2, 2, 2)
        sound, read = cached.sound, direct.sound
        assert (sound.status, sound.reason, sound.sample_rate) == (read.status, read.reason, read.sample_rate)
        assert np.array_equal(sound.mask, read.mask) and sound.samples.dtype == np.float32
        assert np.array_equal(sound.samples, read.samples), name  # float32: as read
        statuses[name] = (sound.status, sound.valid)
    assert statuses["good"] == ("ok", 32000) and statuses["mute"] == ("none", 0)
    damaged = cache.read("damaged").sound  # the damaged packets are masked, not the rest
    assert damaged.status == "ok" and "damaged audio packets skipped" in damaged.reason
    assert 8000 < damaged.valid < 32000 and not damaged.mask[4000:12000].any() and damaged.mask[20000:].all()
    assert np.abs(damaged.samples).max() > 0.01
    lines = {line["name"]: line for line in map(json.loads, (av_cache / "manifest.jsonl").read_text().splitlines())}
    assert lines["mute"]["sound"]["bytes"] == 0 and lines["good"]["sound"]["bytes"] == 4 * 32000 + 8  # one run
    assert lines["good"]["sound"]["codec"] == "aac" and lines["good"]["motion_valid"] == [2, 2, 2]
    assert "error" in lines["text"]
    # reads leave out what is not asked for; read_motion decodes only the picks
    bare = cache.read("good", motion=False, sound=False)
    assert bare.motion is None and bare.sound is None and np.array_equal(bare.frames, cache.read("good").frames)
    picked, valid = cache.read_motion("good", [2, 0], 1)
    assert np.array_equal(picked, cache.read("good").motion[[2, 0], :1]) and valid == (1, 1)


def test_int16_sound_is_within_its_quantisation(videos, tmp_path):
    items = [(name, videos[name]) for name in ("good", "damaged")]
    extract(items, tmp_path, SPEC, workers=2, progress=False, audio=AUDIO, sound_format="int16")
    cache = FrameCache(tmp_path)
    assert cache.sound_format == "int16"
    for name, path in items:
        sound, read = cache.read(name).sound, read_frames(path, SPEC, audio=AUDIO).sound
        assert sound.status == read.status == "ok" and np.array_equal(sound.mask, read.mask)
        assert 0 < np.abs(sound.samples - read.samples).max() <= QUANTUM, name
        assert not sound.samples[~sound.mask].any()
    line = json.loads((tmp_path / "manifest.jsonl").read_text().splitlines()[0])
    assert line["sound"]["bytes"] == 2 * 32000 + 8 * (1 if line["name"] == "good" else 2)
    with pytest.raises(DatasetError, match="as int16; asked for .* as float32: use another folder"):
        extract(items, tmp_path, SPEC, workers=1, progress=False, audio=AUDIO)


def test_a_jpeg_cache_keeps_motion_frames_close(videos, tmp_path):
    extract([("good", videos["good"])], tmp_path, SPEC, workers=1, progress=False)
    cached, direct = FrameCache(tmp_path).read("good"), read_frames(videos["good"], SPEC)
    assert cached.motion.shape == direct.motion.shape and cached.sound is None
    assert np.abs(cached.motion.astype(int) - direct.motion).mean() < 8
    # the motion frames differ from their keyframes (the pattern moves), and the cache keeps that
    assert np.abs(cached.motion[:, 0].astype(int) - cached.frames).mean() > 1


def test_a_broken_sound_is_stored_as_its_status_and_reason(videos, tmp_path):
    limits = DecodeLimits(max_sample_rate=16000)  # refuses the 48 kHz track
    summary = extract([("good", videos["good"])], tmp_path, FrameSpec(k=2, size=32), workers=1, progress=False,
                      audio=AUDIO, limits=limits)
    assert summary.sound == {"broken": 1}
    cache = FrameCache(tmp_path)
    sound = cache.read("good").sound
    assert sound.status == "broken" and "limit" in sound.reason and sound.samples.shape == (32000,)
    assert not sound.mask.any() and not sound.samples.any()
    assert cache.motion == 0 and cache.read("good").motion is None
    assert json.loads((tmp_path / "cache.json").read_text())["version"] == 2  # sound alone makes version 2


def test_a_cache_without_motion_or_sound_is_version_1_and_loads_as_before(videos, tmp_path):
    spec = FrameSpec(k=3, size=48)
    summary = extract([("good", videos["good"])], tmp_path, spec, fmt="raw", workers=1, progress=False)
    assert "sound" not in summary.to_dict()
    config = json.loads((tmp_path / "cache.json").read_text())
    # the cache.json the code before issue 21 wrote, key for key
    assert config == {"version": 1, "frames": {"k": 3, "sampler": "keyframes", "size": 48, "crop": None,
                                               "fill": "repeat"}, "format": "raw", "quality": 95}
    line = json.loads((tmp_path / "manifest.jsonl").read_text())
    assert not {"motion_lengths", "motion_valid", "sound"} & set(line)
    cache = FrameCache(tmp_path)
    assert cache.motion == 0 and cache.audio is None and cache.spec_for(2) == replace(spec, k=2)
    clip = cache.read("good")
    assert clip.motion is None and clip.motion_valid is None and clip.sound is None
    assert np.array_equal(clip.frames, read_frames(videos["good"], spec).frames)
    assert extract([("good", videos["good"])], tmp_path, spec, fmt="raw", workers=1, progress=False).skipped == 1
    (tmp_path / "cache.json").write_text(json.dumps({**config, "version": 3}))
    with pytest.raises(DatasetError, match="newer shortvid"):
        FrameCache(tmp_path)


def test_resume_refuses_another_sound(videos, tmp_path):
    item = [("good", videos["good"])]
    extract(item, tmp_path / "sound", SPEC, workers=1, progress=False, audio=AUDIO)
    for other in (AudioSpec(seconds=1.0), AudioSpec(seconds=2.0, placement="spread"), None):
        with pytest.raises(DatasetError, match="another folder"):
            extract(item, tmp_path / "sound", SPEC, workers=1, progress=False, audio=other)
    assert extract(item, tmp_path / "sound", SPEC, workers=1, progress=False, audio=AUDIO).skipped == 1
    extract(item, tmp_path / "plain", FrameSpec(k=3, size=48), workers=1, progress=False)
    with pytest.raises(DatasetError, match="without sound; asked for .* with sound .*: use another folder"):
        extract(item, tmp_path / "plain", FrameSpec(k=3, size=48), workers=1, progress=False, audio=AUDIO)
    with pytest.raises(DatasetError, match="another folder"):  # motion frames are part of the frame spec
        extract(item, tmp_path / "plain", FrameSpec(k=3, size=48, motion=1), workers=1, progress=False)


def test_asking_for_what_a_cache_lacks_is_a_typed_error(av_cache, videos, tmp_path):
    extract([("good", videos["good"])], tmp_path, FrameSpec(k=3, size=48), workers=1, progress=False)
    annotations = Annotations([Sample(path=videos["good"], labels=(0,), name="good")], LabelMap(("a",)),
                              videos["good"].parent)
    with pytest.raises(FrameCountError, match=r"holds 0 motion frames .* `shortvid extract --motion 1`"):
        CachedVideoDataset(annotations, tmp_path, motion=1)
    with pytest.raises(MissingAudioError, match=f"{tmp_path}: holds no sound .*`shortvid extract --audio`"):
        CachedVideoDataset(annotations, tmp_path, audio=True)
    with pytest.raises(FrameCountError, match=r"holds 2 motion frames .*--motion 3 --audio"):
        CachedVideoDataset(annotations, av_cache, motion=3, audio=True)
    with pytest.raises(FrameCountError):
        FrameCache(av_cache).read_motion("good", [0], 3)
    cache = FrameCache(av_cache)
    assert cache.spec_for(2) == FrameSpec(k=2, size=48) and cache.spec_for(3, 1) == replace(SPEC, motion=1)
    assert cache.audio_for(False) is None and cache.audio_for(True) == AUDIO


def _dataset(annotations, cache, **options):
    return CachedVideoDataset(annotations, cache, k=3, mode="test",
                              transform=VideoTransform(56, augment=False), **options)


def test_cached_items_carry_the_contract_inputs(av_corpus, corpus_cache):
    annotations = load_dataset(av_corpus, "train")
    config = json.loads((corpus_cache / "cache.json").read_text())
    assert config["audio"] == AudioSpec(seconds=2.0).to_dict() and config["frames"]["motion"] == 2
    full = _dataset(annotations, corpus_cache, motion=2, audio=True)
    assert full.audio == AudioSpec(seconds=2.0) and full.spec.motion == 2 and len(full) == len(annotations)
    item = full[0]
    assert item["frames"].shape == (3, 3, 56, 56) and item["frames"].dtype == torch.float32
    assert item["motion"].shape == (3, 2, 3, 56, 56) and item["motion"].dtype == torch.float32
    assert item["audio"].shape == (64, frame_count(32000, 16000)) and item["audio"].dtype == torch.float32
    assert item["audio_mask"].dtype == torch.bool and item["audio_mask"].shape == () and bool(item["audio_mask"])
    clip = full.cache.read(item["name"])
    assert np.array_equal(item["audio"].numpy(), log_mel(clip.sound.samples, 16000, 64))
    batch = next(iter(DataLoader(full, batch_size=4)))
    assert batch["motion"].shape == (4, 3, 2, 3, 56, 56) and batch["audio"].shape == (4, 64, 198)
    assert batch["audio_mask"].shape == (4,) and batch["audio_mask"].dtype == torch.bool
    # fewer motion frames: the first of those cached; other mel bands
    one = _dataset(annotations, corpus_cache, motion=1, audio=True, mels=32)[0]
    assert torch.equal(one["motion"], item["motion"][:, :1]) and torch.equal(one["frames"], item["frames"])
    assert one["audio"].shape == (32, 198)
    # neither: the item of before, whatever the cache holds
    plain = _dataset(annotations, corpus_cache)[0]
    assert set(plain) == {"frames", "labels", "index", "name", "times", "picks"}
    assert torch.equal(plain["frames"], item["frames"])


def test_raw_items_match_the_cached_ones(av_corpus, corpus_cache):
    annotations = load_dataset(av_corpus, "val")
    transform = VideoTransform(56, augment=False)
    cached = _dataset(annotations, corpus_cache, motion=2, audio=True)
    raw = RawVideoDataset(annotations, FrameSpec(k=3, size=64, motion=2), "test", transform,
                          audio=AudioSpec(seconds=2.0))
    assert raw.motion == 2 and raw.audio == AudioSpec(seconds=2.0)
    for index in range(3):
        a, b = cached[index], raw[index]
        assert a["name"] == b["name"] and set(a) - {"picks"} == set(b)
        assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["motion"], b["motion"])
        assert bool(a["audio_mask"]) == bool(b["audio_mask"]) and a["audio"].shape == b["audio"].shape
        assert torch.equal(a["audio"], b["audio"])  # float32 samples: the features serving computes
    assert set(RawVideoDataset(annotations, FrameSpec(k=3, size=64), "test", transform)[0]) == \
        {"frames", "labels", "index", "name", "times"}


@pytest.mark.parametrize("seed", range(6))
def test_one_transform_call_keeps_motion_frames_aligned_with_their_keyframes(seed):
    rng = np.random.default_rng(seed)
    frames = torch.from_numpy(rng.integers(0, 256, (3, 40, 60, 3), dtype=np.uint8))
    other = torch.from_numpy(rng.integers(0, 256, (3, 40, 60, 3), dtype=np.uint8))
    motion = torch.stack([frames, other], 1)  # each keyframe's first motion frame is the keyframe itself
    transform = VideoTransform(32, augment=True, jitter=0.4)
    torch.manual_seed(seed)
    out, moved = transform.with_motion(frames, motion, "train")
    assert out.shape == (3, 3, 32, 32) and moved.shape == (3, 2, 3, 32, 32)
    assert torch.equal(moved[:, 0], out) and not torch.allclose(moved[:, 1], out)
    torch.manual_seed(seed)  # the same draw as the frames alone
    assert torch.equal(transform(frames, "train"), out)
    # test mode: the NumPy centre crop, the same as torchvision's
    out, moved = transform.with_motion(frames, motion, "test")
    reference = transform.test(other.permute(0, 3, 1, 2))
    assert torch.equal(moved[:, 0], out) and torch.allclose(moved[:, 1], reference, atol=1e-5)
    with pytest.raises(ValueError, match="do not follow"):
        transform_with_motion(transform, frames, motion[:2], "test")


def test_seeded_training_items_transform_frames_and_motion_in_one_draw(av_corpus, corpus_cache):
    annotations = load_dataset(av_corpus, "train")
    calls = []

    def spy(frames: torch.Tensor, mode: str) -> torch.Tensor:
        calls.append(frames.shape)
        return VideoTransform(48)(frames, mode)

    dataset = CachedVideoDataset(annotations, corpus_cache, k=3, mode="train", transform=spy, seed=5, motion=2)
    item = dataset[2]
    shape = FrameCache(corpus_cache).read(item["name"]).frames.shape[1:]
    assert calls == [(9, *shape)]  # 3 keyframes and their 6 motion frames, one call
    again = CachedVideoDataset(annotations, corpus_cache, k=3, mode="train", transform=VideoTransform(48), seed=5,
                               motion=2)[2]
    assert torch.equal(item["frames"], again["frames"]) and torch.equal(item["motion"], again["motion"])
    dataset.set_epoch(1)
    assert not torch.equal(dataset[2]["motion"], item["motion"])
    # without a transform the motion frames are the cached ones of the picks
    untouched = CachedVideoDataset(annotations, corpus_cache, k=3, mode="test", motion=2)[2]
    cached = FrameCache(corpus_cache).read(untouched["name"]).motion[untouched["picks"].numpy()]
    assert untouched["motion"].dtype == torch.uint8 and np.array_equal(untouched["motion"].numpy(), cached)


def test_probe_prints_the_sound(videos, capsys):
    assert main(["probe", str(videos["good"]), str(videos["mute"]), "--k", "2", "--size", "32", "--audio",
                 "--audio-seconds", "1"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["sound"]["status"], line["sound"]["length"]) for line in lines] == [("ok", 16000), ("none", 16000)]


def test_extract_help_shows_the_sound_options(capsys):
    with pytest.raises(SystemExit):
        main(["extract", "--help"])
    text = capsys.readouterr().out
    for flag in ("--motion", "--audio ", "--audio-seconds", "--audio-placement", "--audio-windows", "--audio-rate"):
        assert flag in text, flag
    assert main(["extract", "nowhere", "--out", "x", "--audio-seconds", "2"]) == 2
    assert "--audio-seconds given without --audio" in capsys.readouterr().err
    assert main(["extract", "nowhere", "--out", "x", "--audio", "--audio-seconds", "90"]) == 2
    assert "seconds must be" in capsys.readouterr().err
