"""Motion rules: classes that look alike and differ only in how their object moves.

A motion class's object follows a `Trajectory` planned from its rule (`MOTIONS`): a straight line in
one direction, slow or fast, steady or stop-and-go, or a circle turning one way or the other. A line
wraps around the frame (the object leaves by one edge and comes back by the opposite one, like on a
treadmill) and starts at a uniform random place on its wrapped track, so at every moment its position
is uniform on the track whatever the direction, speed or rhythm: a still frame of `move_right` is
distributed as one of `move_left`, and only frame-to-frame change tells them apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .shapes import TAU


@dataclass(frozen=True)
class MotionRule:
    """How a motion class moves: a line (heading in radians, 0 = right, pi/2 = down on screen) or an orbit
    (`turn` +1 clockwise on screen, -1 counter-clockwise); speeds in frame short sides per second;
    `hops` makes a line stop and go (`hops` stops per second) instead of moving steadily."""

    path: str  # "line" or "orbit"
    speed: tuple[float, float]
    heading: float = 0.0
    turn: int = 1
    hops: tuple[float, float] = (0.0, 0.0)


MOTIONS: dict[str, MotionRule] = {
    "move_right": MotionRule("line", (0.2, 0.32), heading=0.0),
    "move_left": MotionRule("line", (0.2, 0.32), heading=math.pi),
    "move_up": MotionRule("line", (0.2, 0.32), heading=-math.pi / 2),
    "move_down": MotionRule("line", (0.2, 0.32), heading=math.pi / 2),
    "dash_right": MotionRule("line", (0.65, 0.9), heading=0.0),
    "hop_right": MotionRule("line", (0.2, 0.32), heading=0.0, hops=(1.5, 2.5)),
    "orbit_cw": MotionRule("orbit", (0.2, 0.32), turn=1),
    "orbit_ccw": MotionRule("orbit", (0.2, 0.32), turn=-1),
}
"""Every motion rule by name. Siblings differ in one property: direction (move_right / move_left,
move_up / move_down, orbit_cw / orbit_ccw), trajectory (move_right / orbit_cw), speed (move_right /
dash_right) and rhythm (move_right / hop_right)."""


@dataclass(frozen=True)
class Trajectory:
    """A planned path: `origin` (fractions of the frame) is the position at the shot's start for a line,
    the circle's centre for an orbit; `velocity` in short sides per second (line); `hop` stops per second
    (0: steady); `orbit` is (radius in short sides, angular speed in rad/s, start angle); `margin` how far
    (short sides) beyond the frame a line's wrapped track reaches, so the object leaves fully before it
    comes back."""

    path: str
    origin: tuple[float, float]
    velocity: tuple[float, float] = (0.0, 0.0)
    hop: float = 0.0
    orbit: tuple[float, float, float] = (0.0, 0.0, 0.0)
    margin: float = 0.0


def plan_trajectory(rng: np.random.Generator, rule_name: str, extent: float) -> Trajectory:
    """Draw a trajectory for rule `rule_name`; `extent` is the object's reach in frame short sides."""
    rule = MOTIONS[rule_name]
    speed = float(rng.uniform(*rule.speed))
    if rule.path == "orbit":
        radius = float(rng.uniform(0.16, 0.24))
        centre = (float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.3, 0.7)))
        return Trajectory("orbit", centre, orbit=(radius, rule.turn * speed / radius, float(rng.uniform(0.0, TAU))))
    along = (float(rng.uniform(0.0, 1.0)), float(rng.uniform(0.25, 0.75)))  # (on the track, across it)
    horizontal = abs(math.cos(rule.heading)) > 0.5
    origin = along if horizontal else along[::-1]
    hop = float(rng.uniform(*rule.hops)) if rule.hops[1] > 0 else 0.0
    sign = math.copysign(1.0, math.cos(rule.heading) if horizontal else math.sin(rule.heading))
    velocity = (sign * speed, 0.0) if horizontal else (0.0, sign * speed)
    return Trajectory("line", origin, velocity=velocity, hop=hop, margin=extent)


def _travel(seconds: float, hop: float) -> float:
    """Distance covered by time `seconds` at unit mean speed: steady, or stop-and-go `hop` times a second."""
    if hop <= 0:
        return seconds
    return seconds - math.sin(TAU * hop * seconds) / (TAU * hop)


def position(trajectory: Trajectory, seconds: float, width: int, height: int) -> tuple[float, float]:
    """The object's centre in pixels of a `width` x `height` frame, `seconds` into its shot."""
    short = min(width, height)
    if trajectory.path == "orbit":
        radius, angular, start = trajectory.orbit
        angle = start + angular * seconds
        return (trajectory.origin[0] * width + radius * short * math.cos(angle),
                trajectory.origin[1] * height + radius * short * math.sin(angle))
    travel = _travel(seconds, trajectory.hop)
    centre = []
    for origin, speed, size in zip(trajectory.origin, trajectory.velocity, (width, height), strict=True):
        if speed == 0.0:
            centre.append(origin * size)
            continue
        low, span = -trajectory.margin * short, size + 2.0 * trajectory.margin * short
        start = low + origin * span  # the origin is a fraction of the wrapped track, not of the frame
        centre.append(low + (start - low + speed * travel * short) % span)
    return centre[0], centre[1]
