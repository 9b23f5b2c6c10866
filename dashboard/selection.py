"""Linked selection: which clips the user picked, how they show in every panel, their details.

A clip is identified by its key (``id``), which is the same in all three spaces, so selecting
points in one panel highlights the same clips in the other two. In the LoRA panel a clip has one
point per (layer, step); its trajectory joins them in step order. In the prompt panel a clip has
one point per prompt text it was trained with; they share its id, so they are selected together.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence

from acestep_viz.dashboard.hover import key_of, point_key
from acestep_viz.dashboard.view import MAX_SELECTED

MAX_TRAJECTORIES = 40  # lines drawn at most: (clip, layer) pairs
MAX_DETAIL_ROWS = 20
DETAIL_PROMPT_CHARS = 160
MAX_DETAIL_PROMPTS = 8  # prompt texts listed per clip
TRAJECTORY_COLOUR = "rgba(229, 231, 235, 0.85)"


def selected_ids(selected_data: Mapping[str, Any] | None, click_data: Mapping[str, Any] | None = None) -> list[str]:
    """Clip keys of a lasso/box selection, or of a clicked point; sorted, without blanks."""
    source = selected_data if selected_data and selected_data.get("points") else click_data
    keys = {key_of(point.get("customdata")) for point in (source or {}).get("points") or []
            if isinstance(point, Mapping) and point.get("customdata") not in (None, "")}
    return sorted(keys)[:MAX_SELECTED]


def selected_indices(ids: Sequence[Any], selected: Iterable[str]) -> list[int]:
    chosen = set(selected)
    return [i for i, key in enumerate(ids) if key is not None and str(key) in chosen]


def highlight(trace: dict, selected: frozenset[str]) -> None:
    """Mark the selected clips in a point trace; the rest fade. No selection: nothing changes."""
    if not selected:
        return
    trace["selectedpoints"] = selected_indices(trace["customdata"], {point_key(key) for key in selected})
    trace["selected"] = {"marker": {"size": 9, "opacity": 1.0}}
    trace["unselected"] = {"marker": {"opacity": 0.15}}


def trajectories(points: Mapping[str, Sequence], selected: frozenset[str], xaxis: str, yaxis: str) -> list[dict]:
    """One line per selected (clip, layer) through its LoRA points in step order."""
    paths: dict[tuple[str, str], list[tuple[int, float, float]]] = defaultdict(list)
    for key, layer, step, x, y in zip(points["id"], points["layer"], points["step"], points["x"], points["y"]):
        if key is not None and str(key) in selected and x is not None and y is not None:
            paths[(str(key), str(layer or ""))].append((int(step or 0), x, y))
    traces = []
    for (key, layer), path in sorted(paths.items())[:MAX_TRAJECTORIES]:
        if len(path) < 2:
            continue
        path.sort()
        traces.append(dict(
            type="scattergl", mode="lines", xaxis=xaxis, yaxis=yaxis, showlegend=False, hoverinfo="skip",
            x=[p[1] for p in path], y=[p[2] for p in path], meta="trajectory",
            line=dict(width=1.5, color=TRAJECTORY_COLOUR), name=f"{key} {layer}".strip(),
        ))
    return traces


def details(spaces: Mapping[str, Mapping[str, Sequence]], selected: Iterable[str]) -> list[dict]:
    """One row per selected clip: key, its prompt texts, training steps seen, newest and mean loss, layers,
    and the audio path its trainer reported (None if none did).

    ``spaces`` maps a space name to its point columns (see figures.space_points).
    """
    wanted = sorted(selected)[:MAX_DETAIL_ROWS]
    found = {space: _indices_by_key(points["id"], wanted) for space, points in spaces.items()}
    return [_detail_row(key, spaces, {space: by_key[key] for space, by_key in found.items() if key in by_key})
            for key in wanted]


def _indices_by_key(ids: Sequence[Any], wanted: list[str]) -> dict[str, list[int]]:
    """{key: its point indices} for the wanted keys present, in one pass over ``ids``."""
    chosen, out = set(wanted), defaultdict(list)
    for i in selected_indices(ids, chosen):
        out[str(ids[i])].append(i)
    return out


def _detail_row(key: str, spaces: Mapping[str, Mapping[str, Sequence]], hits: Mapping[str, list[int]]) -> dict:
    """``hits``: {space: indices of the clip's points}, only spaces where it has some, in ``spaces`` order."""
    prompts, steps, losses, layers, audio = {}, set(), [], set(), None
    for space, indices in hits.items():
        points = spaces[space]
        reported = points.get("audio") or ()
        for i in indices:
            if audio is None and i < len(reported) and reported[i]:
                audio = str(reported[i])
            if points["prompt"][i]:
                prompts.setdefault(" ".join(str(points["prompt"][i]).split()), None)
            if points["step"][i] is not None:
                steps.add(int(points["step"][i]))
            if points["loss"][i] is not None:
                losses.append((int(points["step"][i] or 0), float(points["loss"][i])))
            if points["layer"][i] is not None:
                layers.add(str(points["layer"][i]))
    losses.sort()
    return {
        "key": key,
        "prompt": _prompt_list(list(prompts)),
        "steps": _steps_text(steps),
        "loss": f"{losses[-1][1]:.4f} (mean {sum(v for _, v in losses) / len(losses):.4f})" if losses else "–",
        "layers": len(layers),
        "spaces": ", ".join(hits),
        "audio": audio,
    }


def _prompt_list(prompts: list[str]) -> str:
    """A clip's distinct prompt texts: the one text, or "N texts: a | b | ..."."""
    if len(prompts) <= 1:
        return _cut(prompts[0] if prompts else None)
    shown = " | ".join(_cut(p) for p in prompts[:MAX_DETAIL_PROMPTS])
    more = " | …" if len(prompts) > MAX_DETAIL_PROMPTS else ""
    return f"{len(prompts)} texts: {shown}{more}"


def _cut(prompt: Any) -> str:
    text = " ".join(str(prompt or "").split())
    return text if len(text) <= DETAIL_PROMPT_CHARS else text[:DETAIL_PROMPT_CHARS] + "…"


def _steps_text(steps: set[int]) -> str:
    if not steps:
        return "–"
    ordered = sorted(steps)
    if len(ordered) == 1:
        return str(ordered[0])
    return f"{len(ordered)} steps, {ordered[0]}–{ordered[-1]}"
