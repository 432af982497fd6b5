"""Synthetic corpus: determinism, AI Challenger layout, encoding properties, colour-blindness, resuming,
and the pretraining catalogue (hundreds of classes, none of them a bench class)."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
from pathlib import Path

import av
import numpy as np
import pytest

from shortvid.errors import DatasetError
from shortvid.synth.compounds import FILLS, PRETRAIN_GROUPS, SILHOUETTES, TEXTURES
from shortvid.synth.corpus import (
    PRESETS,
    CorpusSpec,
    generate_corpus,
    plan_corpus,
    preset,
    script_for,
)
from shortvid.synth.plans import plan_video, select_classes
from shortvid.synth.render import render_frames
from shortvid.synth.shapes import GROUPS, VARIATION_SIZE

TINY = preset("tiny")


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("tiny") / "corpus"
    summary = generate_corpus(out, TINY, workers=2, progress=False)
    return out, summary


def read_annotations(path: Path) -> dict[str, list[int]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return {line.split(",")[0]: [int(label) for label in line.split(",")[1:]] for line in lines}


def read_manifest(out: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    return {row["name"]: row for row in rows}


AUDIO_TOLERANCE = 1e-3
"""Largest difference allowed between decoded audio samples of two generations (the tone peaks at 0.05).
Video frames must decode identically: x264 runs single-threaded with `cpu-independent`, which makes its
output a function of its input alone, and H.264 decoding is exact. FFmpeg's AAC encoder promises no
such thing, so the audio only has to agree in length and within this tolerance."""


def decoded_content(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Every decoded picture as stored (yuv420p planes, no colour conversion) and the audio samples."""
    with av.open(str(path)) as container:
        pictures = [frame.to_ndarray(format="yuv420p") for frame in container.decode(video=0)]
    with av.open(str(path)) as container:
        sound = [frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)]
    return pictures, np.concatenate(sound) if sound else np.zeros(0, np.float32)


def assert_same_content(path: Path, expected: tuple[list[np.ndarray], np.ndarray]) -> None:
    pictures, sound = decoded_content(path)
    assert len(pictures) == len(expected[0]), f"{path.name}: {len(pictures)} frames, expected {len(expected[0])}"
    for index, (picture, reference) in enumerate(zip(pictures, expected[0], strict=True)):
        if not np.array_equal(picture, reference):
            worst = int(np.abs(picture.astype(int) - reference).max())
            raise AssertionError(f"{path.name}: frame {index} decodes differently (max difference {worst})")
    assert sound.shape == expected[1].shape, f"{path.name}: audio length differs"
    if sound.size:
        assert float(np.abs(sound.astype(np.float64) - expected[1]).max()) <= AUDIO_TOLERANCE, path.name


def assert_same_corpus(out: Path, reference: Path) -> None:
    """What a seed promises: the same annotation files and manifest, and videos that decode the same."""
    for name in ("train.txt", "val.txt", "labels.csv", "corpus.json"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert read_manifest(out) == read_manifest(reference), "manifest (sizes, flags, frames, cut and keyframe times)"
    names = sorted(path.name for path in (reference / "videos").iterdir())
    assert sorted(path.name for path in (out / "videos").iterdir()) == names
    for name in names:
        assert_same_content(out / "videos" / name, decoded_content(reference / "videos" / name))


def test_layout_and_annotation_format(tiny_corpus):
    out, summary = tiny_corpus
    with open(out / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["id", "name", "group"]
    assert [int(row["id"]) for row in rows] == list(range(TINY.num_classes))
    assert len({row["group"] for row in rows}) == TINY.num_groups
    train, val = read_annotations(out / "train.txt"), read_annotations(out / "val.txt")
    assert not set(train) & set(val)
    assert len(train) + len(val) == TINY.num_videos
    assert summary.split_counts == {"train": len(train), "val": len(val)}
    for text in ((out / "train.txt").read_text(), (out / "val.txt").read_text()):
        assert text.endswith("\n") and not text.startswith("name")
    videos = {path.name for path in (out / "videos").iterdir()}
    assert videos == set(train) | set(val), "every listed video exists and nothing else (no partial files)"
    for name, labels in {**train, **val}.items():
        assert name.endswith(".mp4")
        assert labels and len(set(labels)) == len(labels) <= 3
        assert all(0 <= label < TINY.num_classes for label in labels)
    multi = [labels for labels in {**train, **val}.values() if len(labels) > 1]
    assert len(multi) == round(TINY.multilabel_share * TINY.num_videos)
    assert summary.multilabel_share == pytest.approx(len(multi) / TINY.num_videos)
    assert any("_" in name for name in videos), "some names are clips: <id>_<start>_<end>.mp4"
    every_class = {label for labels in train.values() for label in labels}
    assert every_class == set(range(TINY.num_classes)), "every class has training videos"
    record = json.loads((out / "corpus.json").read_text())
    assert CorpusSpec.from_dict(record["spec"]) == TINY
    assert sum(summary.keyframe_histogram.values()) == TINY.num_videos


def test_every_video_decodes_with_expected_properties(tiny_corpus):
    out, _ = tiny_corpus
    manifest = read_manifest(out)
    assert sum(row["legacy"] for row in manifest.values()) == round(TINY.legacy_share * TINY.num_videos)
    assert sum(row["vfr"] for row in manifest.values()) == round(TINY.vfr_share * TINY.num_videos)
    assert any(row["rotation"] for row in manifest.values())
    assert any(row["cut_times"] for row in manifest.values())
    for name, row in manifest.items():
        path = out / "videos" / name
        data = path.read_bytes()
        assert data.index(b"moov") < data.index(b"mdat"), f"{name}: faststart puts the index first"
        with av.open(str(path)) as container:
            video = container.streams.video[0]
            assert [s.type for s in container.streams][0] == ("audio" if row["audio_first"] else "video")
            assert container.streams.audio and container.streams.audio[0].codec_context.name == "aac"
            assert video.codec_context.name == "h264"
            assert ("Baseline" if row["legacy"] else "High") in video.codec_context.profile
            stored = (video.codec_context.width, video.codec_context.height)
            upright = (row["width"], row["height"])
            assert stored == (upright[::-1] if row["rotation"] == 90 else upright)
            packets = [p for p in container.demux(video) if p.pts is not None]
        times = sorted(float(p.pts * p.time_base) for p in packets)
        keyframes = sorted(float(p.pts * p.time_base) for p in packets if p.is_keyframe)
        assert len(times) == row["frames"]
        assert keyframes == pytest.approx(row["keyframe_times"], abs=1e-4)
        for cut in row["cut_times"]:
            assert min(abs(cut - k) for k in keyframes) < 1e-3, f"{name}: no keyframe at the cut {cut}"
        gop = round(TINY.fps) if row["legacy"] else TINY.gop
        key_indices = [i for i, t in enumerate(times) if min(abs(t - k) for k in keyframes) < 1e-6]
        gaps = np.diff(key_indices + [len(times)])
        assert key_indices[0] == 0 and gaps.max() <= gop, f"{name}: {gaps.max()} frames between keyframes"
        intervals = np.diff(times)
        if row["vfr"]:
            assert intervals.max() - intervals.min() > 0.3 / TINY.fps, f"{name}: variable frame rate expected"
        else:
            assert intervals == pytest.approx(1 / TINY.fps, abs=1e-3)


def test_same_seed_same_corpus_and_different_seed_differs(tiny_corpus, tmp_path):
    """Two worker processes (the fixture) or one, after other videos or not: the same corpus."""
    out, _ = tiny_corpus
    again = tmp_path / "again"
    generate_corpus(again, TINY, workers=1, progress=False)
    assert_same_corpus(again, out)
    other = plan_corpus(dataclasses.replace(TINY, seed=1))
    same = plan_corpus(TINY)
    assert [(p.name, p.labels) for p in other] != [(p.name, p.labels) for p in same]
    assert {p.name for p in other}.isdisjoint({p.name for p in same})


def test_resume_keeps_finished_videos_and_makes_the_rest(tmp_path):
    spec = preset("tiny", num_videos=12, multilabel_share=0.2)
    out = tmp_path / "corpus"
    generate_corpus(out, spec, workers=1, progress=False)
    videos = sorted((out / "videos").iterdir())
    originals = {path.name: decoded_content(path) for path in videos}
    stamps = {path.name: path.stat().st_mtime_ns for path in videos}
    manifest = read_manifest(out)
    lost = videos[:3]
    for path in lost:
        path.unlink()
    (out / "videos" / f".{lost[0].stem}.partial.mp4").write_bytes(b"cut short")
    lost[1].write_bytes(b"")  # a damaged file under a final name is made again
    (out / "train.txt").unlink()
    summary = generate_corpus(out, spec, workers=1, progress=False)
    assert (summary.generated, summary.reused) == (3, 9)
    assert not list((out / "videos").glob(".*"))
    assert sorted(path.name for path in (out / "videos").iterdir()) == sorted(originals)
    for path in sorted((out / "videos").iterdir()):
        if path in lost:  # made again, in a process that has made other videos since
            assert_same_content(path, originals[path.name])
        else:
            assert path.stat().st_mtime_ns == stamps[path.name], f"{path.name} was rewritten"
    assert read_manifest(out) == manifest
    assert (out / "train.txt").exists()
    with pytest.raises(DatasetError, match="different spec"):
        generate_corpus(out, dataclasses.replace(spec, seed=5), workers=1, progress=False)


@pytest.mark.parametrize("name, classes", [
    ("small", {}),
    ("pretrain", {"num_classes": 24, "num_groups": 6}),  # 4 a group: one class of each kind
])
def test_mean_colour_does_not_reveal_the_class(name, classes):
    """Nearest-class-mean on per-video mean RGB stays at chance: colours are independent of the class."""
    spec = preset(name, num_videos=480, min_videos_per_class=1, val_fraction=0.5, long_tail=0.0,
                  multilabel_share=0.0, sizes=((48, 80),), legacy_share=0.0, rotated_share=0.0, vfr_share=0.0,
                  duration=(1.0, 1.4), fps=6.0, render_short_side=48, **classes)
    features, classes, splits = [], [], []
    for plan in plan_corpus(spec):
        frames = np.stack(list(render_frames(script_for(spec, plan), spec.classes, render_short_side=48)))
        features.append(frames.reshape(-1, 3).mean(axis=0))
        classes.append(plan.labels[0])
        splits.append(plan.split)
    features, classes, splits = np.array(features), np.array(classes), np.array(splits)
    train, test = splits == "train", splits == "val"
    means = np.stack([features[train & (classes == c)].mean(axis=0) for c in range(spec.num_classes)])
    predicted = np.argmin(((features[test, None, :] - means[None]) ** 2).sum(axis=-1), axis=1)
    accuracy = float((predicted == classes[test]).mean())
    chance = 1.0 / spec.num_classes
    assert accuracy < chance + 0.07, f"mean colour predicts the class: {accuracy:.3f} vs chance {chance:.3f}"


def test_scenes_are_deterministic_and_show_every_label():
    classes = select_classes(12, 4)
    times = np.arange(40) / 10.0

    def draw(seed: int, labels: list[int]) -> tuple[object, np.ndarray]:
        script = plan_video(np.random.default_rng(seed), labels, classes, times, 64, 112)
        return script, np.stack(list(render_frames(script, classes)))

    first, frames = draw(3, [1, 10])
    again, frames_again = draw(3, [1, 10])
    assert first == again and np.array_equal(frames, frames_again)
    assert not np.array_equal(frames, draw(4, [1, 10])[1])
    assert frames.shape == (40, 112, 64, 3) and frames.dtype == np.uint8
    for seed in range(20):
        script, _ = draw(seed, [0, 5, 9])
        shown = {c for shot in script.shots for c in shot.class_ids}
        assert shown == {0, 5, 9}, f"seed {seed}: every label appears on screen"
        assert script.shots[0].start == 0 and script.shots[-1].stop == len(times)
        assert all(a.stop == b.start for a, b in itertools.pairwise(script.shots))
        assert all(s.class_ids for s in script.shots if s.kind == "content")
        assert all(not s.class_ids for s in script.shots if s.kind != "content")


def test_catalogue_groups_and_presets():
    assert len(GROUPS) >= 4 and all(len(members) >= 6 for members in GROUPS.values())
    names = [c.name for members in GROUPS.values() for c in members]
    assert len(names) == len(set(names))
    classes = select_classes(10, 4)
    assert [sum(c.group == g for c in classes) for g in list(GROUPS)[:4]] == [3, 3, 2, 2]
    assert set(PRESETS) == {"tiny", "small", "bench", "pretrain", "av", "av-tiny"}
    assert preset("small", seed=9).seed == 9
    assert preset("bench").num_groups == 4 and preset("bench").long_tail > 0
    with pytest.raises(ValueError, match="unknown corpus preset"):
        preset("huge")
    with pytest.raises(ValueError):
        preset("tiny", num_classes=20)
    with pytest.raises(ValueError, match="unknown class catalogue"):
        preset("tiny", catalogue="imagenet")
    # Fields added later stay out of the records of specs that leave them at their defaults, so those
    # corpora keep their corpus.json byte for byte (and resume).
    later = {"catalogue", "distractors", "max_shots", "scenecut"}
    assert later.isdisjoint(preset("bench").to_dict())
    assert {"catalogue", "distractors"} <= set(preset("pretrain").to_dict())
    assert later <= set(preset("av").to_dict())
    assert all(CorpusSpec.from_dict(spec.to_dict()) == spec for spec in PRESETS.values())
    with pytest.raises(ValueError):
        preset("tiny", sizes=((95, 160),))
    long_tail = plan_corpus(preset("small", long_tail=1.2, num_videos=400, min_videos_per_class=5))
    counts = np.bincount([p.labels[0] for p in long_tail])
    assert counts.min() >= 5 and counts.max() >= 8 * counts.min()


def drawn_masks(classes, size: int = 40) -> np.ndarray:
    """Coverage and accent of each class on one grid, with one fixed variation: [classes, 2 * size * size]."""
    extent = np.linspace(-1.15, 1.15, size, dtype=np.float32)
    u, v = np.meshgrid(extent, extent)
    variation = np.full(VARIATION_SIZE, 0.5, np.float32)
    masks = []
    for scene_class in classes:
        coverage, accent = scene_class.draw(u, v, 2.3 / size, variation)
        accent = np.zeros_like(u) if accent is None else accent
        masks.append(np.concatenate([np.broadcast_to(coverage, u.shape).ravel(),
                                     np.broadcast_to(accent * coverage, u.shape).ravel()]))
    return np.stack(masks)


def test_pretrain_classes_are_hundreds_and_none_is_a_bench_class():
    pretrain, bench = preset("pretrain"), preset("bench")
    classes = pretrain.classes
    assert 300 <= len(classes) <= 500 and pretrain.catalogue == "pretrain"
    assert classes == tuple(member for members in PRETRAIN_GROUPS.values() for member in members)
    assert len({c.name for c in classes}) == len(classes)
    assert len({c.group for c in classes}) == pretrain.num_groups
    # By name: no class and no primitive is named like a standard class (bench's or any other).
    standard = {c.name for members in GROUPS.values() for c in members}
    assert not standard & {c.name for c in classes}
    assert not standard & (set(SILHOUETTES) | set(FILLS) | set(TEXTURES))
    # By construction: each class is one silhouette combined with a fill, a second silhouette or a texture.
    combinations = ({f"{s}_{fill}" for s in SILHOUETTES for fill in FILLS}
                    | {f"{s}_{link}_{t}" for s in SILHOUETTES for t in SILHOUETTES for link in ("holding", "and")}
                    | {f"{s}_on_{texture}" for s in SILHOUETTES for texture in TEXTURES})
    assert {c.name for c in classes} <= combinations
    assert {c.draw for c in classes}.isdisjoint({c.draw for members in GROUPS.values() for c in members})
    # And as drawn: every class differs from every bench class, and from every other class.
    masks, bench_masks = drawn_masks(classes), drawn_masks(bench.classes)
    assert not np.isnan(masks).any() and masks.max() > 0.99
    to_bench = np.abs(masks[:, None, :] - bench_masks[None]).mean(axis=-1)
    assert to_bench.min() > 0.02, f"a pretrain class draws like a bench class ({to_bench.min():.4f})"
    squares = (masks ** 2).sum(axis=1)
    between = (squares[:, None] + squares[None] - 2.0 * masks @ masks.T) / masks.shape[1]
    np.fill_diagonal(between, np.inf)
    assert between.min() > 1e-3, "two pretrain classes draw the same picture"


def test_pretrain_sample_has_the_layout_and_decodes(tmp_path):
    """A sample of the pretrain preset (24 of its classes, one video each): the corpus layout, single
    labels, videos that decode, mostly 2-3 keyframes, and a record that rebuilds the spec."""
    spec = preset("pretrain", num_classes=24, num_groups=12, num_videos=24, min_videos_per_class=1)
    out = tmp_path / "pretrain"
    summary = generate_corpus(out, spec, workers=2, progress=False)
    with open(out / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["name"], row["group"]) for row in rows] == [(c.name, c.group) for c in spec.classes]
    train, val = read_annotations(out / "train.txt"), read_annotations(out / "val.txt")
    assert len(train) + len(val) == spec.num_videos and not set(train) & set(val)
    assert all(len(labels) == 1 for labels in {**train, **val}.values()), "single-label, as K-way pretraining wants"
    assert sorted(label for labels in {**train, **val}.values() for label in labels) == list(range(24))
    record = json.loads((out / "corpus.json").read_text())
    assert record["spec"]["catalogue"] == "pretrain" and CorpusSpec.from_dict(record["spec"]) == spec
    shots = [shot.kind for plan in plan_corpus(spec) for shot in script_for(spec, plan).shots]
    assert set(shots) == {"content"}, "no title cards or black frames: every keyframe shows its class"
    manifest = read_manifest(out)
    assert {path.name for path in (out / "videos").iterdir()} == set(manifest)
    for name, row in manifest.items():
        with av.open(str(out / "videos" / name)) as container:
            assert not container.streams.audio
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        assert len(frames) == row["frames"] and sorted(frames[0].shape[:2]) in ([112, 192], [128, 224], [128, 128])
    keyframes = sorted(count for count, videos in summary.keyframe_histogram.items() for _ in range(videos))
    assert keyframes[len(keyframes) // 2] in (2, 3), summary.keyframe_histogram
