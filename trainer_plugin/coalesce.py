"""Merge the frames of one publisher batch into one frame per run, space, rank and vector size.

The sender thread takes everything queued since its last turn (several training steps, each
with a frame per space); rows of merged frames carry their own ``step`` and ``micro_batch``.
The collector's per-frame costs (header parse, store record, socket message) and the sender's
(encode, send) are then paid once per batch and space instead of once per step and space.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from acestep_viz.wire import Frame

MAX_ROWS = 2048


def coalesce(frames: Iterable[Frame], max_rows: int = MAX_ROWS) -> Iterator[tuple[Frame, int]]:
    """Yield (frame, how many input frames it stands for): groups in order of first appearance,
    each group's rows in input order, at most ``max_rows`` rows per merged frame."""
    groups: dict[tuple, list[Frame]] = {}
    for frame in frames:
        groups.setdefault(_group_key(frame), []).append(frame)
    for group in groups.values():
        chunk: list[Frame] = []
        rows = 0
        for frame in group:
            if chunk and rows + frame.rows > max_rows:
                yield from _flush(chunk)
                chunk, rows = [], 0
            chunk.append(frame)
            rows += frame.rows
        yield from _flush(chunk)


def _group_key(frame: Frame) -> tuple:
    return frame.run, frame.space, frame.rank, frame.vectors.shape[1]


def _flush(group: list[Frame]) -> Iterator[Frame]:
    if len(group) == 1:
        yield group[0], 1
    elif group:
        yield merge(group), len(group)


def merge(group: list[Frame]) -> Frame:
    """One frame holding the group's rows in order; each row keeps its own step and micro-batch."""
    sizes = [len(frame.ids) for frame in group]
    columns = {key: _joined(group, sizes, key, None)
               for key in dict.fromkeys(key for frame in group for key in frame.columns)}
    columns["step"] = _joined(group, sizes, "step", "step")
    columns["micro_batch"] = _joined(group, sizes, "micro_batch", "micro_batch")
    last = max(group, key=lambda f: (f.step, f.micro_batch))
    sent = [f.sent_at for f in group if f.sent_at]
    ids: list[str] = []
    for frame in group:
        ids.extend(frame.ids)
    return Frame(run=group[0].run, space=group[0].space, step=last.step, micro_batch=last.micro_batch,
                 rank=group[0].rank, vectors=np.concatenate([f.vectors for f in group]),
                 ids=ids, columns=columns, sent_at=min(sent, default=0.0), model=group[0].model)


def _joined(group: list[Frame], sizes: list[int], key: str, fallback: str | None) -> list:
    """The group's values for ``key`` in row order; where a row has none, None or the frame's own
    ``fallback`` attribute (its step or micro-batch)."""
    out: list = []
    for frame, size in zip(group, sizes):
        values = frame.columns.get(key)
        default = getattr(frame, fallback) if fallback else None
        if values is None:
            out.extend([default] * size)
        elif default is None or None not in values:
            out.extend(values)
        else:
            out.extend(default if v is None else v for v in values)
    return out
