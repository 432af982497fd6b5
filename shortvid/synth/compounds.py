"""The pretraining catalogue: hundreds of compound classes, none of them a class of `shapes.GROUPS`.

The `pretrain` corpus preset stands in for ImageNet: a backbone learns general shape and texture
features on it, then meets the downstream classes (`shapes.GROUPS`, the `bench` preset) for the
first time. So its classes are built from primitives of their own, drawn with the same toolkit
(signed distances in object-local coordinates, an accent mask for the second colour):

- 12 silhouettes (triangle, square, pentagon, hexagon, diamond, heart, crescent, cross, half disc,
  teardrop, chevron, bowtie): no star, flower, gear, ring or blob outline;
- 10 fills (plain, concentric, sectors, swirl, half, quarters, border, dashes, triangles, crosses):
  none of the six fills of the `patterns` group;
- 6 full-frame textures (lattice, bubbles, truchet, ripples, barcode, rain): none of the `scenes`.

Each class combines two of them, in one of four kinds:

- filled: a silhouette with a fill in its accent colour (`hexagon_swirl`, or `hexagon_plain`);
- nested: a silhouette holding a smaller other one in its accent colour (`hexagon_holding_heart`);
- pair: two silhouettes side by side (`hexagon_and_heart`; one class per unordered pair);
- textured: a silhouette in the middle of a full-frame texture (`hexagon_on_ripples`).

A class's group is its main silhouette: 10 filled, 11 nested, 5 pair and 6 textured classes per
group, 32 in all, 384 over the 12 groups. Classes of a group share the silhouette and differ in
what accompanies it, so, as in `shapes.GROUPS`, errors stay mostly within groups. Colours remain
the plan's, independent of the class.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import zip_longest

import numpy as np

from .shapes import (
    TAU,
    SceneClass,
    bar,
    cell_offset,
    hash_noise,
    inside_coverage,
    polar,
    rotated,
    stripes,
)

SilhouetteFunction = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""distance(u, v, variation): signed distance (negative inside) to a solid outline of radius about 1."""

FillFunction = Callable[[np.ndarray, np.ndarray, float, float, np.ndarray], "np.ndarray | None"]
"""fill(u, v, period, pixel, distance) -> accent mask in [0, 1] inside a silhouette (None: plain);
`distance` is the silhouette's signed distance at (u, v)."""

TextureFunction = Callable[[np.ndarray, np.ndarray, float, float, np.ndarray], np.ndarray]
"""texture(u, v, period, pixel, variation) -> coverage in [0, 1] of a full-frame structure."""


# Silhouettes: solid outlines that stay within radius 1.


def _polygon(sides: int, circumradius: float) -> SilhouetteFunction:
    sector = TAU / sides
    apothem = circumradius * math.cos(math.pi / sides)

    def distance(u, v, variation):
        radius, theta = polar(u, v)
        across = theta - np.floor(theta / sector) * sector - sector / 2.0
        return radius * np.cos(across) - apothem * (0.97 + 0.06 * variation[0])

    return distance


def _diamond(u, v, variation):
    width, height = 0.95, 0.55 + 0.08 * variation[0]
    return (np.abs(u) / width + np.abs(v) / height - 1.0) * (width * height / math.hypot(width, height))


def _heart(u, v, variation):
    lobes = np.minimum(np.hypot(u - 0.38, v + 0.3), np.hypot(u + 0.38, v + 0.3)) - 0.46
    point = (np.abs(u) + np.abs(v - 0.1)) / math.sqrt(2.0) - 0.6
    return np.minimum(lobes, point)


def _crescent(u, v, variation):
    bite = 0.36 + 0.1 * variation[0]
    return np.maximum(np.hypot(u, v) - 0.92, 0.76 - np.hypot(u - bite, v))


def _cross(u, v, variation):
    width = 0.26 + 0.06 * variation[0]
    return np.minimum(bar(u, v, 0.0, 0.88, width), bar(u, v, math.pi / 2, 0.88, width))


def _half_disc(u, v, variation):
    return np.maximum(np.hypot(u, v - 0.38) - 0.95, v - 0.38)


def _teardrop(u, v, variation):
    centre, radius, tip = 0.28, 0.62, -0.95  # a disc and the cone of its tangents from the tip
    slope = math.asin(radius / (centre - tip))
    cone = np.abs(u) * math.cos(slope) - (v - tip) * math.sin(slope)
    tangent_line = tip + (centre - tip) * math.cos(slope) ** 2
    return np.minimum(np.hypot(u, v - centre) - radius, np.maximum(cone, v - tangent_line))


def _chevron(u, v, variation):
    width = 0.2 + 0.05 * variation[0]
    return np.maximum(np.abs(u + np.abs(v) - 0.35) / math.sqrt(2.0) - width, np.abs(v) - 0.85)


def _bowtie(u, v, variation):
    flare = 0.8 + 0.15 * variation[0]
    wings = (np.abs(v) - flare * np.abs(u)) / math.hypot(1.0, flare)
    return np.maximum(np.maximum(wings, np.abs(u) - 0.9), np.abs(v) - 0.75)


SILHOUETTES: dict[str, SilhouetteFunction] = {
    "triangle": _polygon(3, 1.0), "square": _polygon(4, 0.95), "pentagon": _polygon(5, 0.92),
    "hexagon": _polygon(6, 0.9), "diamond": _diamond, "heart": _heart, "crescent": _crescent, "cross": _cross,
    "half_disc": _half_disc, "teardrop": _teardrop, "chevron": _chevron, "bowtie": _bowtie,
}
"""Solid outlines, one per group of the pretraining catalogue."""


# Fills: accent masks inside a silhouette, in its own (rotating) coordinates.


def _concentric(u, v, period, pixel, distance):
    return stripes(np.hypot(u, v), period, pixel)


def _sectors(u, v, period, pixel, distance):
    radius, theta = polar(u, v)
    wedge = TAU / 8.0
    return inside_coverage((cell_offset(theta, wedge) - 0.25 * wedge) * radius, pixel)


def _swirl(u, v, period, pixel, distance):
    radius, theta = polar(u, v)
    return stripes(radius - theta * (period / TAU), period, pixel)


def _half(u, v, period, pixel, distance):
    return inside_coverage(u, pixel)


def _quarters(u, v, period, pixel, distance):
    return inside_coverage(np.sign(u * v) * np.minimum(np.abs(u), np.abs(v)), pixel)


def _border(u, v, period, pixel, distance):
    return np.clip(0.5 + (distance + 0.15) / pixel, 0.0, 1.0)


def _dashes(u, v, period, pixel, distance):
    row = np.floor(v / period)
    shifted = u + period * (row - 2.0 * np.floor(row / 2.0))
    return inside_coverage(np.maximum(cell_offset(shifted, 2.0 * period) - 0.6 * period,
                                      cell_offset(v, period) - 0.17 * period), pixel)


def _triangles(u, v, period, pixel, distance):
    rise = v / period - np.floor(v / period)  # 0 at a row's top, 1 at its bottom
    return inside_coverage((cell_offset(u, period) / period - 0.45 * rise) * period * 0.9, pixel)


def _crosses(u, v, period, pixel, distance):
    across, down = cell_offset(u, period), cell_offset(v, period)
    arm, width = 0.38 * period, 0.12 * period
    return inside_coverage(np.minimum(np.maximum(across - arm, down - width), np.maximum(across - width, down - arm)),
                           pixel)


FILLS: dict[str, FillFunction | None] = {
    "plain": None, "concentric": _concentric, "sectors": _sectors, "swirl": _swirl, "half": _half,
    "quarters": _quarters, "border": _border, "dashes": _dashes, "triangles": _triangles, "crosses": _crosses,
}
"""Accent patterns inside a silhouette (`plain`: none)."""


# Textures: full-frame structures, in the coordinates of a full-frame sprite (radius about 0.5 of
# the frame's short side).


def _lattice(u, v, period, pixel, variation):
    lines = [cell_offset(u * math.cos(angle) + v * math.sin(angle) + 0.5 * period, period)
             for angle in (0.0, math.pi / 3.0, 2.0 * math.pi / 3.0)]  # three families that meet: triangles
    return inside_coverage(np.minimum(np.minimum(lines[0], lines[1]), lines[2]) - 0.05 * period, pixel)


def _bubbles(u, v, period, pixel, variation):
    cell = np.floor(u / period) * 7.0 + np.floor(v / period) * 131.0
    size = (0.2 + 0.22 * hash_noise(cell, variation[2])) * period
    return inside_coverage(np.abs(np.hypot(cell_offset(u, period), cell_offset(v, period)) - size)
                           - 0.06 * period, pixel)


def _truchet(u, v, period, pixel, variation):
    cell = np.floor(u / period) * 7.0 + np.floor(v / period) * 131.0
    x, y = u / period - np.floor(u / period), v / period - np.floor(v / period)
    x = np.where(hash_noise(cell, variation[2]) < 0.5, x, 1.0 - x)  # each tile's arcs one way or the other
    arcs = np.minimum(np.abs(np.hypot(x, y) - 0.5), np.abs(np.hypot(x - 1.0, y - 1.0) - 0.5))
    return inside_coverage((arcs - 0.09) * period, pixel)


def _ripples(u, v, period, pixel, variation):
    centre = (1.2 * (variation[3] - 0.5), 1.2 * (variation[4] - 0.5))
    return stripes(np.hypot(u - centre[0], v - centre[1]), period, pixel)


def _barcode(u, v, period, pixel, variation):
    column = 0.4 * period
    on = hash_noise(np.floor(u / column), variation[2]) < 0.5
    return np.where(on, inside_coverage(cell_offset(u, column) - 0.42 * column, pixel), 0.0)


def _rain(u, v, period, pixel, variation):
    along, across = rotated(u, v, 1.0)
    row = np.floor(across / (0.5 * period))
    dash = cell_offset(along + period * hash_noise(row, variation[2]), period) - 0.3 * period
    return inside_coverage(np.maximum(dash, cell_offset(across, 0.5 * period) - 0.07 * period), pixel)


TEXTURES: dict[str, TextureFunction] = {
    "lattice": _lattice, "bubbles": _bubbles, "truchet": _truchet, "ripples": _ripples, "barcode": _barcode,
    "rain": _rain,
}
"""Full-frame structures a silhouette stands in."""


# The four kinds of compound classes.


def _placed(silhouette: SilhouetteFunction, u, v, variation, centre: tuple[float, float], scale: float,
            angle: float) -> np.ndarray:
    """The silhouette's distance when drawn at `centre`, `scale` times smaller, turned by `angle`."""
    across, down = rotated(u - centre[0], v - centre[1], angle)
    return silhouette(across / scale, down / scale, variation) * scale


def _filled(silhouette: SilhouetteFunction, fill: FillFunction | None):
    def draw(u, v, pixel, variation):
        distance = silhouette(u, v, variation)
        coverage = inside_coverage(distance, pixel)
        if fill is None:
            return coverage, None
        return coverage, fill(u, v, 0.3 + 0.1 * variation[3], pixel, distance)

    return draw


def _nested(outer: SilhouetteFunction, inner: SilhouetteFunction):
    def draw(u, v, pixel, variation):
        core = inside_coverage(_placed(inner, u, v, variation, (0.0, 0.0), 0.42 + 0.06 * variation[6],
                                       variation[5] * TAU), pixel)
        return np.maximum(inside_coverage(outer(u, v, variation), pixel), core), core

    return draw


def _pair(first: SilhouetteFunction, second: SilhouetteFunction):
    def draw(u, v, pixel, variation):
        gap, scale = 0.52 + 0.04 * variation[7], 0.56  # reaches at most 1.12 from the centre
        left = inside_coverage(_placed(first, u, v, variation, (-gap, 0.0), scale, variation[5] * TAU), pixel)
        right = inside_coverage(_placed(second, u, v, variation, (gap, 0.0), scale, variation[6] * TAU), pixel)
        return np.maximum(left, right), right

    return draw


def _textured(silhouette: SilhouetteFunction, texture: TextureFunction):
    def draw(u, v, pixel, variation):
        distance = _placed(silhouette, u, v, variation, (0.0, 0.0), 0.55 + 0.1 * variation[6], variation[5] * TAU)
        body = inside_coverage(distance, pixel)
        clearing = inside_coverage(distance - 0.08, pixel)  # the texture keeps off the silhouette's edge
        structure = texture(u, v, 0.35 + 0.15 * variation[1], pixel, variation) * (1.0 - clearing)
        return np.maximum(structure, body), body

    return draw


PAIRS_PER_GROUP = 5
"""Group i pairs its silhouette with the next 5 (cyclically): 60 of the 66 unordered pairs, each once."""


def _group(index: int, names: list[str]) -> tuple[SceneClass, ...]:
    """One silhouette's classes, the four kinds interleaved so that a group's first classes cover them all."""
    name = names[index]
    silhouette = SILHOUETTES[name]
    filled = [SceneClass(f"{name}_{fill}", name, _filled(silhouette, draw)) for fill, draw in FILLS.items()]
    nested = [SceneClass(f"{name}_holding_{other}", name, _nested(silhouette, SILHOUETTES[other]))
              for other in names if other != name]
    partners = [names[(index + step) % len(names)] for step in range(1, PAIRS_PER_GROUP + 1)]
    pairs = [SceneClass(f"{name}_and_{other}", name, _pair(silhouette, SILHOUETTES[other])) for other in partners]
    textured = [SceneClass(f"{name}_on_{texture}", name, _textured(silhouette, draw), full_frame=True)
                for texture, draw in TEXTURES.items()]
    kinds = zip_longest(filled, nested, pairs, textured)
    return tuple(member for members in kinds for member in members if member is not None)


PRETRAIN_GROUPS: dict[str, tuple[SceneClass, ...]] = {
    name: _group(index, list(SILHOUETTES)) for index, name in enumerate(SILHOUETTES)
}
"""Every pretraining class by group (its main silhouette), the kinds interleaved within a group."""
