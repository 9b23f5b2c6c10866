"""Pure figure building: a collector snapshot (a dict) in, a Plotly figure out.

No I/O and no Dash here, so every function can be unit tested with plain dicts.
User text (sample ids, prompts, layer names) is HTML-escaped before it reaches Plotly's
labels (dashboard/hover.py), which interpret a subset of HTML.
"""
from __future__ import annotations

import copy
import itertools
import textwrap
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import plotly.graph_objects as go
from acestep_viz.dashboard.colouring import category_codes, marker
from acestep_viz.dashboard.hover import (  # noqa: F401
    HOVER_FIELDS,
    HOVER_TEMPLATE,
    hover_text,
    hover_texts,
    inert,
    point_keys,
    short_prompt,
)
from acestep_viz.dashboard.model_labels import panel_title, snapshot_model
from acestep_viz.dashboard.selection import highlight, trajectories
from acestep_viz.dashboard.tags import chosen_tag, clip_tags, has_tag, tag_counts
from acestep_viz.dashboard.typed_arrays import typed_array
from acestep_viz.dashboard.view import View
from plotly.subplots import make_subplots

from acestep_viz.wire import SPACES

MIN_POINTS = 3  # the collector draws a map from 3 rows on: PCA below PaCMAP's useful size

PALETTE = {
    "page": "#111827",
    "plot": "#1f2937",
    "text": "#9ca3af",
    "title": "#e5e7eb",
    "grid": "#374151",
    "accent": "#8b5cf6",
    "accent_hover": "#a78bfa",
}

EMPTY_TITLE = "Waiting for training data..."
EMPTY_DETAIL = "Embeddings will appear once training begins and hooks capture data."
INSUFFICIENT = f"Insufficient data (need >= {MIN_POINTS} samples per space)"
WARMING_UP = "PaCMAP is warming up (about 25 s on a fresh machine)..."


@dataclass(frozen=True)
class Panel:
    space: str
    title: str
    colorscale: str


PANELS = (
    Panel("latent", "Latent Space (Audio)", "Viridis"),
    Panel("lora", "LoRA Layer Outputs", "Plasma"),
    Panel("prompt", "Prompt Embeddings", "Cividis"),
)
TITLES = tuple(panel.title for panel in PANELS)

_AXIS = dict(gridcolor=PALETTE["grid"], zerolinecolor=PALETTE["grid"], linecolor=PALETTE["grid"],
             zeroline=True, showline=False, tickfont=dict(color=PALETTE["text"]),
             title=dict(font=dict(color=PALETTE["text"], size=12)))

TEMPLATE = go.layout.Template(layout=dict(
    paper_bgcolor=PALETTE["page"],
    plot_bgcolor=PALETTE["plot"],
    font=dict(color=PALETTE["text"], family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"),
    xaxis=_AXIS,
    yaxis=_AXIS,
    hoverlabel=dict(bgcolor=PALETTE["page"], bordercolor=PALETTE["accent"],
                    font=dict(color=PALETTE["title"], size=12)),
    modebar=dict(bgcolor="rgba(0,0,0,0)", color=PALETTE["text"], activecolor=PALETTE["accent_hover"]),
))


# -- snapshot access ---------------------------------------------------------------------------
def space_points(snapshot: Mapping[str, Any] | None, space: str) -> dict[str, list]:
    """The point columns of one space, with missing or null columns as lists of None."""
    entry = ((snapshot or {}).get("spaces") or {}).get(space) or {}
    raw = entry.get("points") or {}
    xs = list(raw.get("x") or [])
    n = len(xs)
    columns = {"x": xs, "y": list(raw.get("y") or [])[:n]}
    for key in ("id", "step", "loss", "timestep", "layer", "prompt", "audio"):
        values = raw.get(key)
        columns[key] = list(values)[:n] if values is not None else [None] * n
        columns[key] += [None] * (n - len(columns[key]))
    columns["y"] += [None] * (n - len(columns["y"]))
    return columns


def space_counts(snapshot: Mapping[str, Any] | None, space: str) -> dict[str, Any]:
    """{"buffered": n, "projected": n, "method": "pacmap"|"pca"|None} for one space, from "counts" or "spaces"."""
    snapshot = snapshot or {}
    entry = (snapshot.get("counts") or {}).get(space) or (snapshot.get("spaces") or {}).get(space) or {}
    return {"buffered": int(entry.get("buffered") or 0), "projected": int(entry.get("projected") or 0),
            "method": space_method(snapshot, space)}


def space_method(snapshot: Mapping[str, Any] | None, space: str) -> str | None:
    """What drew the space's map: "pacmap", "pca" (too few rows for PaCMAP), or None (no map)."""
    snapshot = snapshot or {}
    for source in ("spaces", "counts"):
        method = ((snapshot.get(source) or {}).get(space) or {}).get("method")
        if method:
            return str(method)
    return None


def method_note(method: str | None, shown: int) -> str | None:
    """What a panel says about a map PaCMAP did not draw, e.g. "PCA (5 points)"."""
    return f"PCA ({shown} point{'s' if shown != 1 else ''})" if method == "pca" and shown else None


def has_any_data(snapshot: Mapping[str, Any] | None) -> bool:
    return any(space_counts(snapshot, s)["buffered"] or space_points(snapshot, s)["x"] for s in SPACES)


def panel_trace(panel: Panel, points: Mapping[str, Sequence], col: int, domain: Sequence[float],
                colour_by: str, tag: str | None = None) -> dict:
    """One Scattergl for one space; customdata holds each point's sample id (escaped, dashboard/hover.py),
    ``points["text"]`` (when given) the rest of its hover label. Coordinates and colours travel as typed
    arrays (dashboard/typed_arrays.py)."""
    colours = marker(colour_by, panel.colorscale, points, domain, inert, tag)
    return dict(
        type="scattergl", xaxis=_axis_name("x", col), yaxis=_axis_name("y", col),
        x=typed_array(points["x"]), y=typed_array(points["y"]), mode="markers", name=panel.title,
        showlegend=False, marker={**colours, "color": typed_array(colours["color"], dtype=None)},
        text=points["text"] if "text" in points else hover_texts(points),
        customdata=point_keys(points["id"]), hovertemplate=HOVER_TEMPLATE, meta=panel.space,
    )


def snapshot_hover(snapshot: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """Every point's hover label, per space: the part of a figure that is the same for every view."""
    return {space: hover_texts(space_points(snapshot, space)) for space in SPACES}


def only_layers(points: dict[str, list], layers: frozenset[str]) -> dict[str, list]:
    """The rows of the chosen LoRA layers; no choice keeps every row."""
    if not layers:
        return points
    keep = [i for i, layer in enumerate(points["layer"]) if layer is not None and str(layer) in layers]
    return {name: [column[i] for i in keep] for name, column in points.items()}


def snapshot_tags(snapshot: Mapping[str, Any] | None) -> list[tuple[str, int]]:
    """The tags of every prompt text in a snapshot, most common first."""
    return tag_counts(itertools.chain.from_iterable(space_points(snapshot, space)["prompt"] for space in SPACES))


def with_tag_flags(points: dict[str, list], space: str, tag: str | None,
                   by_clip: Mapping[str, set[str]]) -> dict[str, list]:
    """``points`` plus "has_tag": prompt points by their own text, latent and LoRA points by their clip's texts."""
    if tag is None:
        return {**points, "has_tag": [None] * len(points["x"])}
    return {**points, "has_tag": has_tag(points, tag, None if space == "prompt" else by_clip)}


def layer_names(snapshot: Mapping[str, Any] | None) -> list[str]:
    """The LoRA layers present in a snapshot, in natural order."""
    return category_codes(space_points(snapshot, "lora")["layer"])[1]


def _axis_name(letter: str, col: int) -> str:
    return letter if col == 1 else f"{letter}{col}"


# -- annotations -------------------------------------------------------------------------------
def panel_notice(snapshot: Mapping[str, Any] | None, space: str, shown: int) -> str | None:
    """The message shown inside a panel that has too few points, or None."""
    if shown >= MIN_POINTS:
        return None
    buffered = space_counts(snapshot, space)["buffered"]
    if buffered >= MIN_POINTS:
        if (snapshot or {}).get("warming_up"):
            return WARMING_UP
        return f"Projecting {buffered} samples..."
    return INSUFFICIENT


def _panel_annotation(text: str, col: int) -> dict:
    return dict(text=text, xref=f"{_axis_name('x', col)} domain", yref=f"{_axis_name('y', col)} domain",
                x=0.5, y=0.5,
                showarrow=False, font=dict(size=12, color=PALETTE["text"]),
                bgcolor=PALETTE["page"], bordercolor=PALETTE["grid"], borderpad=6)


def _empty_annotation() -> dict:
    detail = "<br>".join(textwrap.wrap(EMPTY_DETAIL, 42))
    return dict(text=f"<b>{EMPTY_TITLE}</b><br>{detail}", xref="paper", yref="paper",
                x=0.5, y=0.5, showarrow=False, font=dict(size=15, color=PALETTE["title"]),
                bgcolor=PALETTE["page"], bordercolor=PALETTE["accent"], borderpad=12)


# -- the figure ----------------------------------------------------------------------------------
# Figures are plain dicts in Plotly's JSON schema: dcc.Graph takes them as they are, and building
# them skips plotly.graph_objects' per-element validation (about 10x faster at 3 x 1000 points).
# ``go.Figure(build_figure(...))`` validates one when needed (the tests do).

def _base_layout() -> dict:
    fig = make_subplots(rows=1, cols=3, subplot_titles=TITLES, horizontal_spacing=0.06)
    fig.update_layout(template=TEMPLATE, height=540, margin=dict(l=50, r=20, t=50, b=120),
                      hovermode="closest", dragmode="zoom", showlegend=False)
    fig.update_xaxes(title_text="PaCMAP-1")
    fig.update_yaxes(title_text="PaCMAP-2")
    fig.update_annotations(font=dict(color=PALETTE["title"], size=15))
    return fig.to_plotly_json()["layout"]


_BASE_LAYOUT = _base_layout()
_DOMAINS = tuple(tuple(_BASE_LAYOUT[_axis_name("xaxis", col)]["domain"]) for col in (1, 2, 3))


def base_figure() -> dict:
    """Three empty subplots with titles, axes and the dark palette."""
    return {"data": [], "layout": copy.deepcopy(_BASE_LAYOUT)}


def build_figure(snapshot: Mapping[str, Any] | None, view: View | None = None,
                 hover: Mapping[str, Sequence[str]] | None = None, joint: Mapping[str, Any] | None = None,
                 pair: tuple[str, str] | None = None) -> dict:
    """The three panels for a snapshot reply (``"changed": true``) or None (empty state).

    ``hover``: each space's hover labels, one per point of the snapshot (see snapshot_hover), when
    already built; otherwise they are built here. With a ``compare`` reply ``joint`` of ``pair`` (shown
    run, compared run), the LoRA panel shows that joint map.
    """
    view = view or View()
    fig = base_figure()
    layout = fig["layout"]
    waiting = not has_any_data(snapshot)
    trajectory_traces = []
    spaces = {space: space_points(snapshot, space) for space in SPACES}
    tagging = any(view.colour_for(space) == "tag" for space in SPACES)
    tag = chosen_tag(snapshot_tags(snapshot), view.tag) if tagging else None
    by_clip = clip_tags(spaces) if tagging else {}
    for col, panel in enumerate(PANELS, start=1):
        points = spaces[panel.space]
        points = {**points, "text": hover[panel.space] if hover else hover_texts(points)}
        if panel.space == "lora":
            points = only_layers(points, view.layers)
        if view.colour_for(panel.space) == "tag":
            points = with_tag_flags(points, panel.space, tag, by_clip)
        trace = panel_trace(panel, points, col, _DOMAINS[col - 1], view.colour_for(panel.space), tag)
        _note_method(layout, col, space_method(snapshot, panel.space), len(points["x"]))
        highlight(trace, view.selected)
        fig["data"].append(trace)
        if panel.space == "lora" and view.selected and view.trajectories:
            trajectory_traces = trajectories(points, view.selected, trace["xaxis"], trace["yaxis"])
        notice = None if waiting else panel_notice(snapshot, panel.space, len(points["x"]))
        if notice:
            layout["annotations"].append(_panel_annotation(notice, col))
    fig["data"].extend(trajectory_traces)  # after the three point traces: trace i is panel i
    if waiting:
        layout["annotations"].append(_empty_annotation())
        for col in (1, 2, 3):  # the default ranges mean nothing yet
            layout[_axis_name("xaxis", col)]["showticklabels"] = False
            layout[_axis_name("yaxis", col)]["showticklabels"] = False
    model = snapshot_model(snapshot)
    if model is not None:
        layout["annotations"][SPACES.index("prompt")]["text"] = panel_title("prompt", model)  # subplot titles first
    run = (snapshot or {}).get("run")
    layout["uirevision"] = f"run:{run}"  # zoom and pan survive updates until the run changes
    layout["meta"] = {"run": run, "version": (snapshot or {}).get("version")}
    if joint is not None and pair is not None:
        from acestep_viz.dashboard.compare import show_joint_lora  # it builds on this module's traces

        show_joint_lora(fig, joint, pair, view)
    return fig


def _note_method(layout: dict, col: int, method: str | None, shown: int) -> None:
    """A panel drawn by PCA says so in its title, and its axes are principal components."""
    note = method_note(method, shown)
    if note is None:
        return
    title = layout["annotations"][col - 1]
    title["text"] = f"{title['text']} · {note}"
    layout[_axis_name("xaxis", col)]["title"]["text"] = "PC-1"
    layout[_axis_name("yaxis", col)]["title"]["text"] = "PC-2"


def empty_figure() -> dict:
    return build_figure(None)
