"""The adapter's update size over training steps: ||scale * B A|| / ||W|| per LoRA layer.

A run has up to a few hundred LoRA layers, too many for one line each: the chart draws the median over
layers with the band from the smallest to the largest, and the ``TOP_LAYERS`` largest layers (at their
latest step) as their own lines, named on hover. A second run (the "compare with" choice) is drawn
dashed, median and band, on the same axes. Pure: ``{run: layers}`` in, a Plotly figure dict out.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from acestep_viz.dashboard.figures import PALETTE, TEMPLATE

TOP_LAYERS = 3
MAIN_COLOUR, COMPARE_COLOUR = "#a78bfa", "#fbbf24"
TOP_COLOURS = ("#f472b6", "#22d3ee", "#4ade80", "#fb923c", "#e879f9")

Layers = Mapping[str, Mapping[str, list]]  # layer -> {"step": [...], "value": [...]}


def summary(layers: Layers) -> dict[str, list]:
    """Per measured step: the median, smallest and largest update size over the layers measured then."""
    by_step: dict[int, list[float]] = {}
    for series in layers.values():
        for step, value in zip(series.get("step") or [], series.get("value") or []):
            if value is not None:
                by_step.setdefault(int(step), []).append(float(value))
    steps = sorted(by_step)
    return {"step": steps, "median": [float(np.median(by_step[s])) for s in steps],
            "min": [min(by_step[s]) for s in steps], "max": [max(by_step[s]) for s in steps]}


def top_layers(layers: Layers, count: int = TOP_LAYERS) -> list[str]:
    """The ``count`` layers with the largest latest update size, largest first."""
    latest = {name: series["value"][-1] for name, series in layers.items()
              if series.get("value") and series["value"][-1] is not None}
    return sorted(latest, key=lambda name: -latest[name])[:count]


def _band(run: str, stats: dict, colour: str, dashed: bool) -> list[dict]:
    line = dict(color=colour, width=2, dash="dash" if dashed else "solid")
    fill = _translucent(colour, 0.12 if dashed else 0.2)
    group = f"run:{run}"
    return [
        dict(type="scatter", mode="lines", x=stats["step"], y=stats["min"], line=dict(width=0, color=colour),
             legendgroup=group, showlegend=False, hoverinfo="skip", name=f"{run} min"),
        dict(type="scatter", mode="lines", x=stats["step"], y=stats["max"], fill="tonexty", fillcolor=fill,
             line=dict(width=0, color=colour), legendgroup=group, showlegend=False, name=f"{run} range",
             hovertemplate=f"{run}: largest layer %{{y:.3g}} at step %{{x}}<extra></extra>"),
        dict(type="scatter", mode="lines+markers", x=stats["step"], y=stats["median"], line=line,
             marker=dict(size=4), legendgroup=group, name=f"{run}: median of layers",
             hovertemplate=f"{run}: median %{{y:.3g}} at step %{{x}}<extra></extra>"),
    ]


def _translucent(hex_colour: str, alpha: float) -> str:
    red, green, blue = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


def adapter_figure(runs: Mapping[str, Layers] | None, compare: str | None = None) -> dict:
    """The chart for ``runs`` (the shown run first); ``compare`` names the run drawn dashed."""
    data: list[dict[str, Any]] = []
    for run, layers in (runs or {}).items():
        if not layers:
            continue
        dashed = run == compare
        data += _band(run, summary(layers), COMPARE_COLOUR if dashed else MAIN_COLOUR, dashed)
        if dashed:
            continue
        for name, colour in zip(top_layers(layers), TOP_COLOURS):
            series = layers[name]
            data.append(dict(type="scatter", mode="lines", x=series["step"], y=series["value"], name=name,
                             line=dict(color=colour, width=1), legendgroup=f"layer:{name}",
                             hovertemplate=f"{name}: %{{y:.3g}} at step %{{x}}<extra></extra>"))
    axis = dict(gridcolor=PALETTE["grid"], zeroline=False, tickfont=dict(size=10))
    layout = dict(
        template=TEMPLATE.to_plotly_json(), height=260, margin=dict(l=55, r=10, t=30, b=35),
        xaxis=dict(axis, title=dict(text="step", font=dict(size=10))),
        yaxis=dict(axis, rangemode="tozero", title=dict(text="||scale·BA|| / ||W||", font=dict(size=10))),
        legend=dict(orientation="h", x=0, y=1.22, font=dict(size=10)), hovermode="closest",
        uirevision="adapter",
    )
    if not data:
        layout["annotations"] = [dict(
            text="The adapter's update size appears after its first measurement (every adapter_every steps).",
            xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False, font=dict(color=PALETTE["text"], size=12))]
    return {"data": data, "layout": layout}
