"""Keeping the run store bounded: which runs are old enough to delete, when a log is due for
compaction, and the frames a compacted log holds. Pure functions; the service applies them.

- Age: a run folder whose log was last written more than ``retention_days`` ago is deleted
  (0 keeps runs forever); runs still receiving frames are never deleted.
- Size: a log past ``retention_max_mb`` is rewritten to hold only what rebuilds the run's current
  buffers: the buffered rows re-encoded as frames, oldest first (frozen spaces: one row per clip).
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from acestep_viz.wire import ROW_META_KEYS, Frame

DAY_S = 86400.0
MB = 1 << 20
ROWS_PER_FRAME = 256  # keeps a compacted frame's JSON header far below the 1 MiB limit


def expired_runs(last_written: dict[str, float], now: float, days: float, keep: Iterable[str] = ()) -> list[str]:
    """The names in ``last_written`` (name -> time of the last write, seconds since the epoch)
    older than ``days`` at ``now``, except those in ``keep``; nothing when ``days`` is 0."""
    if days <= 0:
        return []
    cutoff, keep = now - days * DAY_S, set(keep)
    return sorted(name for name, at in last_written.items() if at < cutoff and name not in keep)


def compaction_due(size: int, limit_mb: float, compacted_size: int = 0) -> bool:
    """Whether a log of ``size`` bytes should be compacted. ``compacted_size``: its size right after
    the last compaction; when the buffers alone exceed the limit, wait until the log has doubled
    rather than rewrite it on every check."""
    if limit_mb <= 0:
        return False
    return size > max(limit_mb * MB, 2 * compacted_size)


def compacted_frames(run: str, buffers: dict[str, tuple[np.ndarray, list[str], list[dict]]],
                     rows_per_frame: int = ROWS_PER_FRAME) -> Iterator[Frame]:
    """Frames that, replayed in order into empty buffers, rebuild ``buffers`` ({space: (vectors,
    keys, row metadata)} as ``SpaceBuffer.snapshot`` returns them): the same rows, metadata and
    order. Consecutive rows sharing a rank and send time go into one frame."""
    for space, (vectors, _keys, meta) in buffers.items():
        start = 0
        while start < len(meta):
            end = _group_end(meta, start, rows_per_frame)
            yield _frame(run, space, vectors[start:end], meta[start:end])
            start = end


def _group_end(meta: list[dict], start: int, limit: int) -> int:
    first = meta[start]
    end = start + 1
    while (end < len(meta) and end - start < limit and meta[end].get("rank") == first.get("rank")
           and meta[end].get("sent_at") == first.get("sent_at")):
        end += 1
    return end


def _frame(run: str, space: str, vectors: np.ndarray, meta: list[dict]) -> Frame:
    rows = [{k: m[k] for k in ROW_META_KEYS if m.get(k) is not None} for m in meta]
    return Frame(run=run, space=space, step=max(m["step"] for m in meta), micro_batch=meta[0]["micro_batch"],
                 rank=meta[0].get("rank") or 0, vectors=np.asarray(vectors, np.float16),
                 ids=[m["id"] for m in meta], meta=rows, sent_at=meta[0].get("sent_at") or 0.0)
