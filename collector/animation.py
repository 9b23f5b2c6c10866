"""An animated GIF of a run's map history: one picture per training step, the three spaces side by side.

``render_gif`` is a pure function of the frames (anything with ``step``, ``coords`` (n x 2) and
per-row ``meta`` dicts, as ``CollectorState.history_frames`` returns them). At each step a panel
shows the newest frame of its space fitted at or before that step. Each panel's axis limits are
fixed over the whole animation, so points move only when the map moves; points are coloured by
their training step on one scale for the whole GIF. Drawn with Pillow on the dashboard's dark palette.
"""
from __future__ import annotations

import functools
import io
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PANELS = (("latent", "Latent Space (Audio)"), ("lora", "LoRA Layer Outputs"), ("prompt", "Prompt Embeddings"))
PAGE, PLOT, TEXT, MUTED = (0x11, 0x18, 0x27), (0x1F, 0x29, 0x37), (0xE5, 0xE7, 0xEB), (0x9C, 0xA3, 0xAF)
SIDE, GAP, TOP, BOTTOM = 300, 24, 64, 16  # plot square, margins and title band, pixels
WIDTH, HEIGHT = GAP + len(PANELS) * (SIDE + GAP), TOP + SIDE + BOTTOM
RADIUS = 3
FRAME_MS = 400
# Viridis at eleven stops: dark purple (early steps) to yellow (late steps).
VIRIDIS = np.array([(68, 1, 84), (72, 36, 117), (65, 68, 135), (53, 95, 141), (42, 120, 142), (33, 145, 140),
                    (34, 168, 132), (68, 191, 112), (122, 209, 81), (189, 223, 38), (253, 231, 37)], float)
# One palette for every picture (no per-picture quantising): the four page colours, then the step scale.
_PAGE, _PLOT, _TEXT, _MUTED, _SCALE0 = range(5)
SCALE_LEVELS = 200


def render_gif(history: dict[str, Sequence], frame_ms: int = FRAME_MS) -> bytes:
    """GIF bytes with one picture per distinct training step among the frames of ``history``
    ({space: frames, oldest first}). ValueError when there is no frame."""
    steps = sorted({frame.step for frames in history.values() for frame in frames})
    if not steps:
        raise ValueError("nothing to animate: no space of this run has been projected yet")
    step_range = _step_range(history)
    limits = {space: _limits(frames) for space, frames in history.items() if frames}
    drawn = {space: [(frame.step, len(frame.meta), _points(frame, limits[space], step_range),
                      getattr(frame, "method", "pacmap")) for frame in frames]
             for space, frames in history.items()}
    background = _background()
    pictures = [_picture(step, {space: _at_step(frames, step) for space, frames in drawn.items()}, background)
                for step in steps]
    out = io.BytesIO()
    pictures[0].save(out, format="GIF", save_all=True, append_images=pictures[1:], duration=frame_ms, loop=0)
    return out.getvalue()


def _at_step(frames: Sequence[tuple], step: int):
    """The newest frame fitted at or before ``step`` (None before the space's first map)."""
    shown = None
    for frame in frames:
        if frame[0] <= step:
            shown = frame
    return shown


def _limits(frames: Sequence) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) holding every point of every frame, with a 5 % margin."""
    coords = np.concatenate([np.asarray(f.coords, float).reshape(-1, 2) for f in frames])
    if not len(coords):
        return -1.0, 1.0, -1.0, 1.0
    low, high = coords.min(axis=0), coords.max(axis=0)
    pad = np.maximum((high - low) * 0.05, 1e-6)
    return low[0] - pad[0], high[0] + pad[0], low[1] - pad[1], high[1] + pad[1]


def _row_steps(frame) -> np.ndarray:
    return np.array([frame.step if m.get("step") is None else m["step"] for m in frame.meta], float)


def _step_range(history: dict[str, Sequence]) -> tuple[float, float]:
    steps = [_row_steps(f) for frames in history.values() for f in frames if len(f.meta)]
    if not steps:
        return 0.0, 1.0
    every = np.concatenate(steps)
    return float(every.min()), float(every.max())


def _points(frame, limits, step_range) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Panel pixel rows, columns and palette indices of a frame's points, later steps last (drawn on top)."""
    x0, x1, y0, y1 = limits
    coords = np.asarray(frame.coords, float).reshape(-1, 2)
    steps = _row_steps(frame)
    order = np.argsort(steps, kind="stable")
    span = SIDE - 1 - 2 * RADIUS
    cols = RADIUS + np.round((coords[order, 0] - x0) / (x1 - x0) * span).astype(int)
    rows = RADIUS + np.round((y1 - coords[order, 1]) / (y1 - y0) * span).astype(int)
    low, high = step_range
    t = np.full(len(order), 0.5) if high <= low else np.clip((steps[order] - low) / (high - low), 0, 1)
    return rows, cols, (_SCALE0 + np.round(t * (SCALE_LEVELS - 1))).astype(np.uint8)


def _palette() -> list[int]:
    t = np.linspace(0, 1, SCALE_LEVELS) * (len(VIRIDIS) - 1)
    i = np.minimum(t.astype(int), len(VIRIDIS) - 2)
    frac = (t - i)[:, None]
    scale = np.round(VIRIDIS[i] * (1 - frac) + VIRIDIS[i + 1] * frac).astype(int)
    colours = [PAGE, PLOT, TEXT, MUTED, *map(tuple, scale)]
    return [c for colour in colours for c in colour]


def _background() -> np.ndarray:
    canvas = np.full((HEIGHT, WIDTH), _PAGE, np.uint8)
    for index in range(len(PANELS)):
        left = GAP + index * (SIDE + GAP)
        canvas[TOP:TOP + SIDE, left:left + SIDE] = _PLOT
    return canvas


def _picture(step: int, shown: dict, background: np.ndarray) -> Image.Image:
    canvas = background.copy()
    for index, (space, _) in enumerate(PANELS):
        frame = shown.get(space)
        if frame is not None:
            _stamp(canvas[TOP:TOP + SIDE, GAP + index * (SIDE + GAP):][:, :SIDE], *frame[2])
    image = Image.frombytes("P", (WIDTH, HEIGHT), canvas.tobytes())
    image.putpalette(_palette())
    draw = ImageDraw.Draw(image)
    _centred(draw, f"step {step}", WIDTH / 2, 10, _TEXT, 18)
    for index, (space, title) in enumerate(PANELS):
        frame = shown.get(space)
        note = "not projected yet" if frame is None else f"PCA, {frame[1]} points" if frame[3] == "pca" else (
            f"{frame[1]} points")
        _centred(draw, f"{title}  ({note})", GAP + index * (SIDE + GAP) + SIDE / 2, TOP - 24, _MUTED, 12)
    return image


def _stamp(panel: np.ndarray, rows: np.ndarray, cols: np.ndarray, colours: np.ndarray) -> None:
    """Each point as a small disc."""
    for dy in range(-RADIUS, RADIUS + 1):
        for dx in range(-RADIUS, RADIUS + 1):
            if dx * dx + dy * dy <= RADIUS * RADIUS:
                panel[rows + dy, cols + dx] = colours


def _centred(draw: ImageDraw.ImageDraw, text: str, x: float, top: float, colour: int, size: int) -> None:
    font = _font(size)
    x0, _, x1, _ = draw.textbbox((0, 0), text, font=font)
    draw.text((x - (x1 - x0) / 2, top), text, fill=colour, font=font)


@functools.lru_cache(maxsize=None)
def _font(size: int):
    return ImageFont.load_default(size=size)  # a scalable font where Pillow has FreeType, else its bitmap one
