"""Plans of synthetic short videos: every random choice of a video, made before any drawing.

`plan_video` chooses, from a numpy Generator, the shots, backdrops, objects, motion and colours
of one video; `render.render_frames` then draws the plan as a pure function, so the same seed
gives the same pixels. Colours are drawn per shot independently of the class, with exchangeable
roles, so the mean colour of a video carries no class information. Each group prefers one
backdrop kind, so context helps to tell groups apart, but not alone.
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .compounds import PRETRAIN_GROUPS
from .motion import Trajectory, plan_trajectory
from .shapes import AV_GROUPS, GROUPS, TAU, VARIATION_SIZE, SceneClass

Colour = tuple[float, float, float]
Rect = tuple[float, float, float, float]

BACKDROP_KINDS = ("solid", "linear", "radial", "noise", "bokeh")
_GROUP_BACKDROPS = {"stars": "radial", "rings": "linear", "patterns": "noise", "scenes": "linear", "marks": "solid"}
_GROUP_BACKDROP_SHARE = 0.6  # how often a shot uses its group's backdrop: context helps, but not alone


CATALOGUES: dict[str, dict[str, tuple[SceneClass, ...]]] = {
    "standard": GROUPS, "pretrain": PRETRAIN_GROUPS, "av": AV_GROUPS,
}
"""The class catalogues a corpus draws from: `standard` (`shapes.GROUPS`: the tiny, small and bench
presets), `pretrain` (`compounds.PRETRAIN_GROUPS`: hundreds of classes none of which is standard) and
`av` (`shapes.AV_GROUPS`: appearance, motion and sound classes)."""


def select_classes(num_classes: int, num_groups: int, catalogue: str = "standard") -> tuple[SceneClass, ...]:
    """The first `num_groups` groups of `catalogue`, `num_classes` classes spread over them as evenly as possible.

    Class ids are positions in the returned tuple, grouped: group by group, members in catalogue order.
    """
    if catalogue not in CATALOGUES:
        raise ValueError(f"unknown class catalogue {catalogue!r}; choose one of {sorted(CATALOGUES)}")
    catalogue_groups = CATALOGUES[catalogue]
    if not 1 <= num_groups <= len(catalogue_groups):
        raise ValueError(f"num_groups must be 1..{len(catalogue_groups)}, got {num_groups}")
    groups = list(catalogue_groups.values())[:num_groups]
    most = sum(len(members) for members in groups)
    if not 2 * num_groups <= num_classes <= most:
        raise ValueError(f"num_classes must be {2 * num_groups}..{most} for {num_groups} groups "
                         f"(2..{max(len(members) for members in groups)} per group), got {num_classes}")
    per_group = [0] * num_groups
    for _ in range(num_classes):  # round robin, skipping full groups: an even spread, earlier groups first
        open_groups = [index for index in range(num_groups) if per_group[index] < len(groups[index])]
        per_group[min(open_groups, key=lambda index: per_group[index])] += 1
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
    trajectory: Trajectory | None = None  # a motion class's path, instead of start, end and wobble


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
    preferred = _GROUP_BACKDROPS.get(classes[class_ids[0]].group)  # the pretraining groups prefer none
    use_group_backdrop = rng.random() < _GROUP_BACKDROP_SHARE
    kind = preferred if use_group_backdrop and preferred else str(rng.choice(BACKDROP_KINDS))
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
        for _ in range(copies):
            sprite = _sprite(rng, class_id, "object", fg, ac, backdrop_colour, difficulty)
            if classes[class_id].motion:
                path = plan_trajectory(rng, classes[class_id].motion, 1.2 * max(sprite.radius))
                sprite = dataclasses.replace(sprite, wobble=(0.0, 0.0, 0.0), trajectory=path)
            sprites.append(sprite)
    sprites.sort(key=lambda sprite: sprite.mode != "full_frame")  # a scene behind the objects
    backdrop = _backdrop(rng, kind, backdrop_colour, difficulty)
    return Shot("content", start, stop, tuple(class_ids), backdrop, tuple(sprites))


def _shot_layout(rng: np.random.Generator, duration: float, content_shots: int,
                 distractors: bool = True) -> list[tuple[str, float]]:
    """Shot kinds and durations (seconds): optional black lead-in or title card (`distractors`), content,
    optional end card (`distractors`)."""
    layout: list[tuple[str, float]] = []
    lead = rng.random()
    if distractors and lead < 0.08:
        layout.append(("black", rng.uniform(0.1, 0.4)))
    elif distractors and lead < 0.13:
        layout.append(("title", rng.uniform(0.5, 1.2)))
    tail = ("title", rng.uniform(0.6, 1.5)) if rng.random() < 0.12 and distractors else None
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
               difficulty: float = 0.0, distractors: bool = True, max_shots: int = 4) -> VideoScript:
    """Choose the shots, backdrops, objects, motion and colours of one video showing `labels`.

    The first label is the main subject. A multi-label video either shows its classes together
    in every content shot, or gives the other labels a shot each (the shortest ones) and the
    main label the rest.
    `overlay` adds app-style caption blocks (default: at random, in a third of the videos).
    `difficulty` in [0, 1] makes objects smaller and likelier to leave the frame, lowers the
    contrast and adds unlabelled clutter to the backdrops: clean frames are too easy to show
    differences between models.
    `distractors` allows title cards and black lead-ins, which show no class; without them every frame
    shows its labels (pretraining samples single keyframes and wants each to show its class).
    `max_shots` caps the content shots (1-4 are drawn), hence the cuts and keyframes: a motion or sound
    class wants few keyframes, so that frames alone cannot tell it from its siblings.
    """
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must be within [0, 1], got {difficulty}")
    if not labels:
        raise ValueError("a video needs at least one label")
    if max_shots < 1:
        raise ValueError(f"max_shots must be at least 1, got {max_shots}")
    labels = tuple(int(label) for label in labels)
    frame_count = len(times)
    duration = float(times[-1]) + (float(times[-1]) / max(frame_count - 1, 1) if frame_count > 1 else 0.1)
    content_shots = min(int(rng.choice([1, 2, 3, 4], p=[0.3, 0.35, 0.25, 0.1])), max_shots)
    together = len(labels) > 1 and rng.random() < 0.5
    if len(labels) > 1 and not together:
        content_shots = max(content_shots, len(labels))
    min_frames = max(2, min(8, frame_count // 8))
    spans = _frame_spans(_shot_layout(rng, duration, content_shots, distractors), times, min_frames)
    content = [index for index, (kind, _, _) in enumerate(spans) if kind == "content"]
    shown = {index: labels for index in content}
    if not together and 1 < len(labels) <= len(content):
        shortest_first = sorted(content, key=lambda index: spans[index][2] - spans[index][1])
        shown = {index: labels[:1] for index in content}
        for index, label in zip(shortest_first, rng.permutation(labels[1:]), strict=False):
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
