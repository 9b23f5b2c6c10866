"""Merge frames that queued up behind a slow collector into fewer, larger frames.

When the sender thread finds a backlog, consecutive frames of the same run, space, rank and
vector size become one frame whose rows carry their own ``step`` and ``micro_batch``. The
collector's per-frame costs (header parse, store record, socket message) are then paid once
per batch instead of once per step. Frozen-space frames are left alone: they are cached and
replayed one by one.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from collector.protocol import Frame

MAX_ROWS = 2048


def coalesce(frames: Iterable[Frame], frozen_spaces: frozenset[str],
             max_rows: int = MAX_ROWS) -> Iterator[tuple[Frame, int]]:
    """Yield (frame, how many input frames it stands for), in input order."""
    group: list[Frame] = []
    rows = 0
    for frame in frames:
        if frame.space in frozen_spaces:
            yield from _flush(group)
            group, rows = [], 0
            yield frame, 1
            continue
        if group and (_group_key(group[0]) != _group_key(frame) or rows + frame.rows > max_rows):
            yield from _flush(group)
            group, rows = [], 0
        group.append(frame)
        rows += frame.rows
    yield from _flush(group)


def _group_key(frame: Frame) -> tuple:
    return frame.run, frame.space, frame.rank, frame.vectors.shape[1]


def _flush(group: list[Frame]) -> Iterator[Frame]:
    if len(group) == 1:
        yield group[0], 1
    elif group:
        yield merge(group), len(group)


def merge(group: list[Frame]) -> Frame:
    """One frame holding the group's rows in order; each row keeps its own step and micro-batch."""
    columns = {key: [value for frame in group for value in _column(frame, key, None)]
               for key in dict.fromkeys(key for frame in group for key in frame.columns)}
    columns["step"] = [v for frame in group for v in _column(frame, "step", frame.step)]
    columns["micro_batch"] = [v for frame in group for v in _column(frame, "micro_batch", frame.micro_batch)]
    last = max(group, key=lambda f: (f.step, f.micro_batch))
    sent = [f.sent_at for f in group if f.sent_at]
    return Frame(run=group[0].run, space=group[0].space, step=last.step, micro_batch=last.micro_batch,
                 rank=group[0].rank, vectors=np.concatenate([f.vectors for f in group]),
                 ids=[i for f in group for i in f.ids], columns=columns, sent_at=min(sent, default=0.0))


def _column(frame: Frame, key: str, default) -> list:
    """The frame's values for ``key``, with ``default`` where a row has none."""
    values = frame.columns.get(key)
    if values is None:
        return [default] * frame.rows
    return values if default is None else [default if v is None else v for v in values]
