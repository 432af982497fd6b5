"""The audio-visual corpus (`av` catalogue): motion classes that differ only in how their object moves,
sound classes that differ only in their audio, both with keyframes that cannot tell siblings apart."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import av
import numpy as np
import pytest

from shortvid.data.labels import LabelMap
from shortvid.synth.corpus import PRESETS, generate_corpus, plan_corpus, preset, script_for, sound_for
from shortvid.synth.motion import MOTIONS, position
from shortvid.synth.render import render_frames
from shortvid.synth.shapes import AV_GROUPS
from shortvid.synth.sound import SOUNDS, render_sound

AV_TINY = PRESETS["av-tiny"]
RATE = 16000  # what the tests resample the audio to, as a reader would


@pytest.fixture(scope="module")
def av_corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("av") / "corpus"
    generate_corpus(out, AV_TINY, workers=2, progress=False)
    return out


def single_label_plans(spec, kind: str) -> dict[str, list]:
    """Plans of the single-label videos of each class of `kind`, by class name."""
    plans: dict[str, list] = {}
    for plan in plan_corpus(spec):
        scene_class = spec.classes[plan.labels[0]]
        if len(plan.labels) == 1 and scene_class.kind == kind:
            plans.setdefault(scene_class.name, []).append(plan)
    return plans


def upright_frames(path: Path, rotated: bool) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24").astype(np.float32) for frame in container.decode(video=0)]
    return [np.rot90(frame, k=1) if rotated else frame for frame in frames]


def mono_audio(path: Path) -> np.ndarray:
    """The audio track as mono float samples at RATE."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    chunks = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            chunks += [resampled.to_ndarray().reshape(-1) for resampled in resampler.resample(frame)]
    chunks += [resampled.to_ndarray().reshape(-1) for resampled in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.float64)


def best_shift(before: np.ndarray, after: np.ndarray, reach: int = 7) -> tuple[int, int]:
    """The whole-pixel (dx, dy) that best maps `before` onto `after` (least mean absolute difference)."""
    height, width = before.shape[:2]
    errors = {}
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            moved = before[max(0, -dy):height - max(0, dy), max(0, -dx):width - max(0, dx)]
            target = after[max(0, dy):height - max(0, -dy), max(0, dx):width - max(0, -dx)]
            errors[dx, dy] = float(np.abs(moved - target).mean())
    return min(errors, key=errors.get)


def motion_plans(spec) -> dict[str, list]:
    """Plans of the videos showing each motion class (multi-label ones included), by class name."""
    plans: dict[str, list] = {}
    for plan in plan_corpus(spec):
        for label in plan.labels:
            if spec.classes[label].kind == "motion":
                plans.setdefault(spec.classes[label].name, []).append((plan, label))
    return plans


def measured_motion(out: Path, spec, plan, class_id: int) -> list[tuple[float, float, float, float]]:
    """(dx, dy, x, y) per consecutive decoded frame pair: the content's shift (pixels) in a window around
    an object of class `class_id` (x, y: its place relative to its orbit's centre, 0 for lines)."""
    script = script_for(spec, plan)
    frames = upright_frames(out / "videos" / plan.file_name, plan.rotated)
    height, width = frames[0].shape[:2]
    moves = []
    for shot in script.shots:
        sprite = next((s for s in shot.sprites if s.class_id == class_id), None)
        if sprite is None:
            continue
        reach = int(max(sprite.radius) * min(width, height) * 1.3) + 7
        for index in range(shot.start, shot.stop - 1):
            cx, cy = position(sprite.trajectory, script.times[index] - script.times[shot.start], width, height)
            x0, x1 = max(0, int(cx) - reach), min(width, int(cx) + reach)
            y0, y1 = max(0, int(cy) - reach), min(height, int(cy) + reach)
            if x1 - x0 < reach or y1 - y0 < reach:  # mostly off the frame (a line wrapping round)
                continue
            dx, dy = best_shift(frames[index][y0:y1, x0:x1], frames[index + 1][y0:y1, x0:x1])
            centre = sprite.trajectory.origin
            orbit = sprite.trajectory.path == "orbit"
            relative = (cx - centre[0] * width, cy - centre[1] * height) if orbit else (0, 0)
            moves.append((dx, dy, *relative))
    return moves


def dominant_frequencies(samples: np.ndarray, window: int = 1024, hop: int = 512) -> np.ndarray:
    starts = range(0, samples.size - window, hop)
    spectra = np.abs(np.fft.rfft(np.stack([samples[s:s + window] * np.hanning(window) for s in starts]), axis=1))
    return np.fft.rfftfreq(window, 1 / RATE)[spectra.argmax(axis=1)]


def rising_share(samples: np.ndarray) -> float:
    """Of the changes of the dominant frequency between consecutive windows, the share that go up."""
    changes = np.diff(dominant_frequencies(samples))
    return float(np.mean(changes[changes != 0] > 0))


def power_above(samples: np.ndarray, hertz: float) -> float:
    power = np.abs(np.fft.rfft(samples)) ** 2
    frequencies = np.fft.rfftfreq(samples.size, 1 / RATE)
    return float(power[frequencies > hertz].sum() / power.sum())


def beats_per_second(samples: np.ndarray) -> float:
    """Onsets per second: rises of the 10 ms envelope through half its peak."""
    step = RATE // 100
    envelope = np.abs(samples[:samples.size // step * step]).reshape(-1, step).max(axis=1)
    loud = envelope > 0.5 * envelope.max()
    return float(np.count_nonzero(loud[1:] & ~loud[:-1])) / (samples.size / RATE)


def test_av_catalogue_and_presets():
    classes = AV_TINY.classes
    assert classes == tuple(member for members in AV_GROUPS.values() for member in members)
    kinds = {c.kind for c in classes}
    assert kinds == {"appearance", "motion", "sound"}
    assert {c.motion for c in classes if c.kind == "motion"} == set(MOTIONS)
    assert {c.sound for c in classes if c.kind == "sound"} == set(SOUNDS)
    for kind in ("motion", "sound"):  # one look per group: only the rule differs
        members = [c for c in classes if c.kind == kind]
        assert len({c.group for c in members}) == 1 and len({c.draw for c in members}) == 1
    assert PRESETS["av"].classes == classes and PRESETS["av"].max_shots == 3
    assert all(spec.max_shots == 4 for name, spec in PRESETS.items() if not name.startswith("av"))


def test_motion_and_sound_keyframes_do_not_reveal_the_class():
    """Within the motion group and within the sound group, nearest-class-mean on a video's first frame
    (mean RGB) and its object's place and size stays at chance: siblings look alike."""
    spec = preset("av-tiny", num_videos=448, min_videos_per_class=16, val_fraction=0.5, multilabel_share=0.0,
                  sizes=((48, 80),), rotated_share=0.0, vfr_share=0.0, duration=(0.4, 0.5), render_short_side=48)
    for kind in ("motion", "sound"):
        features, labels, splits = [], [], []
        for name, plans in single_label_plans(spec, kind).items():
            for plan in plans:
                script = script_for(spec, plan)
                first = next(render_frames(script, spec.classes, render_short_side=48))
                sprite = script.shots[0].sprites[0]
                place = position(sprite.trajectory, 0.0, 80, 48) if sprite.trajectory else (
                    sprite.start[0] * 48, sprite.start[1] * 80)
                features.append([*first.reshape(-1, 3).mean(axis=0), *place, sprite.radius[0] * 100])
                labels.append(name)
                splits.append(plan.split)
        features, labels, splits = np.array(features), np.array(labels), np.array(splits)
        names = sorted(set(labels))
        train, test = splits == "train", splits == "val"
        means = np.stack([features[train & (labels == name)].mean(axis=0) for name in names])
        predicted = np.array(names)[np.argmin(((features[test, None] - means[None]) ** 2).sum(-1), axis=1)]
        accuracy = float((predicted == labels[test]).mean())
        assert accuracy < 1 / len(names) + 0.1, f"{kind}: a keyframe predicts the class ({accuracy:.2f})"


def test_sound_rules_differ_as_named():
    rng = np.random.default_rng(0)
    for _ in range(3):
        rising, falling = (render_sound(rule, rng, 2.0, RATE).astype(np.float64) for rule in ("rising", "falling"))
        assert rising_share(rising) > 0.7 and rising_share(falling) < 0.3
        slow, fast = (render_sound(rule, rng, 3.0, RATE) for rule in ("beat_slow", "beat_fast"))
        assert beats_per_second(fast) > 1.8 * beats_per_second(slow)
        hum, buzz = (render_sound(rule, rng, 1.0, RATE) for rule in ("hum", "buzz"))
        assert power_above(buzz, 1.5 * dominant_frequencies(buzz).max()) > 0.05
        assert power_above(hum, 1.5 * dominant_frequencies(hum).max()) < 0.01
        hiss, rumble = (render_sound(rule, rng, 1.0, RATE) for rule in ("hiss", "rumble"))
        assert power_above(hiss, 2000) > 0.6 and power_above(rumble, 2000) < 0.05
        assert max(np.abs(s).max() for s in (rising, falling, slow, fast, hum, buzz, hiss, rumble)) <= 0.3
    with pytest.raises(ValueError, match="unknown sound rule"):
        render_sound("chirp", rng, 1.0)


@pytest.mark.slow
def test_av_preset_generates_every_class_with_few_keyframes(av_corpus):
    with open(av_corpus / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["name"], row["group"], row["kind"]) for row in rows] == [
        (c.name, c.group, c.kind) for c in AV_TINY.classes]
    labels = LabelMap.from_csv(av_corpus / "labels.csv")
    assert labels.names == tuple(c.name for c in AV_TINY.classes)
    assert set(labels.groups) == {"stars", "rings", "motion", "sound"}
    assert labels.class_kinds == tuple(c.kind for c in AV_TINY.classes)
    labels.to_csv(av_corpus / "copy.csv")
    assert (av_corpus / "copy.csv").read_bytes() == (av_corpus / "labels.csv").read_bytes()
    (av_corpus / "copy.csv").unlink()
    assert labels.subset(["hum", "star5"]).class_kinds == ("appearance", "sound")
    record = json.loads((av_corpus / "corpus.json").read_text())
    assert [entry["kind"] for entry in record["classes"]] == [c.kind for c in AV_TINY.classes]
    manifest = [json.loads(line) for line in (av_corpus / "manifest.jsonl").read_text().splitlines()]
    assert {label for row in manifest for label in row["labels"]} == set(range(AV_TINY.num_classes))
    assert {len(row["keyframe_times"]) for row in manifest} <= {1, 2, 3}
    for row in manifest:
        with av.open(str(av_corpus / "videos" / row["name"])) as container:
            assert container.streams.audio and container.streams.audio[0].codec_context.name == "aac"


@pytest.mark.slow
def test_motion_siblings_move_by_their_rule(av_corpus):
    """Decoded frame pairs: the content around the object shifts as the class's rule says."""
    stats = {}
    for name, plans in motion_plans(AV_TINY).items():
        moves = np.array([move for plan, label in plans for move in measured_motion(av_corpus, AV_TINY, plan, label)])
        speed = np.hypot(moves[:, 0], moves[:, 1])
        turning = np.sign(moves[:, 2] * moves[:, 1] - moves[:, 3] * moves[:, 0])  # + clockwise on screen
        stats[name] = {"dx": moves[:, 0].mean(), "dy": moves[:, 1].mean(), "speed": speed.mean(),
                       "stop": float(np.mean(speed == 0)), "across": float(np.mean(np.abs(moves[:, 1]) > 0)),
                       "turning": turning[speed > 0].mean()}
    assert stats["move_right"]["dx"] > 0.5 > -0.5 > stats["move_left"]["dx"], stats
    assert stats["move_down"]["dy"] > 0.5 > -0.5 > stats["move_up"]["dy"], stats
    assert stats["dash_right"]["speed"] > 1.5 * stats["move_right"]["speed"], stats
    assert stats["hop_right"]["stop"] > stats["move_right"]["stop"] + 0.1, stats
    assert stats["orbit_cw"]["across"] > stats["move_right"]["across"] + 0.3, stats
    assert stats["orbit_cw"]["turning"] > 0.3 and stats["orbit_ccw"]["turning"] < -0.3, stats


@pytest.mark.slow
def test_sound_siblings_sound_by_their_rule(av_corpus):
    """Decoded audio (mono, 16 kHz) follows the class's rule; the sound group's frames share one look."""
    tracks = {name: [mono_audio(av_corpus / "videos" / plan.file_name) for plan in plans]
              for name, plans in single_label_plans(AV_TINY, "sound").items()}
    assert min(map(rising_share, tracks["rising"])) > 0.7 > 0.3 > max(map(rising_share, tracks["falling"]))
    assert min(map(beats_per_second, tracks["beat_fast"])) > 1.8 * max(map(beats_per_second, tracks["beat_slow"]))
    for hum, buzz in zip(tracks["hum"], tracks["buzz"], strict=False):
        assert power_above(buzz, 1.5 * np.median(dominant_frequencies(buzz))) > 0.03
        assert power_above(hum, 1.5 * np.median(dominant_frequencies(hum))) < 0.01
    assert min(power_above(s, 2000) for s in tracks["hiss"]) > 0.5 > 0.05 > max(
        power_above(s, 2000) for s in tracks["rumble"])
    appearance = {AV_TINY.classes[plan.labels[0]].draw for plans in single_label_plans(AV_TINY, "sound").values()
                  for plan in plans}
    assert len(appearance) == 1


@pytest.mark.slow
def test_av_corpus_is_deterministic(av_corpus, tmp_path):
    """Same seed: the same files and video bytes; the AAC track's samples agree within 1e-3."""
    again = tmp_path / "again"
    spec = AV_TINY
    generate_corpus(again, spec, workers=1, progress=False)
    for name in ("train.txt", "val.txt", "labels.csv", "corpus.json", "manifest.jsonl"):
        assert (again / name).read_bytes() == (av_corpus / name).read_bytes(), name
    for plan in plan_corpus(spec)[:12]:
        streams = []
        for root in (again, av_corpus):
            with av.open(str(root / "videos" / plan.file_name)) as container:
                streams.append([bytes(packet) for packet in container.demux(video=0)])
        assert streams[0] == streams[1], plan.file_name
        first, second = (mono_audio(root / "videos" / plan.file_name) for root in (again, av_corpus))
        assert first.shape == second.shape and np.abs(first - second).max() <= 1e-3
    plan = next(p for p in plan_corpus(spec) if spec.classes[p.labels[0]].sound)
    assert np.array_equal(sound_for(spec, plan, 1.0), sound_for(spec, plan, 1.0))
