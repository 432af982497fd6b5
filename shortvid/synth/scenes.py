"""Procedural content for synthetic short videos: classes told apart by structure, not by colour.

Each class is one member of a shape family (stars, rings, patterned blobs, full-frame scenes,
marks). Classes of one family form a *group*: they share the drawing code and the preferred
backdrop and differ in a finer detail (five points or six, one ring or two, straight or wavy
stripes), so a classifier confuses them with each other more than with other groups, as the
competition's dog/cat or folk/street dance did. Colours are drawn per shot independently of the
class, with exchangeable roles, so the mean colour of a video carries no class information.

A video is planned first (`plan_video`: every random choice, from a numpy Generator) and drawn
afterwards (`render_frames`: a pure function of the plan), so the same seed gives the same
pixels. Frames are drawn at a reduced internal resolution with vectorised signed-distance
shapes, evaluated only inside each object's bounding box, and upscaled once per frame.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

Colour = tuple[float, float, float]
Rect = tuple[float, float, float, float]
DrawFunction = Callable[[np.ndarray, np.ndarray, float, np.ndarray], tuple[np.ndarray, "np.ndarray | None"]]
"""draw(u, v, pixel, variation) -> (coverage, accent): u, v are object-local coordinates (object
radius 1), pixel the size of one pixel in those units (for anti-aliasing), variation 8 numbers in
[0, 1) that vary an instance within its class. coverage in [0, 1] is where the object is; accent
in [0, 1] (or None) is where it takes its accent colour instead of its main colour."""

VARIATION_SIZE = 8
TAU = 2.0 * math.pi


@dataclass(frozen=True)
class SceneClass:
    """One drawable class: its name, its group and how to draw it."""

    name: str
    group: str
    draw: DrawFunction
    full_frame: bool = False  # a scene that fills the frame (drawn as the backdrop) rather than an object


# Shape helpers. Distances are signed (negative inside) and in object-local units.


def _coverage(distance: np.ndarray, pixel: float) -> np.ndarray:
    """Anti-aliased inside-coverage of a signed distance field."""
    return np.clip(0.5 - distance / pixel, 0.0, 1.0)


def _polar(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.hypot(u, v), np.arctan2(v, u)


def _rotated(u: np.ndarray, v: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    cos, sin = math.cos(angle), math.sin(angle)
    return cos * u + sin * v, -sin * u + cos * v


def _bar(u: np.ndarray, v: np.ndarray, angle: float, length: float, width: float, offset: float = 0.0) -> np.ndarray:
    """Distance to a rectangle of half-length `length`, half-width `width`, shifted `offset` across."""
    along, across = _rotated(u, v, angle)
    return np.maximum(np.abs(along) - length, np.abs(across - offset) - width)


def _cell_offset(coordinate: np.ndarray, period: float) -> np.ndarray:
    """Distance from the centre of the periodic cell the coordinate falls in."""
    return np.abs(coordinate / period - np.floor(coordinate / period) - 0.5) * period


def _stripes(coordinate: np.ndarray, period: float, pixel: float) -> np.ndarray:
    """Half-duty stripes across `coordinate`."""
    return _coverage(_cell_offset(coordinate, period) - 0.25 * period, pixel)


def _hash(values: np.ndarray, salt: float) -> np.ndarray:
    """Deterministic pseudo-random numbers in [0, 1) per integer value (per building, per column)."""
    noise = np.sin(values * 12.9898 + salt * 78.233) * 43758.5453
    return noise - np.floor(noise)


# Group "stars": radial outlines that differ in point count and tip shape.


def _star(points: int, inner: float) -> DrawFunction:
    def draw(u, v, pixel, variation):
        radius, theta = _polar(u, v)
        phase = theta * (points / TAU)
        tip = np.abs(2.0 * (phase - np.floor(phase)) - 1.0)
        depth = inner + 0.08 * (variation[0] - 0.5)
        return _coverage((radius - depth - (1.0 - depth) * tip) * 0.7, pixel), None

    return draw


def _flower(petals: int) -> DrawFunction:
    def draw(u, v, pixel, variation):
        radius, theta = _polar(u, v)
        outline = 0.35 + 0.65 * np.abs(np.cos(theta * (petals / 2.0))) ** (0.6 + 0.4 * variation[0])
        heart = _coverage(radius - 0.22, pixel)
        return _coverage((radius - outline) * 0.7, pixel), heart

    return draw


def _gear(u, v, pixel, variation):
    radius, theta = _polar(u, v)
    teeth = np.clip(np.cos(theta * 10.0 + variation[0] * TAU) * 4.0 + 0.5, 0.0, 1.0)
    return _coverage(np.maximum(radius - 0.76 - 0.22 * teeth, 0.3 - radius), pixel), None


# Group "rings": annuli that differ in what accompanies the ring.


def _annulus(radius: np.ndarray, middle: float, half_width: float) -> np.ndarray:
    return np.abs(radius - middle) - half_width


def _ring(u, v, pixel, variation):
    radius = np.hypot(u, v)
    return _coverage(_annulus(radius, 0.75, 0.14 + 0.06 * variation[0]), pixel), None


def _double_ring(u, v, pixel, variation):
    radius = np.hypot(u, v)
    width = 0.09 + 0.03 * variation[0]
    return _coverage(np.minimum(_annulus(radius, 0.85, width), _annulus(radius, 0.48, width)), pixel), None


def _target(u, v, pixel, variation):
    radius = np.hypot(u, v)
    dot = radius - 0.22 - 0.08 * variation[0]
    distance = np.minimum(_annulus(radius, 0.8, 0.13), dot)
    return _coverage(distance, pixel), _coverage(dot, pixel)


def _wheel(u, v, pixel, variation):
    radius = np.hypot(u, v)
    spokes = np.maximum(np.minimum(np.abs(u), np.abs(v)) - 0.06 - 0.03 * variation[0], radius - 0.8)
    return _coverage(np.minimum(_annulus(radius, 0.8, 0.12), spokes), pixel), None


def _broken_ring(u, v, pixel, variation):
    radius, theta = _polar(u, v)
    gap = (0.45 + 0.3 * variation[0] - np.abs(theta)) * radius
    return _coverage(np.maximum(_annulus(radius, 0.75, 0.15), gap), pixel), None


def _dotted_ring(u, v, pixel, variation):
    _, theta = _polar(u, v)
    dots = 8 + int(variation[0] * 3)
    step = TAU / dots
    nearest = np.round(theta / step) * step
    distance = np.hypot(u - 0.75 * np.cos(nearest), v - 0.75 * np.sin(nearest)) - 0.16
    return _coverage(distance, pixel), None


# Group "patterns": blobs of one outline family, filled with different patterns.


def _blob(u: np.ndarray, v: np.ndarray, variation: np.ndarray) -> np.ndarray:
    aspect = 0.65 + 0.35 * variation[0]
    radius, theta = _polar(u, v / aspect)
    edge = 0.92 + 0.08 * np.sin(3.0 * theta + variation[1] * TAU) + 0.05 * np.sin(5.0 * theta + variation[2] * TAU)
    return (radius - edge) * aspect


def _patterned(pattern: Callable[[np.ndarray, np.ndarray, float, float], np.ndarray]) -> DrawFunction:
    def draw(u, v, pixel, variation):
        period = 0.24 + 0.1 * variation[3]
        return _coverage(_blob(u, v, variation), pixel), pattern(u, v, period, pixel)

    return draw


def _straight_stripes(u, v, period, pixel):
    return _stripes(u, period, pixel)


def _wavy_stripes(u, v, period, pixel):
    return _stripes(u + 0.3 * period * np.sin(v * (TAU / (2.5 * period))), period, pixel)


def _zigzag_stripes(u, v, period, pixel):
    phase = v / (2.0 * period)
    triangle = np.abs(2.0 * (phase - np.floor(phase)) - 1.0)
    return _stripes(u + 0.6 * period * triangle, period, pixel)


def _checker(u, v, period, pixel):
    product = np.sin(u * (math.pi / period)) * np.sin(v * (math.pi / period))
    return _coverage(-product * (period / math.pi), pixel)


def _plaid(u, v, period, pixel):
    return _coverage(0.34 * period - np.maximum(_cell_offset(u, period), _cell_offset(v, period)), pixel)


def _polka(u, v, period, pixel):
    return _coverage(np.hypot(_cell_offset(u, period), _cell_offset(v, period)) - 0.28 * period, pixel)


# Group "marks": bar symbols that differ in how many bars and how they cross.


def _plus(u, v, pixel, variation):
    width = 0.13 + 0.05 * variation[0]
    return _coverage(np.minimum(_bar(u, v, 0.0, 0.9, width), _bar(u, v, math.pi / 2, 0.9, width)), pixel), None


def _asterisk(u, v, pixel, variation):
    width = 0.1 + 0.04 * variation[0]
    arms = [_bar(u, v, k * math.pi / 3, 0.9, width) for k in range(3)]
    return _coverage(np.minimum(np.minimum(arms[0], arms[1]), arms[2]), pixel), None


def _hash_sign(u, v, pixel, variation):
    width, offset = 0.08 + 0.03 * variation[0], 0.3 + 0.08 * variation[1]
    vertical = np.minimum(_bar(u, v, math.pi / 2, 0.9, width, offset), _bar(u, v, math.pi / 2, 0.9, width, -offset))
    horizontal = np.minimum(_bar(u, v, 0.0, 0.9, width, offset), _bar(u, v, 0.0, 0.9, width, -offset))
    return _coverage(np.minimum(vertical, horizontal), pixel), None


def _triple_bar(u, v, pixel, variation):
    width, spacing = 0.1 + 0.04 * variation[0], 0.42 + 0.06 * variation[1]
    bars = np.minimum(np.minimum(_bar(u, v, 0.0, 0.9, width, -spacing), _bar(u, v, 0.0, 0.9, width)),
                      _bar(u, v, 0.0, 0.9, width, spacing))
    return _coverage(bars, pixel), None


def _spiral(u, v, pixel, variation):
    radius, theta = _polar(u, v)
    pitch = 0.26 + 0.06 * variation[0]
    phase = radius / pitch - theta / TAU
    arm = (np.abs(phase - np.floor(phase) - 0.5) - 0.22) * pitch
    return _coverage(np.maximum(arm, radius - 0.95), pixel), None


def _arrow(u, v, pixel, variation):
    shaft = np.maximum(np.abs(u + 0.25) - 0.6, np.abs(v) - 0.1 - 0.04 * variation[0])
    head = np.maximum(0.25 - u, (np.abs(v) - (0.9 - u) * 0.8) * 0.78)
    return _coverage(np.minimum(shaft, head), pixel), None


# Group "scenes": full-frame periodic or layered scenes that differ in their layout.


def _grid(u, v, pixel, variation):
    period = 0.4 + 0.2 * variation[0]
    lines = 0.5 * period - 0.035 - 0.02 * variation[1] - np.maximum(_cell_offset(u, period), _cell_offset(v, period))
    return _coverage(lines, pixel), None


def _bricks(u, v, pixel, variation):
    height = 0.22 + 0.1 * variation[0]
    row = np.floor(v / height)
    shifted = u + 0.5 * (2.0 * height) * (row - 2.0 * np.floor(row / 2.0))
    mortar = 0.5 * height - 0.03 - np.maximum(_cell_offset(shifted, 2.0 * height) - height / 2.0,
                                                _cell_offset(v, height))
    return np.ones_like(u), _coverage(mortar, pixel)


def _square_dots(u, v, pixel, variation):
    period = 0.35 + 0.15 * variation[0]
    return _coverage(np.hypot(_cell_offset(u, period), _cell_offset(v, period)) - 0.28 * period, pixel), None


def _hex_dots(u, v, pixel, variation):
    period = 0.35 + 0.15 * variation[0]
    row_height = period * math.sqrt(3.0) / 2.0
    row = np.floor(v / row_height)
    shifted = u + 0.5 * period * (row - 2.0 * np.floor(row / 2.0))
    distance = np.hypot(_cell_offset(shifted, period), _cell_offset(v, row_height)) - 0.28 * period
    return _coverage(distance, pixel), None


def _skyline(u, v, pixel, variation):
    width = 0.3 + 0.15 * variation[0]
    ground = 0.9 + 0.5 * variation[1]
    column = np.floor(u / width)
    roof = ground - 0.4 - 1.5 * _hash(column, variation[2])
    building = np.maximum(roof - v, _cell_offset(u, width) - 0.42 * width)
    structure = np.minimum(building, ground - v)
    pane = width / 3.0
    window = np.maximum(np.maximum(_cell_offset(u, pane), _cell_offset(v, pane)) - 0.18 * pane, v - ground + 0.1)
    return _coverage(structure, pixel), _coverage(np.maximum(window, building), pixel)


def _mountains(u, v, pixel, variation):
    phases = variation * TAU
    far_ridge = -0.3 + 0.25 * np.sin(1.3 * u + phases[0]) + 0.12 * np.sin(3.1 * u + phases[1])
    near_ridge = 0.5 + 0.2 * np.sin(0.9 * u + phases[2]) + 0.08 * np.sin(4.3 * u + phases[3])
    sun = _coverage(np.hypot(u - 1.2 * (variation[4] - 0.5), v + 1.0) - 0.25, pixel)
    far = _coverage(far_ridge - v, pixel)
    near = _coverage(near_ridge - v, pixel)
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

BACKDROP_KINDS = ("solid", "linear", "radial", "noise", "bokeh")
_GROUP_BACKDROPS = {"stars": "radial", "rings": "linear", "patterns": "noise", "scenes": "linear", "marks": "solid"}
_GROUP_BACKDROP_SHARE = 0.6  # how often a shot uses its group's backdrop: context helps, but not alone


def select_classes(num_classes: int, num_groups: int) -> tuple[SceneClass, ...]:
    """The first `num_groups` groups, `num_classes` classes spread over them as evenly as possible.

    Class ids are positions in the returned tuple, grouped: group by group, members in catalogue order.
    """
    if not 1 <= num_groups <= len(GROUPS):
        raise ValueError(f"num_groups must be 1..{len(GROUPS)}, got {num_groups}")
    if not 2 * num_groups <= num_classes <= MAX_CLASSES_PER_GROUP * num_groups:
        raise ValueError(f"num_classes must be {2 * num_groups}..{MAX_CLASSES_PER_GROUP * num_groups} "
                         f"for {num_groups} groups (2..{MAX_CLASSES_PER_GROUP} per group), got {num_classes}")
    groups = list(GROUPS.values())[:num_groups]
    per_group = [num_classes // num_groups + (index < num_classes % num_groups) for index in range(num_groups)]
    return tuple(member for members, count in zip(groups, per_group, strict=True) for member in members[:count])


# The plan of a video: every random choice, made before any drawing.


@dataclass(frozen=True)
class Sprite:
    """One instance of a class in a shot and how it moves; positions are fractions of the frame."""

    class_id: int
    start: tuple[float, float]
    end: tuple[float, float]
    radius: tuple[float, float]  # at the shot's start and end, as a fraction of the frame's short side
    angle: float
    spin: float  # radians per second
    wobble: tuple[float, float, float]  # amplitude (fraction of the short side), frequency (Hz), phase
    colour: Colour
    accent: Colour
    variation: tuple[float, ...]
    mode: str = "object"  # "object", "full_frame" (covers the frame) or "window" (a scene in a frame)
    window_fill: Colour = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Backdrop:
    """A shot's background, drawn once per shot and panned."""

    kind: str
    colours: tuple[Colour, Colour]
    direction: float  # linear gradient angle, radians
    centre: tuple[float, float]  # radial gradient centre, fractions of the frame
    pan: tuple[float, float]  # fractions of the short side per second
    texture_seed: int
    clutter: tuple[tuple[float, ...], ...] = ()  # soft unlabelled ellipses: x, y, rx, ry, angle, r, g, b, opacity


@dataclass(frozen=True)
class Shot:
    """Frames [start, stop) of one shot: content (labelled), a title card or black frames."""

    kind: str  # "content", "title", "black"
    start: int
    stop: int
    class_ids: tuple[int, ...] = ()
    backdrop: Backdrop | None = None
    sprites: tuple[Sprite, ...] = ()
    text: tuple[Rect, ...] = ()  # title card blocks, fractions of the frame
    text_colour: Colour = (255.0, 255.0, 255.0)


@dataclass(frozen=True)
class VideoScript:
    """Everything needed to draw one video; `times` are frame times in seconds (may be irregular)."""

    width: int
    height: int
    times: tuple[float, ...]
    shots: tuple[Shot, ...]
    labels: tuple[int, ...]
    overlay: tuple[Rect, ...] = ()  # app-style UI text blocks drawn over every content frame

    @property
    def cut_frames(self) -> tuple[int, ...]:
        """Frame indices where a new shot starts (hard cuts), frame 0 excluded."""
        return tuple(shot.start for shot in self.shots[1:])


def random_colour(rng: np.random.Generator) -> Colour:
    """A colour uniform in hue with random saturation and value, in 0..255."""
    red, green, blue = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.1, 1.0), rng.uniform(0.12, 1.0))
    return (red * 255.0, green * 255.0, blue * 255.0)


def _luma(colour: Colour) -> float:
    return 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]


def palette(rng: np.random.Generator, size: int = 3, contrast: float = 40.0) -> list[Colour]:
    """`size` colours whose lumas differ pairwise by at least `contrast`, in random order.

    The constraint is symmetric and the order random, so every role (backdrop, object, accent)
    has the same colour distribution whatever the class: mean colour cannot reveal the class.
    """
    while True:
        colours = [random_colour(rng) for _ in range(size)]
        lumas = [_luma(colour) for colour in colours]
        if all(abs(a - b) >= contrast for i, a in enumerate(lumas) for b in lumas[i + 1:]):
            return colours


def _jittered(rng: np.random.Generator, colour: Colour, spread: float) -> Colour:
    return tuple(float(np.clip(channel + rng.normal(0.0, spread), 0.0, 255.0)) for channel in colour)


def _text_lines(rng: np.random.Generator, left: float, right: float, top: float, line_height: float,
                lines: int, aspect: float) -> list[Rect]:
    """Word-like blocks on `lines` lines (fractions of the frame; `aspect` = height / width)."""
    rects: list[Rect] = []
    block_unit = line_height * aspect  # a character's width in width fractions
    for line in range(lines):
        y0 = top + line * line_height * 1.7
        x, end = left, rng.uniform(left + 0.5 * (right - left), right)
        while x < end:
            width = block_unit * rng.integers(2, 9) * 0.6
            rects.append((x, y0, min(x + width, end), y0 + line_height))
            x += width + block_unit * 0.6
    return rects


def _title_card(rng: np.random.Generator, aspect: float) -> list[Rect]:
    title_height = rng.uniform(0.035, 0.06)
    top = rng.uniform(0.2, 0.4)
    rects = _text_lines(rng, 0.15, 0.85, top, title_height, int(rng.integers(1, 3)), aspect)
    body_top = top + 4.0 * title_height
    return rects + _text_lines(rng, 0.1, 0.9, body_top, title_height * 0.45, int(rng.integers(2, 6)), aspect)


def _app_overlay(rng: np.random.Generator, aspect: float) -> list[Rect]:
    """Caption lines at the bottom left and a column of icon squares at the right, like app UIs."""
    rects = _text_lines(rng, 0.04, 0.7, rng.uniform(0.78, 0.84), 0.018, int(rng.integers(1, 4)), aspect)
    icon = 0.07
    for row in range(int(rng.integers(3, 5))):
        top = 0.5 + row * 0.09
        rects.append((0.88, top, 0.88 + icon, top + icon / aspect))
    return rects


def _backdrop(rng: np.random.Generator, kind: str, base: Colour, difficulty: float = 0.0) -> Backdrop:
    speed = rng.uniform(0.0, 0.08)
    heading = rng.uniform(0.0, TAU)
    clutter = tuple(
        (rng.uniform(0.0, 1.0), rng.uniform(0.0, 1.0), rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.3),
         rng.uniform(0.0, math.pi), *random_colour(rng), rng.uniform(0.3, 0.8))
        for _ in range(int(rng.poisson(5.0 * difficulty)))
    )
    return Backdrop(
        kind=kind,
        colours=(base, _jittered(rng, base, 45.0)),
        direction=rng.uniform(0.0, TAU),
        centre=(rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8)),
        pan=(speed * math.cos(heading), speed * math.sin(heading)),
        texture_seed=int(rng.integers(2**31)),
        clutter=clutter,
    )


def _sprite(rng: np.random.Generator, class_id: int, mode: str, colour: Colour, accent: Colour,
            window_fill: Colour, difficulty: float = 0.0) -> Sprite:
    variation = tuple(float(x) for x in rng.random(VARIATION_SIZE))
    if mode == "full_frame":
        start = (0.5 + rng.uniform(-0.3, 0.3), 0.5 + rng.uniform(-0.1, 0.1))
        end = (start[0] + rng.uniform(-0.3, 0.3), start[1] + rng.uniform(-0.05, 0.05))
        radius = rng.uniform(0.4, 0.6)
        return Sprite(class_id, start, end, (radius, radius * rng.uniform(0.9, 1.15)), rng.uniform(-0.12, 0.12),
                      rng.uniform(-0.04, 0.04), (0.0, 0.0, 0.0), colour, accent, variation, mode)
    reach = 0.25 - 0.15 * difficulty  # how close to the frame's edge an object may start
    start = (rng.uniform(reach, 1.0 - reach), rng.uniform(reach, 1.0 - reach))
    end = tuple(float(np.clip(p + rng.uniform(-0.2, 0.2), reach - 0.1, 1.1 - reach)) for p in start)
    low, high = (0.25, 0.38) if mode == "window" else (0.2 - 0.1 * difficulty, 0.38)
    radius = rng.uniform(low, high)
    upright = mode == "window"
    return Sprite(
        class_id=class_id,
        start=start,
        end=end,
        radius=(radius, radius * rng.uniform(0.8, 1.25)),
        angle=rng.uniform(-0.1, 0.1) if upright else rng.uniform(0.0, TAU),
        spin=rng.uniform(-0.05, 0.05) if upright else rng.uniform(-1.2, 1.2),
        wobble=(rng.uniform(0.0, 0.02), rng.uniform(0.3, 1.5), rng.uniform(0.0, TAU)),
        colour=colour,
        accent=accent,
        variation=variation,
        mode=mode,
        window_fill=window_fill,
    )


def _content_shot(rng: np.random.Generator, start: int, stop: int, class_ids: Sequence[int],
                  classes: Sequence[SceneClass], difficulty: float) -> Shot:
    """A shot showing every class in `class_ids`: the first full-frame class fills the frame, further
    full-frame classes appear in a window, objects float on top (the first class sometimes twice)."""
    backdrop_colour, colour, accent = palette(rng, contrast=40.0 - 25.0 * difficulty)
    group = classes[class_ids[0]].group
    use_group_backdrop = rng.random() < _GROUP_BACKDROP_SHARE
    kind = _GROUP_BACKDROPS[group] if use_group_backdrop else str(rng.choice(BACKDROP_KINDS))
    sprites: list[Sprite] = []
    frame_filled = False
    for position, class_id in enumerate(class_ids):
        swap = position % 2 == 1  # a second class takes the palette the other way round
        fg, ac = (accent, colour) if swap else (colour, accent)
        if classes[class_id].full_frame:
            mode = "window" if frame_filled else "full_frame"
            frame_filled = True
            sprites.append(_sprite(rng, class_id, mode, fg, ac, backdrop_colour, difficulty))
            continue
        copies = 2 if position == 0 and len(class_ids) == 1 and rng.random() < 0.25 else 1
        sprites.extend(_sprite(rng, class_id, "object", fg, ac, backdrop_colour, difficulty) for _ in range(copies))
    sprites.sort(key=lambda sprite: sprite.mode != "full_frame")  # a scene behind the objects
    backdrop = _backdrop(rng, kind, backdrop_colour, difficulty)
    return Shot("content", start, stop, tuple(class_ids), backdrop, tuple(sprites))


def _shot_layout(rng: np.random.Generator, duration: float, content_shots: int) -> list[tuple[str, float]]:
    """Shot kinds and durations (seconds): optional black lead-in or title card, content, optional end card."""
    layout: list[tuple[str, float]] = []
    lead = rng.random()
    if lead < 0.08:
        layout.append(("black", rng.uniform(0.1, 0.4)))
    elif lead < 0.13:
        layout.append(("title", rng.uniform(0.5, 1.2)))
    tail = ("title", rng.uniform(0.6, 1.5)) if rng.random() < 0.12 else None
    distractor_time = sum(seconds for _, seconds in layout) + (tail[1] if tail else 0.0)
    squeeze = min(1.0, 0.3 * duration / distractor_time) if distractor_time else 1.0
    layout = [(kind, seconds * squeeze) for kind, seconds in layout]
    content_time = duration - distractor_time * squeeze
    shares = rng.dirichlet(np.full(content_shots, 3.0))
    layout += [("content", float(share * content_time)) for share in shares]
    if tail:
        layout.append((tail[0], tail[1] * squeeze))
    return layout


def _frame_spans(layout: list[tuple[str, float]], times: Sequence[float],
                 min_frames: int) -> list[tuple[str, int, int]]:
    """Map shot durations onto frame indices [start, stop). A shot shorter than `min_frames` is
    absorbed: its frames go to the previous shot, or to the next one at the very start."""
    clock = np.asarray(times)
    ends = np.searchsorted(clock, np.cumsum([seconds for _, seconds in layout]) - 1e-9).tolist()
    ends[-1] = len(clock)
    spans: list[list] = []
    pending = 0
    for (kind, _), stop in zip(layout, ends, strict=True):
        if stop - pending >= min_frames:
            spans.append([kind, pending, stop])
        elif spans:
            spans[-1][2] = stop
        else:
            continue
        pending = stop
    if not any(kind == "content" for kind, _, _ in spans):
        return [("content", 0, len(clock))]
    spans[-1][2] = len(clock)
    return [(kind, start, stop) for kind, start, stop in spans]


def plan_video(rng: np.random.Generator, labels: Sequence[int], classes: Sequence[SceneClass],
               times: Sequence[float], width: int, height: int, *, overlay: bool | None = None,
               difficulty: float = 0.0) -> VideoScript:
    """Choose the shots, backdrops, objects, motion and colours of one video showing `labels`.

    The first label is the main subject. A multi-label video either shows its classes together
    in every content shot, or gives the other labels a shot each (the shortest ones) and the
    main label the rest.
    `overlay` adds app-style caption blocks (default: at random, in a third of the videos).
    `difficulty` in [0, 1] makes objects smaller and likelier to leave the frame, lowers the
    contrast and adds unlabelled clutter to the backdrops: clean frames are too easy to show
    differences between models.
    """
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must be within [0, 1], got {difficulty}")
    if not labels:
        raise ValueError("a video needs at least one label")
    labels = tuple(int(label) for label in labels)
    frame_count = len(times)
    duration = float(times[-1]) + (float(times[-1]) / max(frame_count - 1, 1) if frame_count > 1 else 0.1)
    content_shots = int(rng.choice([1, 2, 3, 4], p=[0.3, 0.35, 0.25, 0.1]))
    together = len(labels) > 1 and rng.random() < 0.5
    if len(labels) > 1 and not together:
        content_shots = max(content_shots, len(labels))
    min_frames = max(2, min(8, frame_count // 8))
    spans = _frame_spans(_shot_layout(rng, duration, content_shots), times, min_frames)
    content = [index for index, (kind, _, _) in enumerate(spans) if kind == "content"]
    shown = {index: labels for index in content}
    if not together and 1 < len(labels) <= len(content):
        shortest_first = sorted(content, key=lambda index: spans[index][2] - spans[index][1])
        shown = {index: labels[:1] for index in content}
        for index, label in zip(shortest_first, rng.permutation(labels[1:])):
            shown[index] = (int(label),)
    aspect = height / width
    shots: list[Shot] = []
    for index, (kind, start, stop) in enumerate(spans):
        if kind == "content":
            shots.append(_content_shot(rng, start, stop, shown[index], classes, difficulty))
        elif kind == "title":
            card, ink = palette(rng, 2, contrast=70.0)
            backdrop = _backdrop(rng, str(rng.choice(["solid", "linear"])), card)
            shots.append(Shot("title", start, stop, backdrop=backdrop, text=tuple(_title_card(rng, aspect)),
                              text_colour=ink))
        else:
            shots.append(Shot("black", start, stop))
    show_overlay = rng.random() < 1 / 3 if overlay is None else overlay
    rects = tuple(_app_overlay(rng, aspect)) if show_overlay else ()
    return VideoScript(width, height, tuple(float(t) for t in times), tuple(shots), labels, rects)


# Drawing: a pure function of the plan.


def render_size(width: int, height: int, render_short_side: int | None) -> tuple[int, int]:
    """Internal drawing size (width, height): the output scaled so its short side is at most `render_short_side`."""
    short = min(width, height)
    if render_short_side is None or short <= render_short_side:
        return width, height
    scale = render_short_side / short
    return max(1, round(width * scale)), max(1, round(height * scale))


def _backdrop_image(backdrop: Backdrop, width: int, height: int) -> np.ndarray:
    """The backdrop as float32 [height, width, 3]."""
    first, second = (np.asarray(colour, np.float32) for colour in backdrop.colours)
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :] * (width / max(height, 1))
    if backdrop.kind == "solid":
        mix = np.zeros((height, width), np.float32)
    elif backdrop.kind == "radial":
        cx, cy = backdrop.centre
        mix = np.clip(np.hypot(xs - cx * width / height, ys - cy) * 1.4, 0.0, 1.0)
    elif backdrop.kind == "noise":
        texture_rng = np.random.default_rng(backdrop.texture_seed)
        cells = texture_rng.random((5, max(2, round(5 * width / height)))).astype(np.float32)
        mix = np.asarray(Image.fromarray(cells, mode="F").resize((width, height), Image.BICUBIC))
        mix = np.clip(mix, 0.0, 1.0)
    else:
        cos, sin = math.cos(backdrop.direction), math.sin(backdrop.direction)
        mix = xs * cos + ys * sin
        mix = (mix - mix.min()) / max(float(mix.max() - mix.min()), 1e-6)
    image = first + (second - first) * mix[..., None]
    if backdrop.kind == "bokeh":
        texture_rng = np.random.default_rng(backdrop.texture_seed)
        short = min(width, height)
        for _ in range(int(texture_rng.integers(4, 10))):
            cx, cy = texture_rng.uniform(0, width), texture_rng.uniform(0, height)
            radius = texture_rng.uniform(0.05, 0.15) * short
            disc = np.clip((radius - np.hypot(xs * height - cx, ys * height - cy)) / (0.4 * radius), 0.0, 1.0)
            glow = (first + second) / 2 * 0.5 + 127.5
            image += (glow - image) * (disc * texture_rng.uniform(0.2, 0.5))[..., None]
    for cx, cy, rx, ry, angle, red, green, blue, opacity in backdrop.clutter:
        along, across = _rotated(xs - cx * width / height, ys - cy, angle)
        reach = np.hypot(along / rx, across / ry)
        blot = np.clip((1.0 - reach) * 3.0, 0.0, 1.0) * opacity
        image += (np.asarray((red, green, blue), np.float32) - image) * blot[..., None]
    return image


def _paint_rects(canvas: np.ndarray, rects: Sequence[Rect], colour: np.ndarray) -> None:
    height, width = canvas.shape[:2]
    for x0, y0, x1, y1 in rects:
        left, right = int(round(x0 * width)), max(int(round(x1 * width)), int(round(x0 * width)) + 1)
        top, bottom = int(round(y0 * height)), max(int(round(y1 * height)), int(round(y0 * height)) + 1)
        canvas[top:bottom, left:right] = colour


def _draw_sprite(canvas: np.ndarray, sprite: Sprite, scene_class: SceneClass, seconds: float, progress: float) -> None:
    """Composite one sprite onto the float canvas at a given time into its shot."""
    height, width = canvas.shape[:2]
    short = min(width, height)
    amplitude, frequency, phase = sprite.wobble
    swing = amplitude * math.sin(TAU * frequency * seconds + phase) * short
    cx = (sprite.start[0] + (sprite.end[0] - sprite.start[0]) * progress) * width + swing
    cy = (sprite.start[1] + (sprite.end[1] - sprite.start[1]) * progress) * height + swing * 0.7
    radius = (sprite.radius[0] + (sprite.radius[1] - sprite.radius[0]) * progress) * short
    angle = sprite.angle + sprite.spin * seconds
    if sprite.mode == "full_frame":
        x0, y0, x1, y1 = 0, 0, width, height
    else:
        extent = radius * (1.45 if sprite.mode == "window" else 1.2)
        x0, x1 = max(0, int(cx - extent)), min(width, int(cx + extent) + 1)
        y0, y1 = max(0, int(cy - extent)), min(height, int(cy + extent) + 1)
        if x0 >= x1 or y0 >= y1:
            return
    xs = (np.arange(x0, x1, dtype=np.float32) + (0.5 - cx)) / radius
    ys = (np.arange(y0, y1, dtype=np.float32) + (0.5 - cy)) / radius
    u, v = _rotated(xs[None, :], ys[:, None], angle)
    pixel = 1.0 / radius
    coverage, accent = scene_class.draw(u, v, pixel, np.asarray(sprite.variation, np.float32))
    colour = np.asarray(sprite.colour, np.float32)
    if accent is not None:
        colour = colour + (np.asarray(sprite.accent, np.float32) - colour) * accent[..., None]
    if sprite.mode == "window":
        fill = np.asarray(sprite.window_fill, np.float32)
        colour = fill + (colour - fill) * coverage[..., None]
        coverage = _coverage(np.maximum(np.abs(u) - 1.0, np.abs(v) - 1.35), pixel)
    region = canvas[y0:y1, x0:x1]
    change = colour - region
    change *= coverage[..., None]
    region += change


def _to_output(canvas: np.ndarray, width: int, height: int) -> np.ndarray:
    """The float canvas as an RGB uint8 frame of the output size."""
    frame = np.clip(canvas, 0.0, 255.0).astype(np.uint8)
    if frame.shape[1] != width or frame.shape[0] != height:
        frame = np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))
    return frame


def render_frames(script: VideoScript, classes: Sequence[SceneClass], *,
                  render_short_side: int | None = 180) -> Iterator[np.ndarray]:
    """Yield the video's RGB uint8 frames [height, width, 3], drawn at most `render_short_side` pixels
    on the short side and upscaled bilinearly. Static shots (cards, black) yield one shared read-only array."""
    out_width, out_height = script.width, script.height
    width, height = render_size(out_width, out_height, render_short_side)
    short = min(width, height)
    overlay_mask, overlay_top = None, 0
    if script.overlay:
        overlay_mask = np.zeros((height, width, 1), np.float32)
        _paint_rects(overlay_mask, script.overlay, np.float32(0.85))
        overlay_top = int(np.argmax(overlay_mask.any(axis=(1, 2))))
        overlay_mask = overlay_mask[overlay_top:]
    times = script.times
    for shot in script.shots:
        count = shot.stop - shot.start
        if shot.kind != "content":
            if shot.kind == "black":
                still = np.zeros((out_height, out_width, 3), np.uint8)
            else:
                card = _backdrop_image(shot.backdrop, width, height)
                _paint_rects(card, shot.text, np.asarray(shot.text_colour, np.float32))
                still = _to_output(card, out_width, out_height)
            still.flags.writeable = False
            for _ in range(count):
                yield still
            continue
        span = max(times[shot.stop - 1] - times[shot.start], 1e-6)
        margin = int(math.ceil(max(abs(p) for p in shot.backdrop.pan) * span * short)) + 1
        backdrop = _backdrop_image(shot.backdrop, width + 2 * margin, height + 2 * margin)
        for index in range(shot.start, shot.stop):
            seconds = times[index] - times[shot.start]
            dx = int(round(margin + shot.backdrop.pan[0] * seconds * short))
            dy = int(round(margin + shot.backdrop.pan[1] * seconds * short))
            dx, dy = min(max(dx, 0), 2 * margin), min(max(dy, 0), 2 * margin)
            canvas = backdrop[dy:dy + height, dx:dx + width].copy()
            for sprite in shot.sprites:
                _draw_sprite(canvas, sprite, classes[sprite.class_id], seconds, seconds / span)
            if overlay_mask is not None:
                below = canvas[overlay_top:]
                below += (240.0 - below) * overlay_mask
            yield _to_output(canvas, out_width, out_height)
