"""The step scrubber: one position per training step that has a map in any space, then "Live".

The collector keeps a history of projection frames per space, each tagged with the newest
training step among its rows. Scrubbing to a step shows, in every panel, the newest frame of
that space made at or before the step, so the three panels stay in sync.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from acestep_viz.dashboard.figures import SPACES

MAX_MARKS = 8
QUALITY_FIELDS = ("neighbour_overlap", "lora_drift", "effective_rank")  # effective_rank: the alerts' collapse rule


def history_store(run: str | None, summaries: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict:
    """Browser-side memory of the frame history: versions and steps per space, quality per frame."""
    frames, quality, steps = {}, {}, set()
    for space in SPACES:
        rows = sorted(summaries.get(space) or [], key=lambda f: f.get("version") or 0)
        frames[space] = [[int(f["version"]), int(f.get("step", -1))] for f in rows if f.get("version") is not None]
        steps.update(step for _, step in frames[space] if step >= 0)
        quality[space] = {"step": [int(f.get("step", -1)) for f in rows],
                          **{name: [f.get(name) for f in rows] for name in QUALITY_FIELDS}}
    return {"run": run, "steps": sorted(steps), "frames": frames, "quality": quality}


def live_position(store: Mapping[str, Any] | None) -> int:
    """The slider position meaning "Live": one past the last step."""
    return len((store or {}).get("steps") or [])


def is_live(store: Mapping[str, Any] | None, position: Any) -> bool:
    return position is None or not isinstance(position, int) or position >= live_position(store)


def step_at(store: Mapping[str, Any] | None, position: int) -> int | None:
    steps = (store or {}).get("steps") or []
    return steps[position] if 0 <= position < len(steps) else None


def versions_at(store: Mapping[str, Any] | None, position: int) -> dict[str, int | None]:
    """For each space, the newest frame made at or before the step at ``position`` (None: none yet)."""
    step = step_at(store, position)
    chosen = {}
    for space in SPACES:
        frames = ((store or {}).get("frames") or {}).get(space) or []
        older = [version for version, frame_step in frames if step is not None and frame_step <= step]
        chosen[space] = max(older) if older else None
    return chosen


def position_of_step(store: Mapping[str, Any] | None, step: int | None) -> int:
    """The position showing ``step`` in a (possibly newer) history: the newest step at or before it,
    the oldest kept one if it aged out, Live for None."""
    steps = (store or {}).get("steps") or []
    if step is None:
        return len(steps)
    earlier = [i for i, s in enumerate(steps) if s <= step]
    return earlier[-1] if earlier else 0


def marks(store: Mapping[str, Any] | None) -> dict[int, str]:
    """Up to MAX_MARKS step labels spread over the slider, plus "Live" at its end."""
    steps = (store or {}).get("steps") or []
    every = max(1, -(-len(steps) // MAX_MARKS))
    labelled = {i: str(step) for i, step in enumerate(steps) if i % every == 0}
    labelled[len(steps)] = "Live"
    return labelled


def position_label(store: Mapping[str, Any] | None, position: Any) -> str:
    if is_live(store, position):
        frames = len((store or {}).get("steps") or [])
        return f"Live · {frames} step{'s' if frames != 1 else ''} in the history" if frames else "Live"
    return f"Step {step_at(store, position)} · frame {position + 1} of {live_position(store)}"


def next_position(store: Mapping[str, Any] | None, position: Any) -> int:
    """Where Play goes next: from Live it restarts at the first step."""
    if is_live(store, position):
        return 0
    return min(position + 1, live_position(store))
