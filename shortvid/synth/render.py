"""Drawing a planned video: its frames as a pure function of its `VideoScript`.

Frames are drawn at a reduced internal resolution, each object's shape evaluated only inside its
bounding box, and upscaled once per frame.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image

from .motion import position
from .plans import Backdrop, Rect, Sprite, VideoScript
from .shapes import TAU, SceneClass, inside_coverage, rotated


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
        along, across = rotated(xs - cx * width / height, ys - cy, angle)
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
    if sprite.trajectory is not None:
        cx, cy = position(sprite.trajectory, seconds, width, height)
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
    u, v = rotated(xs[None, :], ys[:, None], angle)
    pixel = 1.0 / radius
    coverage, accent = scene_class.draw(u, v, pixel, np.asarray(sprite.variation, np.float32))
    colour = np.asarray(sprite.colour, np.float32)
    if accent is not None:
        colour = colour + (np.asarray(sprite.accent, np.float32) - colour) * accent[..., None]
    if sprite.mode == "window":
        fill = np.asarray(sprite.window_fill, np.float32)
        colour = fill + (colour - fill) * coverage[..., None]
        coverage = inside_coverage(np.maximum(np.abs(u) - 1.0, np.abs(v) - 1.35), pixel)
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
