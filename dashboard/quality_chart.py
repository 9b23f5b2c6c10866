"""Small line charts of the collector's quality figures over training steps.

Neighbour overlap: the share of each point's nearest neighbours in the original space that
are also its neighbours on the 2-D map (how far the map can be trusted). LoRA drift: how far
the LoRA outputs moved from the first frame, relative to their size (is the adapter learning).
"""
from __future__ import annotations

from typing import Any, Mapping

from acestep_viz.dashboard.figures import PALETTE, TEMPLATE, inert

SERIES_COLOURS = {"latent": "#22d3ee", "lora": "#a78bfa", "prompt": "#fbbf24"}
SPACE_LABELS = {"latent": "latent", "lora": "LoRA", "prompt": "prompt"}


def _series(quality: Mapping[str, Any], field: str) -> tuple[list, list]:
    pairs = [(s, v) for s, v in zip(quality.get("step") or [], quality.get(field) or []) if v is not None]
    return [s for s, _ in pairs], [v for _, v in pairs]


def quality_figure(store: Mapping[str, Any] | None, compared: Mapping[str, Any] | None = None) -> dict:
    """Two side-by-side charts: neighbour overlap per space, and LoRA drift, against step. With the
    history store of a ``compared`` run, its lines are drawn dashed and every line is named by its run."""
    data = _run_traces(store, None)
    if compared:
        data = _run_traces(store, (store or {}).get("run") or "shown run") + _run_traces(
            compared, compared.get("run") or "compared run", dash="dash")
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
    if compared:  # two runs' legend entries take two rows above the charts
        layout.update(margin=dict(layout["margin"], t=55), legend=dict(layout["legend"], y=1.42))
    if not data:
        layout["annotations"] = [dict(text="Quality figures appear with the first projections.", xref="paper",
                                      yref="paper", x=0.5, y=0.5, showarrow=False,
                                      font=dict(color=PALETTE["text"], size=12))]
    return {"data": data, "layout": layout}


def _run_traces(store: Mapping[str, Any] | None, run: str | None, dash: str | None = None) -> list[dict]:
    """One run's lines; ``run`` names them (None: a single run, named by space only)."""
    quality = (store or {}).get("quality") or {}
    suffix = f" · {inert(run)}" if run else ""
    data = []
    for space, colour in SERIES_COLOURS.items():
        steps, values = _series(quality.get(space) or {}, "neighbour_overlap")
        if steps:
            name = SPACE_LABELS[space] + suffix
            data.append(dict(type="scatter", mode="lines+markers", x=steps, y=values, name=name,
                             line=dict(color=colour, width=1.5, **({"dash": dash} if dash else {})),
                             marker=dict(size=4), xaxis="x",
                             yaxis="y", hovertemplate=f"{name}: %{{y:.2f}} at step %{{x}}<extra></extra>"))
    steps, values = _series(quality.get("lora") or {}, "lora_drift")
    if steps:
        data.append(dict(type="scatter", mode="lines+markers", x=steps, y=values, name="LoRA drift" + suffix,
                         line=dict(color=SERIES_COLOURS["lora"], width=1.5, dash=dash or "dot"), marker=dict(size=4),
                         xaxis="x2", yaxis="y2", showlegend=False,
                         hovertemplate=f"drift{suffix} %{{y:.3f}} at step %{{x}}<extra></extra>"))
    return data
