"""What the user chose to see: colour per panel, LoRA layers, selected clips, trajectories.

A plain value built from the control values, so figure building stays a pure function of
(snapshot, view) and the tests can build views without a browser.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

COLOUR_CHOICES = {  # value -> label, in the order the selects offer them
    "step": "Step",
    "loss": "Loss",
    "timestep": "Timestep",
    "layer": "Layer",
    "tag": "Prompt tag",
    "clip": "Clip",
}
CONTINUOUS = frozenset({"step", "loss", "timestep"})
DEFAULT_COLOUR_BY = {"latent": "step", "lora": "layer", "prompt": "step"}
MAX_SELECTED = 500  # a lasso over a dense map stays usable


@dataclass(frozen=True)
class View:
    colour_by: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_COLOUR_BY))
    layers: frozenset[str] = frozenset()  # empty: every layer
    selected: frozenset[str] = frozenset()
    trajectories: bool = True
    tag: str | None = None  # the tag "Prompt tag" colours by; None: the most common one

    def colour_for(self, space: str) -> str:
        choice = self.colour_by.get(space)
        return choice if choice in COLOUR_CHOICES else DEFAULT_COLOUR_BY[space]


def view_from_controls(colours: Iterable[Any], layers: Iterable[Any] | None, selected: Iterable[Any] | None,
                       trajectories: Any, tag: Any = None) -> View:
    """A View from raw control values (None where a control has no value yet)."""
    spaces = tuple(DEFAULT_COLOUR_BY)
    colour_by = {space: (value if value in COLOUR_CHOICES else DEFAULT_COLOUR_BY[space])
                 for space, value in zip(spaces, colours)}
    return View(colour_by=colour_by,
                layers=frozenset(str(layer) for layer in layers or ()),
                selected=frozenset(list(str(s) for s in selected or ())[:MAX_SELECTED]),
                trajectories=bool(trajectories), tag=str(tag) if tag else None)
