"""Sound rules: classes that look alike and differ only in their audio track.

Each rule in `SOUNDS` renders mono samples from a numpy Generator: a pitch pattern (sweeps that rise
or fall, repeated about once a second so any second of the track shows the rule), a rhythm (pips at a
slow or a fast tempo), a timbre (a steady sine or a square wave of the same pitch range) or a noise
colour (white or brown). Pitch, loudness and phase are drawn per video, so only the rule is shared by a
class. A video's track (`video_sound`) mixes the rules of its sound labels; a video without one keeps
the encoder's default quiet tone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .encode import AUDIO_RATE
from .shapes import TAU, SceneClass

SoundFunction = Callable[[np.random.Generator, int, int], np.ndarray]
"""render(rng, samples, rate) -> float64 samples in [-1, 1] before loudness."""


def _sweep(direction: int) -> SoundFunction:
    """Exponential sine sweeps over one to two octaves, each 0.7-1.2 s, rising (+1) or falling (-1)."""

    def render(rng: np.random.Generator, samples: int, rate: int) -> np.ndarray:
        period = float(rng.uniform(0.7, 1.2))
        low, octaves = float(rng.uniform(200.0, 400.0)), float(rng.uniform(1.0, 2.0))
        seconds = np.arange(samples) / rate
        within = (seconds / period) % 1.0
        ramp = within if direction > 0 else 1.0 - within
        frequency = low * 2.0 ** (octaves * ramp)
        return np.sin(np.cumsum(TAU * frequency / rate) + rng.uniform(0.0, TAU))

    return render


def _beats(tempo: tuple[float, float]) -> SoundFunction:
    """Short decaying pips (40 ms) at a pitch of 300-1000 Hz, `tempo` beats per second."""

    def render(rng: np.random.Generator, samples: int, rate: int) -> np.ndarray:
        beat = float(rng.uniform(*tempo))
        pitch = float(rng.uniform(300.0, 1000.0))
        seconds = np.arange(samples) / rate
        since = ((seconds + rng.uniform(0.0, 1.0 / beat)) * beat % 1.0) / beat
        return np.sin(TAU * pitch * seconds) * np.exp(-since / 0.04)

    return render


def _tone(harmonics: bool) -> SoundFunction:
    """A steady tone of 150-500 Hz: a pure sine, or a band-limited square wave (odd harmonics, 1/k)."""

    def render(rng: np.random.Generator, samples: int, rate: int) -> np.ndarray:
        pitch = float(rng.uniform(150.0, 500.0))
        phase = TAU * pitch * np.arange(samples) / rate + rng.uniform(0.0, TAU)
        if not harmonics:
            return np.sin(phase)
        orders = [k for k in range(1, 40, 2) if k * pitch < rate / 2 * 0.9]
        return sum(np.sin(k * phase) / k for k in orders) * (4.0 / np.pi) / 1.2

    return render


def _noise(colour: str) -> SoundFunction:
    """White noise, or brown noise (integrated white noise, its drift removed)."""

    def render(rng: np.random.Generator, samples: int, rate: int) -> np.ndarray:
        white = rng.standard_normal(samples)
        if colour == "white":
            return white / 3.0
        brown = np.cumsum(white)
        brown -= np.convolve(brown, np.ones(rate // 20) / (rate // 20), mode="same")  # drop the slowest drift
        return brown / max(float(np.abs(brown).max()), 1e-9)

    return render


SOUNDS: dict[str, SoundFunction] = {
    "rising": _sweep(+1),
    "falling": _sweep(-1),
    "beat_slow": _beats((1.5, 2.5)),
    "beat_fast": _beats((5.0, 7.0)),
    "hum": _tone(harmonics=False),
    "buzz": _tone(harmonics=True),
    "hiss": _noise("white"),
    "rumble": _noise("brown"),
}
"""Every sound rule by name. Siblings differ in one property: pitch pattern (rising / falling), rhythm
(beat_slow / beat_fast), timbre (hum / buzz) and noise colour (hiss / rumble)."""


def render_sound(rule: str, rng: np.random.Generator, seconds: float, rate: int = AUDIO_RATE) -> np.ndarray:
    """`seconds` of rule `rule` as float32 mono samples at `rate`, peak loudness 0.15-0.3."""
    if rule not in SOUNDS:
        raise ValueError(f"unknown sound rule {rule!r}; choose one of {sorted(SOUNDS)}")
    samples = max(1, round(seconds * rate))
    wave = SOUNDS[rule](rng, samples, rate)
    loudness = float(rng.uniform(0.15, 0.3))
    return (np.clip(wave, -1.0, 1.0) * loudness).astype(np.float32)


def video_sound(seed: Sequence[int], labels: Sequence[int], classes: Sequence[SceneClass],
                seconds: float) -> np.ndarray | None:
    """The audio track of a video showing `labels`: the mix of its sound classes' rules, drawn from a
    Generator seeded with `seed`; None when no label is a sound class (the encoder's default tone)."""
    rules = [classes[label].sound for label in labels if classes[label].sound]
    if not rules:
        return None
    rng = np.random.default_rng(list(seed))
    mix = sum(render_sound(rule, rng, seconds) for rule in rules) / len(rules)
    return np.asarray(mix, np.float32)
