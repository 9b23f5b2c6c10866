"""Comparing two runs in the LoRA panel: the joint map coloured by run, the same clips linked.

The collector fits both runs' LoRA rows in one map (the ``compare`` query op); only there are
distances between the runs meaningful, since each run's own map has axes of its own. Here are
the pure parts: the compare picker's options, which pair is compared, and the LoRA panel's
traces (one per run, named by run in the legend, plus faint links joining each (clip, layer)'s
newest point in one run to its newest point in the other). Selecting a clip highlights it in both
runs, since both traces carry the clip id. No I/O and no Dash.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from acestep_viz.dashboard.figures import PANELS, hover_texts, inert, only_layers, space_points
from acestep_viz.dashboard.hover import HOVER_TEMPLATE, point_keys
from acestep_viz.dashboard.selection import highlight, trajectories

RUN_COLOURS = ("#a78bfa", "#f59e0b")  # the shown run, the compared run
LINK_COLOUR = "rgba(229, 231, 235, 0.18)"
SELECTED_LINK_COLOUR = "rgba(229, 231, 235, 0.8)"
MAX_LINKS = 600  # (clip, layer) pairs joined at most: more lines only grey the panel out
LORA_COL = 1 + [p.space for p in PANELS].index("lora")
NO_COMPARE_OPTION = {"label": "No comparison", "value": ""}


def compare_options(run_options: Sequence[Mapping[str, Any]] | None) -> list[dict]:
    """The "Compare with" picker's choices: every run the run picker lists (not "Latest run"), and off."""
    runs = [dict(label=o["label"], value=o["value"]) for o in run_options or () if o.get("value")]
    return [dict(NO_COMPARE_OPTION), *runs]


def compared_pair(shown_run: str | None, compare_run: str | None) -> tuple[str, str] | None:
    """(shown run, compared run), or None when there is nothing to compare (off, or the same run)."""
    if not shown_run or not compare_run or shown_run == compare_run:
        return None
    return shown_run, compare_run


def joint_points(reply: Mapping[str, Any] | None) -> dict[str, list]:
    """The joint map's point columns (as figures.space_points), plus each point's ``run``."""
    points = space_points({"spaces": {"lora": reply or {}}}, "lora")
    runs = list(((reply or {}).get("points") or {}).get("run") or [])[:len(points["x"])]
    return {**points, "run": runs + [None] * (len(points["x"]) - len(runs))}


def rows_of_run(points: Mapping[str, list], run: str) -> dict[str, list]:
    keep = [i for i, r in enumerate(points["run"]) if r == run]
    return {name: [column[i] for i in keep] for name, column in points.items()}


def link_pairs(first: Mapping[str, Sequence], second: Mapping[str, Sequence],
               only: frozenset[str] = frozenset()) -> list[tuple[int, int]]:
    """(row in ``first``, row in ``second``) for each (clip, layer) in both runs: each side's newest step.
    With ``only``, just those clips'."""
    def newest(points) -> dict[tuple[str, str], int]:
        found: dict[tuple[str, str], tuple[int, int]] = {}
        for row, (clip, layer, step) in enumerate(zip(points["id"], points["layer"], points["step"])):
            if clip is None or (only and str(clip) not in only):
                continue
            key, step = (str(clip), str(layer or "")), int(step if step is not None else -1)
            if key not in found or step >= found[key][0]:
                found[key] = (step, row)
        return {key: row for key, (_, row) in found.items()}

    a, b = newest(first), newest(second)
    return [(a[key], b[key]) for key in sorted(a.keys() & b.keys())][:MAX_LINKS]


def link_trace(first: Mapping[str, Sequence], second: Mapping[str, Sequence], pairs: list[tuple[int, int]],
               xaxis: str, yaxis: str, bright: bool) -> dict:
    """One line trace of segments (None between them) joining each linked pair."""
    xs, ys = [], []
    for i, j in pairs:
        xs += [first["x"][i], second["x"][j], None]
        ys += [first["y"][i], second["y"][j], None]
    return dict(type="scattergl", mode="lines", xaxis=xaxis, yaxis=yaxis, x=xs, y=ys, hoverinfo="skip",
                showlegend=False, name="same clip", meta="compare-link",
                line=dict(width=1.2 if bright else 0.8, color=SELECTED_LINK_COLOUR if bright else LINK_COLOUR))


def run_trace(points: Mapping[str, Sequence], run: str, colour: str, xaxis: str, yaxis: str) -> dict:
    """One run's points of the joint map, in one colour, named by the run in the legend."""
    label = inert(run)
    return dict(type="scattergl", mode="markers", xaxis=xaxis, yaxis=yaxis, x=points["x"], y=points["y"],
                name=label, legendgroup=label, showlegend=True, meta="lora",
                marker=dict(size=5, color=colour, opacity=0.85),
                text=[f"Run: {label}<br>{text}" for text in hover_texts(points)],
                customdata=point_keys(points["id"]), hovertemplate=HOVER_TEMPLATE)


def joint_lora_traces(reply: Mapping[str, Any], pair: tuple[str, str], view, xaxis: str = f"x{LORA_COL}",
                      yaxis: str = f"y{LORA_COL}") -> list[dict]:
    """The LoRA panel when comparing: the shown run's trace, the compared run's, the links, the trajectories."""
    points = only_layers(joint_points(reply), view.layers)
    sides = [rows_of_run(points, run) for run in pair]
    traces = [run_trace(side, run, colour, xaxis, yaxis) for side, run, colour in zip(sides, pair, RUN_COLOURS)]
    for trace in traces:
        highlight(trace, view.selected)
    links = link_pairs(*sides, only=view.selected)
    if links:
        traces.append(link_trace(*sides, links, xaxis, yaxis, bright=bool(view.selected)))
    if view.selected and view.trajectories:
        for side in sides:
            traces += trajectories(side, view.selected, xaxis, yaxis)
    return traces


def joint_title(reply: Mapping[str, Any], pair: tuple[str, str]) -> str:
    counts = (reply or {}).get("counts") or {}
    state = "" if (reply or {}).get("current") else " (updating)"
    shown = " vs ".join(f"{inert(run)} ({counts.get(run, 0)})" for run in pair)
    return f"LoRA joint map: {shown}{state}"


def show_joint_lora(fig: dict, reply: Mapping[str, Any] | None, pair: tuple[str, str], view) -> dict:
    """Turn a built figure's LoRA panel into the joint map of ``pair`` (in place; returns ``fig``).

    The shown run's joint trace takes the LoRA panel trace's place (trace i stays panel i); the
    compared run, the links and the trajectories follow. The run's own-map trajectories go: they
    are in the other map's coordinates.
    """
    if not reply or not (reply.get("points") or {}).get("x"):
        return fig
    xaxis, yaxis = fig["data"][LORA_COL - 1]["xaxis"], fig["data"][LORA_COL - 1]["yaxis"]
    lora = joint_lora_traces(reply, pair, view, xaxis, yaxis)
    rest = [t for t in fig["data"][3:] if t.get("meta") != "trajectory"]
    fig["data"] = [*fig["data"][:LORA_COL - 1], lora[0], *fig["data"][LORA_COL:3], *rest, *lora[1:]]
    layout = fig["layout"]
    layout["annotations"][LORA_COL - 1]["text"] = joint_title(reply, pair)
    names = ("PC-1", "PC-2") if reply.get("method") == "pca" else ("PaCMAP-1", "PaCMAP-2")
    for axis, name in zip((xaxis, yaxis), names):
        layout[f"{axis[0]}axis{axis[1:]}"]["title"]["text"] = name
    layout["annotations"] = [a for a in layout["annotations"][:3]] + [
        a for a in layout["annotations"][3:] if a.get("xref") != f"{xaxis} domain"]  # the own map's notice
    layout["showlegend"] = True
    layout["legend"] = dict(orientation="h", x=0.5, xanchor="center", y=-0.18, font=dict(size=11),
                            title=dict(text="LoRA runs: "))
    layout["meta"] = {**(layout.get("meta") or {}), "compare": list(pair), "compare_version": reply.get("version")}
    return fig
