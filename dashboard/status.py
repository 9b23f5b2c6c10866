"""Pure view state: what the status badge and the stat boxes say, from collector replies.

The status lives in the browser (a ``dcc.Store``) as ``{"state": str, "detail": str}``;
these functions compute the next one and how to show it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from acestep_viz.dashboard.figures import SPACES, has_any_data, space_counts

WARMING, WAITING, LIVE, PAUSED, CLEARED, OFFLINE, ERROR = (
    "warming", "waiting", "live", "paused", "cleared", "offline", "error")


@dataclass(frozen=True)
class Badge:
    label: str
    color: str  # a Bootstrap contextual colour
    title: str  # the tooltip


BADGES = {
    WARMING: Badge("Warming up", "warning",
                   "The collector is compiling PaCMAP's kernels: about 25 s on a fresh machine, "
                   "2-4 s once the numba disk cache is warm. Data is already being received."),
    WAITING: Badge("Waiting for data", "secondary",
                   "Connected to the collector, but no embeddings have arrived yet. "
                   "Start training with the trainer plugin attached."),
    LIVE: Badge("Live", "success", "Receiving embeddings; the panels update automatically."),
    PAUSED: Badge("Paused", "info", "Auto-update is paused: press Resume Auto-Update."),
    CLEARED: Badge("Cleared", "secondary", "All data was cleared; new embeddings will appear as training goes on."),
    OFFLINE: Badge("Collector offline", "danger",
                   "The collector does not answer. Start it with `acestep-viz collector`."),
    ERROR: Badge("Collector error", "danger", "The collector answered with an error."),
}


def status(state: str, detail: str = "") -> dict[str, str]:
    return {"state": state, "detail": detail}


def status_from_snapshot(snapshot: Mapping[str, Any], previous: Mapping[str, Any] | None) -> dict[str, str]:
    """The status after a successful snapshot reply. "Cleared" stays until data comes back.

    The collector says whether it was cleared: a poll that was already on its way when this or
    another tab cleared carries the state from before the clear, so ``previous`` cannot tell."""
    run = snapshot.get("run")
    if snapshot.get("warming_up"):
        return status(WARMING, f"run {run}" if run else "")
    if not has_any_data(snapshot):
        was_cleared = snapshot.get("cleared") or (previous or {}).get("state") == CLEARED
        return status(CLEARED if was_cleared else WAITING)
    if snapshot.get("paused"):
        return status(PAUSED, "Projections are paused in the collector; new samples are still stored.")
    return status(LIVE, f"Run: {run}" if run else "")


def badge_for(current: Mapping[str, Any] | None, auto_update_paused: bool) -> Badge:
    """The badge to show. Pausing auto-update in this browser overrides the collector's state."""
    if auto_update_paused:
        return BADGES[PAUSED]
    current = current or {}
    base = BADGES.get(current.get("state"), BADGES[WAITING])
    detail = current.get("detail")
    return Badge(base.label, base.color, f"{base.title} {detail}".strip() if detail else base.title)


def stat_text(counts: Mapping[str, Any]) -> str:
    """ "N samples", plus " (projected)" once a projection of that space exists, " (projected by PCA)" when
    the space is too small for PaCMAP; "M of N samples on the map" while the map shows fewer rows than
    the buffer holds (a fit or placement still to come)."""
    n = int(counts.get("buffered") or 0)
    shown = int(counts.get("projected") or 0)
    pca = counts.get("method") == "pca"
    if 0 < shown < n:
        return f"{shown:,} of {n:,} samples on the map" + (" (PCA)" if pca else "")
    text = f"{n:,} sample" + ("" if n == 1 else "s")
    if not shown:
        return text
    return text + (" (projected by PCA)" if pca else " (projected)")


def stat_texts(snapshot: Mapping[str, Any]) -> dict[str, str]:
    return {space: stat_text(space_counts(snapshot, space)) for space in SPACES}
