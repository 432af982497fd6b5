"""The drawable classes of synthetic short videos: classes told apart by structure, not by colour.

Each class is one member of a shape family (stars, rings, patterned blobs, full-frame scenes,
marks). Classes of one family form a *group*: they share the drawing code and differ in a finer
detail (five points or six, one ring or two, straight or wavy stripes), so a classifier confuses
them with each other more than with other groups, as the competition's dog/cat or folk/street
dance did. A class only says where it is and where its accent goes; colours are the plan's.

Shapes are vectorised signed-distance fields in object-local coordinates, so the renderer can
evaluate them only inside each object's bounding box.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

DrawFunction = Callable[[np.ndarray, np.ndarray, float, np.ndarray], tuple[np.ndarray, "np.ndarray | None"]]
"""draw(u, v, pixel, variation) -> (coverage, accent): u, v are object-local coordinates (object
radius 1), pixel the size of one pixel in those units (for anti-aliasing), variation 8 numbers in
[0, 1) that vary an instance within its class. coverage in [0, 1] is where the object is; accent
in [0, 1] (or None) is where it takes its accent colour instead of its main colour."""

VARIATION_SIZE = 8
TAU = 2.0 * math.pi


@dataclass(frozen=True)
class SceneClass:
    """One drawable class: its name, its group and how to draw it; a motion or sound class also names the
    rule (`motion.MOTIONS`, `sound.SOUNDS`) that alone tells it from the other members of its group."""

    name: str
    group: str
    draw: DrawFunction
    full_frame: bool = False  # a scene that fills the frame (drawn as the backdrop) rather than an object
    motion: str = ""  # how its object moves (a `motion.MOTIONS` name); "": the plan's usual drift
    sound: str = ""  # what its video sounds like (a `sound.SOUNDS` name); "": the default tone

    @property
    def kind(self) -> str:
        """What tells the class from its group's other members: "appearance", "motion" or "sound"."""
        return "motion" if self.motion else "sound" if self.sound else "appearance"


# Shape helpers. Distances are signed (negative inside) and in object-local units.


def inside_coverage(distance: np.ndarray, pixel: float) -> np.ndarray:
    """Anti-aliased inside-coverage of a signed distance field."""
    return np.clip(0.5 - distance / pixel, 0.0, 1.0)


def polar(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(radius, angle) of object-local coordinates."""
    return np.hypot(u, v), np.arctan2(v, u)


def rotated(u: np.ndarray, v: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) in axes turned by `angle`: the local coordinates of an object rotated by `angle`."""
    cos, sin = math.cos(angle), math.sin(angle)
    return cos * u + sin * v, -sin * u + cos * v


def bar(u: np.ndarray, v: np.ndarray, angle: float, length: float, width: float, offset: float = 0.0) -> np.ndarray:
    """Distance to a rectangle of half-length `length`, half-width `width`, shifted `offset` across."""
    along, across = rotated(u, v, angle)
    return np.maximum(np.abs(along) - length, np.abs(across - offset) - width)


def cell_offset(coordinate: np.ndarray, period: float) -> np.ndarray:
    """Distance from the centre of the periodic cell the coordinate falls in."""
    return np.abs(coordinate / period - np.floor(coordinate / period) - 0.5) * period


def stripes(coordinate: np.ndarray, period: float, pixel: float) -> np.ndarray:
    """Half-duty stripes across `coordinate`."""
    return inside_coverage(cell_offset(coordinate, period) - 0.25 * period, pixel)


def hash_noise(values: np.ndarray, salt: float) -> np.ndarray:
    """Deterministic pseudo-random numbers in [0, 1) per integer value (per building, per column)."""
    noise = np.sin(values * 12.9898 + salt * 78.233) * 43758.5453
    return noise - np.floor(noise)


# Group "stars": radial outlines that differ in point count and tip shape.


def _star(points: int, inner: float) -> DrawFunction:
    def draw(u, v, pixel, variation):
        radius, theta = polar(u, v)
        phase = theta * (points / TAU)
        tip = np.abs(2.0 * (phase - np.floor(phase)) - 1.0)
        depth = inner + 0.08 * (variation[0] - 0.5)
        return inside_coverage((radius - depth - (1.0 - depth) * tip) * 0.7, pixel), None

    return draw


def _flower(petals: int) -> DrawFunction:
    def draw(u, v, pixel, variation):
        radius, theta = polar(u, v)
        outline = 0.35 + 0.65 * np.abs(np.cos(theta * (petals / 2.0))) ** (0.6 + 0.4 * variation[0])
        heart = inside_coverage(radius - 0.22, pixel)
        return inside_coverage((radius - outline) * 0.7, pixel), heart

    return draw


def _gear(u, v, pixel, variation):
    radius, theta = polar(u, v)
    teeth = np.clip(np.cos(theta * 10.0 + variation[0] * TAU) * 4.0 + 0.5, 0.0, 1.0)
    return inside_coverage(np.maximum(radius - 0.76 - 0.22 * teeth, 0.3 - radius), pixel), None


# Group "rings": annuli that differ in what accompanies the ring.


def _annulus(radius: np.ndarray, middle: float, half_width: float) -> np.ndarray:
    return np.abs(radius - middle) - half_width


def _ring(u, v, pixel, variation):
    radius = np.hypot(u, v)
    return inside_coverage(_annulus(radius, 0.75, 0.14 + 0.06 * variation[0]), pixel), None


def _double_ring(u, v, pixel, variation):
    radius = np.hypot(u, v)
    width = 0.09 + 0.03 * variation[0]
    return inside_coverage(np.minimum(_annulus(radius, 0.85, width), _annulus(radius, 0.48, width)), pixel), None


def _target(u, v, pixel, variation):
    radius = np.hypot(u, v)
    dot = radius - 0.22 - 0.08 * variation[0]
    distance = np.minimum(_annulus(radius, 0.8, 0.13), dot)
    return inside_coverage(distance, pixel), inside_coverage(dot, pixel)


def _wheel(u, v, pixel, variation):
    radius = np.hypot(u, v)
    spokes = np.maximum(np.minimum(np.abs(u), np.abs(v)) - 0.06 - 0.03 * variation[0], radius - 0.8)
    return inside_coverage(np.minimum(_annulus(radius, 0.8, 0.12), spokes), pixel), None


def _broken_ring(u, v, pixel, variation):
    radius, theta = polar(u, v)
    gap = (0.45 + 0.3 * variation[0] - np.abs(theta)) * radius
    return inside_coverage(np.maximum(_annulus(radius, 0.75, 0.15), gap), pixel), None


def _dotted_ring(u, v, pixel, variation):
    _, theta = polar(u, v)
    dots = 8 + int(variation[0] * 3)
    step = TAU / dots
    nearest = np.round(theta / step) * step
    distance = np.hypot(u - 0.75 * np.cos(nearest), v - 0.75 * np.sin(nearest)) - 0.16
    return inside_coverage(distance, pixel), None


# Group "patterns": blobs of one outline family, filled with different patterns.


def _blob(u: np.ndarray, v: np.ndarray, variation: np.ndarray) -> np.ndarray:
    aspect = 0.65 + 0.35 * variation[0]
    radius, theta = polar(u, v / aspect)
    edge = 0.92 + 0.08 * np.sin(3.0 * theta + variation[1] * TAU) + 0.05 * np.sin(5.0 * theta + variation[2] * TAU)
    return (radius - edge) * aspect


def _patterned(pattern: Callable[[np.ndarray, np.ndarray, float, float], np.ndarray]) -> DrawFunction:
    def draw(u, v, pixel, variation):
        period = 0.24 + 0.1 * variation[3]
        return inside_coverage(_blob(u, v, variation), pixel), pattern(u, v, period, pixel)

    return draw


def _straight_stripes(u, v, period, pixel):
    return stripes(u, period, pixel)


def _wavy_stripes(u, v, period, pixel):
    return stripes(u + 0.3 * period * np.sin(v * (TAU / (2.5 * period))), period, pixel)


def _zigzag_stripes(u, v, period, pixel):
    phase = v / (2.0 * period)
    triangle = np.abs(2.0 * (phase - np.floor(phase)) - 1.0)
    return stripes(u + 0.6 * period * triangle, period, pixel)


def _checker(u, v, period, pixel):
    product = np.sin(u * (math.pi / period)) * np.sin(v * (math.pi / period))
    return inside_coverage(-product * (period / math.pi), pixel)


def _plaid(u, v, period, pixel):
    return inside_coverage(0.34 * period - np.maximum(cell_offset(u, period), cell_offset(v, period)), pixel)


def _polka(u, v, period, pixel):
    return inside_coverage(np.hypot(cell_offset(u, period), cell_offset(v, period)) - 0.28 * period, pixel)


# Group "marks": bar symbols that differ in how many bars and how they cross.


def _plus(u, v, pixel, variation):
    width = 0.13 + 0.05 * variation[0]
    return inside_coverage(np.minimum(bar(u, v, 0.0, 0.9, width), bar(u, v, math.pi / 2, 0.9, width)), pixel), None


def _asterisk(u, v, pixel, variation):
    width = 0.1 + 0.04 * variation[0]
    arms = [bar(u, v, k * math.pi / 3, 0.9, width) for k in range(3)]
    return inside_coverage(np.minimum(np.minimum(arms[0], arms[1]), arms[2]), pixel), None


def _hash_sign(u, v, pixel, variation):
    width, offset = 0.08 + 0.03 * variation[0], 0.3 + 0.08 * variation[1]
    vertical = np.minimum(bar(u, v, math.pi / 2, 0.9, width, offset), bar(u, v, math.pi / 2, 0.9, width, -offset))
    horizontal = np.minimum(bar(u, v, 0.0, 0.9, width, offset), bar(u, v, 0.0, 0.9, width, -offset))
    return inside_coverage(np.minimum(vertical, horizontal), pixel), None


def _triple_bar(u, v, pixel, variation):
    width, spacing = 0.1 + 0.04 * variation[0], 0.42 + 0.06 * variation[1]
    bars = np.minimum(np.minimum(bar(u, v, 0.0, 0.9, width, -spacing), bar(u, v, 0.0, 0.9, width)),
                      bar(u, v, 0.0, 0.9, width, spacing))
    return inside_coverage(bars, pixel), None


def _spiral(u, v, pixel, variation):
    radius, theta = polar(u, v)
    pitch = 0.26 + 0.06 * variation[0]
    phase = radius / pitch - theta / TAU
    arm = (np.abs(phase - np.floor(phase) - 0.5) - 0.22) * pitch
    return inside_coverage(np.maximum(arm, radius - 0.95), pixel), None


def _arrow(u, v, pixel, variation):
    shaft = np.maximum(np.abs(u + 0.25) - 0.6, np.abs(v) - 0.1 - 0.04 * variation[0])
    head = np.maximum(0.25 - u, (np.abs(v) - (0.9 - u) * 0.8) * 0.78)
    return inside_coverage(np.minimum(shaft, head), pixel), None


# Group "scenes": full-frame periodic or layered scenes that differ in their layout.


def _grid(u, v, pixel, variation):
    period = 0.4 + 0.2 * variation[0]
    lines = 0.5 * period - 0.035 - 0.02 * variation[1] - np.maximum(cell_offset(u, period), cell_offset(v, period))
    return inside_coverage(lines, pixel), None


def _bricks(u, v, pixel, variation):
    height = 0.22 + 0.1 * variation[0]
    row = np.floor(v / height)
    shifted = u + 0.5 * (2.0 * height) * (row - 2.0 * np.floor(row / 2.0))
    mortar = 0.5 * height - 0.03 - np.maximum(cell_offset(shifted, 2.0 * height) - height / 2.0,
                                                cell_offset(v, height))
    return np.ones_like(u), inside_coverage(mortar, pixel)


def _square_dots(u, v, pixel, variation):
    period = 0.35 + 0.15 * variation[0]
    return inside_coverage(np.hypot(cell_offset(u, period), cell_offset(v, period)) - 0.28 * period, pixel), None


def _hex_dots(u, v, pixel, variation):
    period = 0.35 + 0.15 * variation[0]
    row_height = period * math.sqrt(3.0) / 2.0
    row = np.floor(v / row_height)
    shifted = u + 0.5 * period * (row - 2.0 * np.floor(row / 2.0))
    distance = np.hypot(cell_offset(shifted, period), cell_offset(v, row_height)) - 0.28 * period
    return inside_coverage(distance, pixel), None


def _skyline(u, v, pixel, variation):
    width = 0.3 + 0.15 * variation[0]
    ground = 0.9 + 0.5 * variation[1]
    column = np.floor(u / width)
    roof = ground - 0.4 - 1.5 * hash_noise(column, variation[2])
    building = np.maximum(roof - v, cell_offset(u, width) - 0.42 * width)
    structure = np.minimum(building, ground - v)
    pane = width / 3.0
    window = np.maximum(np.maximum(cell_offset(u, pane), cell_offset(v, pane)) - 0.18 * pane, v - ground + 0.1)
    return inside_coverage(structure, pixel), inside_coverage(np.maximum(window, building), pixel)


def _mountains(u, v, pixel, variation):
    phases = variation * TAU
    far_ridge = -0.3 + 0.25 * np.sin(1.3 * u + phases[0]) + 0.12 * np.sin(3.1 * u + phases[1])
    near_ridge = 0.5 + 0.2 * np.sin(0.9 * u + phases[2]) + 0.08 * np.sin(4.3 * u + phases[3])
    sun = inside_coverage(np.hypot(u - 1.2 * (variation[4] - 0.5), v + 1.0) - 0.25, pixel)
    far = inside_coverage(far_ridge - v, pixel)
    near = inside_coverage(near_ridge - v, pixel)
    coverage = np.maximum(np.maximum(far, near), sun)
    return coverage, np.clip(far - near, 0.0, 1.0) + sun * (1.0 - far)


GROUPS: dict[str, tuple[SceneClass, ...]] = {
    "stars": tuple(SceneClass(name, "stars", draw) for name, draw in [
        ("star5", _star(5, 0.42)), ("star6", _star(6, 0.45)), ("star8", _star(8, 0.5)),
        ("flower5", _flower(5)), ("flower8", _flower(8)), ("gear", _gear)]),
    "rings": tuple(SceneClass(name, "rings", draw) for name, draw in [
        ("ring", _ring), ("double_ring", _double_ring), ("target", _target),
        ("wheel", _wheel), ("broken_ring", _broken_ring), ("dotted_ring", _dotted_ring)]),
    "patterns": tuple(SceneClass(name, "patterns", _patterned(pattern)) for name, pattern in [
        ("stripes", _straight_stripes), ("waves", _wavy_stripes), ("zigzag", _zigzag_stripes),
        ("checker", _checker), ("plaid", _plaid), ("polka", _polka)]),
    "scenes": tuple(SceneClass(name, "scenes", draw, full_frame=True) for name, draw in [
        ("grid", _grid), ("bricks", _bricks), ("square_dots", _square_dots),
        ("hex_dots", _hex_dots), ("skyline", _skyline), ("mountains", _mountains)]),
    "marks": tuple(SceneClass(name, "marks", draw) for name, draw in [
        ("plus", _plus), ("asterisk", _asterisk), ("hash", _hash_sign),
        ("triple_bar", _triple_bar), ("spiral", _spiral), ("arrow", _arrow)]),
}
"""Every drawable class by group. Within a group the first classes are the most confusable."""

MAX_CLASSES_PER_GROUP = min(len(members) for members in GROUPS.values())


_SOUND_LOOK = _patterned(_polka)  # one drawing function shared by every sound class

AV_GROUPS: dict[str, tuple[SceneClass, ...]] = {
    "stars": GROUPS["stars"],
    "rings": GROUPS["rings"],
    "motion": tuple(SceneClass(name, "motion", _plus, motion=name) for name in (
        "move_right", "move_left", "orbit_cw", "dash_right", "hop_right", "move_up", "move_down", "orbit_ccw")),
    "sound": tuple(SceneClass(name, "sound", _SOUND_LOOK, sound=name) for name in (
        "rising", "falling", "beat_slow", "beat_fast", "hum", "buzz", "hiss", "rumble")),
}
"""The audio-visual catalogue: two appearance groups, a motion group (one look, a plus sign: members differ
only in how it moves) and a sound group (one look, a polka-dot blob: members differ only in the audio).
Within the motion and sound groups the first members cover every property (direction, trajectory,
speed, rhythm; pitch pattern, rhythm, timbre, noise colour) as soon as there are five or eight."""
