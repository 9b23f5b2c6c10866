"""Marker colours for one panel: a continuous field on a colour scale, or categories as codes.

Categories (layer, clip) become integer codes in natural order on the panel's colour scale, with
their names as colour-bar ticks when there are few enough to read. A chosen prompt tag splits the
points in two: with the tag and without it (dashboard/tags.py decides which is which).
"""
from __future__ import annotations

import functools
import math
import re
from typing import Any, Mapping, Sequence

import numpy as np
from acestep_viz.dashboard.view import COLOUR_CHOICES, CONTINUOUS
from plotly.colors import get_colorscale

MAX_TICK_LABELS = 12
TICK_CHARS = 24


@functools.lru_cache(maxsize=16)
def _scale(name: str) -> tuple:
    return tuple(tuple(stop) for stop in get_colorscale(name))


def _natural_key(name: str) -> list:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


def category_codes(values: Sequence[Any]) -> tuple[list[int], list[str]]:
    """Map names to indices in natural order (block2 before block10); None -> -1."""
    distinct = set(values)  # a map repeats each name many times: work on the distinct ones
    distinct.discard(None)
    names = sorted({str(v) for v in distinct}, key=_natural_key)
    index = {name: i for i, name in enumerate(names)}
    code = {v: index[str(v)] for v in distinct}
    code[None] = -1
    return list(map(code.__getitem__, values)), names


def field_values(points: Mapping[str, Sequence], colour_by: str) -> list:
    if colour_by == "clip":
        return list(points["id"])
    return list(points[colour_by])


def _colour_bar(title: str, domain: Sequence[float], span: float, ticks: tuple[list, list] | None = None) -> dict:
    """A horizontal colour bar under its panel."""
    bar = dict(title=dict(text=title, side="top", font=dict(size=11)), orientation="h",
               x=(domain[0] + domain[1]) / 2, xanchor="center", y=-0.2, yanchor="top",
               len=(domain[1] - domain[0]) * 0.9, lenmode="fraction", thickness=10,
               outlinewidth=0, tickfont=dict(size=10))
    if ticks is not None:
        bar.update(tickmode="array", tickvals=ticks[0], ticktext=ticks[1])
    elif span >= 5 or float(span).is_integer():
        bar.update(tickformat="d", tick0=0, dtick=max(1, math.ceil(span / 5)))
    return bar


def tick_names(names: Sequence[str]) -> list[str]:
    """Readable colour-bar labels: the dotted prefix all names share is dropped, long tails cut.

    LoRA layer paths differ only near the end ("transformers.transformer_blocks.0.attn.to_out.0").
    """
    parts = [name.split(".") for name in names]
    shared = 0
    if len(parts) > 1:
        while all(len(p) > shared + 1 and p[shared] == parts[0][shared] for p in parts):
            shared += 1
    short = [".".join(p[shared:]) for p in parts]
    return [s if len(s) <= TICK_CHARS else "…" + s[-(TICK_CHARS - 1):] for s in short]


def tag_marker(flags: Sequence[bool | None], tag: str | None) -> dict:
    """Colour codes for "has the tag" (1) and "has not" (0; unknown too), with both named on the colour bar."""
    if tag is None:
        return dict(color=[0] * len(flags), cmin=0, cmax=1, title="Prompt tag (no tags in the prompts)",
                    ticks=([0], ["no tags"]))
    return dict(color=[1 if flag else 0 for flag in flags], cmin=0, cmax=1, title=f"Tag: {tag}",
                ticks=([0, 1], [f"without {tag}", f"with {tag}"]))


def marker(colour_by: str, colorscale: str, points: Mapping[str, Sequence], domain: Sequence[float],
           inert, tag: str | None = None) -> dict:
    """Plotly marker settings colouring ``points`` by ``colour_by``; ``inert`` escapes tick text. For "tag",
    ``points["has_tag"]`` says which points have ``tag`` (dashboard/tags.py: has_tag)."""
    # plotly.js knows only some scale names (not Plasma): always send the explicit list.
    # The thin light outline keeps the dark low end of each scale visible on the dark plot.
    base = dict(size=5, colorscale=[list(stop) for stop in _scale(colorscale)], showscale=True, opacity=0.9,
                line=dict(width=0.5, color="rgba(229, 231, 235, 0.35)"))
    if colour_by == "tag":
        split = tag_marker(points.get("has_tag") or [None] * len(points["x"]), tag)
        ticks = (split["ticks"][0], [inert(text) for text in split["ticks"][1]])
        return base | dict(color=split["color"], cmin=split["cmin"], cmax=split["cmax"],
                           colorbar=_colour_bar(inert(split["title"]), domain, 1, ticks))
    values = field_values(points, colour_by)
    title = COLOUR_CHOICES[colour_by]
    if colour_by in CONTINUOUS:
        numbers = np.array(values, dtype=float) if values else np.zeros(0)  # None reads as NaN
        known = numbers[~np.isnan(numbers)]
        if not known.size and colour_by != "step":  # e.g. loss in the latent panel: nothing to show
            fallback = marker("step", colorscale, points, domain, inert)
            fallback["colorbar"]["title"]["text"] = f"Step (no {title.lower()} here)"
            return fallback
        low, high = (float(known.min()), float(known.max())) if known.size else (0.0, 1.0)
        high = high if high > low else low + 1
        colours = np.where(np.isnan(numbers), low, numbers).tolist()
        return base | dict(color=colours, cmin=low, cmax=high, colorbar=_colour_bar(title, domain, high - low))
    codes, names = category_codes(values)
    ticks = None
    if len(names) <= MAX_TICK_LABELS:
        ticks = (list(range(len(names))), [inert(n) for n in tick_names(names)])
    return base | dict(color=codes, cmin=0, cmax=max(len(names) - 1, 1),
                       colorbar=_colour_bar(title, domain, max(len(names) - 1, 1), ticks))
