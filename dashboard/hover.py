"""Hover labels: one line per field a point has, user text escaped, built once per point.

A label is the sample id in bold, then the other fields: ``HOVER_TEMPLATE`` puts the id, which each
point carries anyway as its ``customdata`` (for selection), in front of its ``text`` (the other
lines), so the id is not sent twice, and its markup only once per trace: Dash escapes every "<", ">"
and "/" of a reply as six characters. User text (sample ids, prompts, layer names) is HTML-escaped:
Plotly's labels interpret a subset of HTML, so ``customdata`` holds the escaped id (``point_key``)
and selection reads it back with ``key_of``.

A new snapshot of a run holds mostly the same rows as the one before, in the same
order: a buffer drops its oldest rows from the front and appends new ones at the end, and a refit
moves points without touching their fields. ``HoverTexts`` takes over the labels of the rows two
snapshots share (found by comparing whole columns, which Python does in C) and builds only the
others.
"""
from __future__ import annotations

import html
import threading
from typing import Any, Mapping, Sequence

PROMPT_CHARS = 60
HOVER_FIELDS = ("id", "step", "loss", "timestep", "layer", "prompt")  # the columns a hover label shows


HOVER_TEMPLATE = "<b>%{customdata}</b><br>%{text}<extra></extra>"


def inert(value: Any) -> str:
    """User text made safe for Plotly's HTML-like labels: <, > and & are escaped."""
    return html.escape(str(value), quote=False)


def point_key(sample_id: Any) -> str:
    """A point's ``customdata``: its sample id, escaped for the label ("" for none)."""
    return "" if sample_id is None else inert(sample_id)


def point_keys(ids: Sequence[Any]) -> list[str]:
    """``point_key`` of each id; each distinct id is escaped once."""
    key = {i: point_key(i) for i in set(ids)}
    return list(map(key.__getitem__, ids))


def key_of(customdata: Any) -> str:
    """The sample id a point's ``customdata`` stands for (``point_key`` undone)."""
    return html.unescape(str(customdata))


def short_prompt(prompt: str) -> str:
    prompt = " ".join(str(prompt).split())
    return prompt if len(prompt) <= PROMPT_CHARS else prompt[:PROMPT_CHARS] + "…"


def hover_text(sample_id: Any, step: Any, loss: Any, timestep: Any, layer: Any, prompt: Any) -> str:
    """One point's hover ``text``: the label's lines after the id; fields that do not apply are left out."""
    return _hover_text(sample_id, step, loss, timestep, layer, prompt, _Escaped())



class _Escaped(dict):
    """Escaped user text, memoised: one map repeats each prompt and layer name many times."""

    def __missing__(self, key: tuple[str, Any]) -> str:
        kind, value = key
        text = inert(short_prompt(value) if kind == "prompt" else value)
        self[key] = text
        return text


def _hover_text(sample_id, step, loss, timestep, layer, prompt, escaped: _Escaped) -> str:
    lines = []  # the id is not among them: HOVER_TEMPLATE shows it
    if step is not None:
        lines.append(f"Step: {int(step)}")
    if loss is not None:
        lines.append(f"Loss: {float(loss):.4f}")
    if timestep is not None:
        lines.append(f"Timestep: {float(timestep):.0f}")
    if layer is not None:
        lines.append(f"Layer: {escaped['layer', layer]}")
    if prompt:
        lines.append(f"Prompt: {escaped['prompt', prompt]}")
    return "<br>".join(lines)


def hover_texts(points: Mapping[str, Sequence]) -> list[str]:
    """The hover label of every point of one space's columns (see figures.space_points)."""
    escaped = _Escaped()
    return [_hover_text(*row, escaped) for row in zip(*(points[field] for field in HOVER_FIELDS))]


MAX_SHIFT_TRIES = 8  # positions of the old rows tried as the start of the new ones
MAX_KEPT = 9  # (run, space) label lists kept: three runs' worth


class HoverTexts:
    """The last labels built per (run, space), and the rows they belong to."""

    def __init__(self):
        self._last: dict[tuple, tuple[tuple[list, ...], list[str]]] = {}
        self._lock = threading.Lock()

    def texts(self, run: str | None, space: str, points: Mapping[str, Sequence]) -> list[str]:
        """``points``' hover labels (as hover_texts), reusing those of the rows seen last time."""
        columns = tuple(list(points[field]) for field in HOVER_FIELDS)
        with self._lock:
            last = self._last.get((run, space))
        texts = _reused(last, columns) if last else None
        if texts is None:
            texts = hover_texts(dict(zip(HOVER_FIELDS, columns)))
        with self._lock:
            self._last.pop((run, space), None)
            self._last[(run, space)] = (columns, texts)
            while len(self._last) > MAX_KEPT:
                del self._last[next(iter(self._last))]
        return texts

    def clear(self) -> None:
        with self._lock:
            self._last.clear()


def _reused(last: tuple[tuple[list, ...], list[str]], columns: tuple[list, ...]) -> list[str] | None:
    """The labels for ``columns`` when they start with a run of the last rows (after some dropped ones);
    the rows past that run get new labels. None when no such run is found."""
    old_columns, old_texts = last
    old_ids, new_ids = old_columns[0], columns[0]
    n_old, n_new = len(old_ids), len(new_ids)
    if not n_new or not n_old:
        return None
    start, tries = -1, 0
    while tries < MAX_SHIFT_TRIES:
        try:
            start = old_ids.index(new_ids[0], start + 1)
        except ValueError:
            return None
        tries += 1
        shared = min(n_old - start, n_new)
        if all(old[start:start + shared] == new[:shared] for old, new in zip(old_columns, columns)):
            tail = {field: column[shared:] for field, column in zip(HOVER_FIELDS, columns)}
            return old_texts[start:start + shared] + hover_texts(tail)
    return None
