"""Health charts against training step: is the adapter learning, is a space collapsing.

Three small charts from the collector's per-frame figures (collector/health.py), computed in the
original space, not on the 2-D map: effective rank per space, linear CKA of the LoRA outputs against
the first frame, and the silhouette of a prompt tag. Each figure is built from ``{run: history store}``
(dashboard/scrubber.py): the shown run draws solid lines, any other run (a "compare with" run) dashed.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from acestep_viz.dashboard.figures import PALETTE, SPACES, TEMPLATE
from acestep_viz.dashboard.quality_chart import SERIES_COLOURS, SPACE_LABELS

TAG_COLOURS = ("#34d399", "#f472b6", "#60a5fa")
TOP_TAGS = 8  # how many tags the collector scores per frame (collector/health.py: TOP_TAGS)
MAX_TOP_TAGS = len(TAG_COLOURS)
EMPTY_TEXT = "Health figures appear with the first projections."
DOMAINS = ((0.0, 0.28), (0.36, 0.64), (0.72, 1.0))
AXIS_TITLES = ("effective rank", "CKA to first (LoRA)", "tag silhouette")


def series(quality: Mapping[str, Any], field: str, tag: str | None = None) -> tuple[list, list]:
    """(steps, values) of one per-frame figure, frames without it left out; ``tag`` picks one entry of a
    per-tag figure such as ``tag_silhouette``."""
    pairs = []
    for step, value in zip(quality.get("step") or [], quality.get(field) or []):
        if tag is not None:
            value = value.get(tag) if isinstance(value, Mapping) else None
        if value is not None:
            pairs.append((step, value))
    return [s for s, _ in pairs], [v for _, v in pairs]


def top_tags(store: Mapping[str, Any] | None, space: str = "prompt", limit: int = MAX_TOP_TAGS) -> list[str]:
    """The tags scored in most frames of ``space``; among equals, the order of the newest frame (most
    common tag first)."""
    frames = [f for f in (((store or {}).get("quality") or {}).get(space) or {}).get("tag_silhouette") or []
              if isinstance(f, Mapping)]
    newest = list(frames[-1]) if frames else []
    counts: dict[str, int] = {}
    for frame in frames:
        for tag in frame:
            counts[tag] = counts.get(tag, 0) + 1
    order = {tag: i for i, tag in enumerate(newest)}
    return sorted(counts, key=lambda t: (-counts[t], order.get(t, len(order)), t))[:limit]


def tag_space(store: Mapping[str, Any] | None) -> str | None:
    """The space whose tag scores the top-tags chart follows: prompt, else the first with any."""
    quality = (store or {}).get("quality") or {}
    with_tags = [s for s in ("prompt", *SPACES) if any((quality.get(s) or {}).get("tag_silhouette") or [])]
    return with_tags[0] if with_tags else None


def _line(steps: list, values: list, name: str, colour: str, axis: int, dashed: bool, group: str) -> dict:
    suffix = "" if axis == 1 else str(axis)
    return dict(type="scatter", mode="lines+markers", x=steps, y=values, name=name, legendgroup=group,
                line=dict(color=colour, width=1.5, dash="dash" if dashed else "solid"), marker=dict(size=4),
                xaxis=f"x{suffix}", yaxis=f"y{suffix}", meta=group,
                hovertemplate=f"{name}: %{{y:.3f}} at step %{{x}}<extra></extra>")


def _run_label(run: str, dashed: bool) -> str:
    return f" ({run})" if dashed else ""


def rank_traces(stores: Mapping[str, Mapping[str, Any]], shown: str | None) -> list[dict]:
    data = []
    for run, store in stores.items():
        dashed = run != shown
        for space in SPACES:
            steps, values = series(((store or {}).get("quality") or {}).get(space) or {}, "effective_rank")
            if steps:
                data.append(_line(steps, values, SPACE_LABELS[space] + _run_label(run, dashed),
                                  SERIES_COLOURS[space], 1, dashed, f"rank:{space}"))
    return data


def cka_traces(stores: Mapping[str, Mapping[str, Any]], shown: str | None) -> list[dict]:
    data = []
    for run, store in stores.items():
        dashed = run != shown
        steps, values = series(((store or {}).get("quality") or {}).get("lora") or {}, "cka_to_first")
        if steps:
            data.append(_line(steps, values, "CKA" + _run_label(run, dashed), SERIES_COLOURS["lora"], 2, dashed,
                              "cka"))
    return data


def silhouette_traces(stores: Mapping[str, Mapping[str, Any]], shown: str | None, tag: str | None) -> list[dict]:
    """The picked tag in every space that scores it; without a pick, the shown run's top tags in one space."""
    data = []
    reference = stores.get(shown) if shown in stores else next(iter(stores.values()), None)
    space = tag_space(reference)
    tags = [tag.lower()] if tag else top_tags(reference, space) if space else []
    for run, store in stores.items():
        dashed = run != shown
        quality = (store or {}).get("quality") or {}
        if tag:
            for each in SPACES:
                steps, values = series(quality.get(each) or {}, "tag_silhouette", tags[0])
                if steps:
                    data.append(_line(steps, values, f"{tags[0]} · {SPACE_LABELS[each]}" + _run_label(run, dashed),
                                      SERIES_COLOURS[each], 3, dashed, f"tag:{each}"))
            continue
        for colour, each in zip(TAG_COLOURS, tags):
            steps, values = series(quality.get(space) or {}, "tag_silhouette", each)
            if steps:
                data.append(_line(steps, values, each + _run_label(run, dashed), colour, 3, dashed, f"tag:{each}"))
    return data


def silhouette_title(stores: Mapping[str, Mapping[str, Any]], shown: str | None, tag: str | None) -> str:
    """The tag chart's axis title: which space the top tags come from (a picked tag: every space)."""
    space = None if tag else tag_space(stores.get(shown) if shown in stores else next(iter(stores.values()), None))
    return f"tag silhouette ({SPACE_LABELS[space]})" if space else AXIS_TITLES[2]


def health_figure(stores: Mapping[str, Mapping[str, Any]] | None, shown: str | None = None,
                  tag: str | None = None) -> dict:
    """Three side-by-side charts against step: effective rank per space, CKA to the first LoRA frame,
    tag silhouette. ``stores``: {run: history store}; ``shown``: the run drawn solid (others dashed)."""
    stores = stores or {}
    data = rank_traces(stores, shown) + cka_traces(stores, shown) + silhouette_traces(stores, shown, tag)
    axis = dict(gridcolor=PALETTE["grid"], zeroline=False, tickfont=dict(size=10))
    layout: dict = dict(template=TEMPLATE.to_plotly_json(), height=240, margin=dict(l=45, r=10, t=10, b=35),
                        showlegend=True, legend=dict(orientation="h", x=0, y=-0.25, font=dict(size=10)),
                        uirevision="health")
    ranges = (dict(rangemode="tozero"), dict(range=[0, 1.02]), dict(range=[-1.02, 1.02]))
    titles = AXIS_TITLES[:2] + (silhouette_title(stores, shown, tag),)
    for i, (domain, title, extra) in enumerate(zip(DOMAINS, titles, ranges), start=1):
        suffix = "" if i == 1 else str(i)
        layout[f"xaxis{suffix}"] = dict(axis, domain=list(domain), anchor=f"y{suffix}",
                                        title=dict(text="step", font=dict(size=10)))
        layout[f"yaxis{suffix}"] = dict(axis, anchor=f"x{suffix}", title=dict(text=title, font=dict(size=10)),
                                        **extra)
    if not data:
        layout["annotations"] = [dict(text=EMPTY_TEXT, xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False,
                                      font=dict(color=PALETTE["text"], size=12))]
    elif tag and not any(t["xaxis"] == "x3" for t in data):
        layout["annotations"] = [dict(text=unscored_text(tag), xref="x3 domain", yref="y3 domain", x=0.5, y=0.5,
                                      showarrow=False, font=dict(color=PALETTE["text"], size=10))]
    return {"data": data, "layout": layout}


def unscored_text(tag: str) -> str:
    """Why a picked tag draws no line: the collector scores only each frame's most common tags."""
    return f"\u201c{tag.lower()}\u201d is not among the<br>{TOP_TAGS} most common tags scored per frame"


def stores_for(shown_store: Mapping[str, Any] | None, compared: Sequence[tuple[str, Mapping[str, Any]]]) -> dict:
    """{run: history store} with the shown run first."""
    run = (shown_store or {}).get("run") or ""
    stores = {run: shown_store or {}}
    stores.update({name: store for name, store in compared if name != run})
    return stores
