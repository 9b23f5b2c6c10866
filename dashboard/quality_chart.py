"""Small line charts of the collector's quality figures over training steps.

Neighbour overlap: the share of each point's nearest neighbours in the original space that
are also its neighbours on the 2-D map (how far the map can be trusted). LoRA drift: how far
the LoRA outputs moved from the first frame, relative to their size (is the adapter learning).
"""
from __future__ import annotations

from typing import Any, Mapping

from acestep_viz.dashboard.figures import PALETTE, TEMPLATE

SERIES_COLOURS = {"latent": "#22d3ee", "lora": "#a78bfa", "prompt": "#fbbf24"}
SPACE_LABELS = {"latent": "latent", "lora": "LoRA", "prompt": "prompt"}


def _series(quality: Mapping[str, Any], field: str) -> tuple[list, list]:
    pairs = [(s, v) for s, v in zip(quality.get("step") or [], quality.get(field) or []) if v is not None]
    return [s for s, _ in pairs], [v for _, v in pairs]


def quality_figure(store: Mapping[str, Any] | None) -> dict:
    """Two side-by-side charts: neighbour overlap per space, and LoRA drift, against step."""
    quality = (store or {}).get("quality") or {}
    data = []
    for space, colour in SERIES_COLOURS.items():
        steps, values = _series(quality.get(space) or {}, "neighbour_overlap")
        if steps:
            data.append(dict(type="scatter", mode="lines+markers", x=steps, y=values, name=SPACE_LABELS[space],
                             line=dict(color=colour, width=1.5), marker=dict(size=4), xaxis="x", yaxis="y",
                             hovertemplate=f"{SPACE_LABELS[space]}: %{{y:.2f}} at step %{{x}}<extra></extra>"))
    steps, values = _series(quality.get("lora") or {}, "lora_drift")
    if steps:
        data.append(dict(type="scatter", mode="lines+markers", x=steps, y=values, name="LoRA drift",
                         line=dict(color=SERIES_COLOURS["lora"], width=1.5, dash="dot"), marker=dict(size=4),
                         xaxis="x2", yaxis="y2", showlegend=False,
                         hovertemplate="drift %{y:.3f} at step %{x}<extra></extra>"))
    axis = dict(gridcolor=PALETTE["grid"], zeroline=False, tickfont=dict(size=10))
    layout = dict(
        template=TEMPLATE.to_plotly_json(), height=220, margin=dict(l=45, r=10, t=30, b=35),
        xaxis=dict(axis, domain=[0, 0.46], title=dict(text="step", font=dict(size=10))),
        yaxis=dict(axis, range=[0, 1.02], title=dict(text="neighbour overlap", font=dict(size=10))),
        xaxis2=dict(axis, domain=[0.56, 1], anchor="y2", title=dict(text="step", font=dict(size=10))),
        yaxis2=dict(axis, anchor="x2", rangemode="tozero", title=dict(text="LoRA drift", font=dict(size=10))),
        legend=dict(orientation="h", x=0, y=1.18, font=dict(size=10)),
        uirevision="quality",
    )
    if not data:
        layout["annotations"] = [dict(text="Quality figures appear with the first projections.", xref="paper",
                                      yref="paper", x=0.5, y=0.5, showarrow=False,
                                      font=dict(color=PALETTE["text"], size=12))]
    return {"data": data, "layout": layout}
