"""Step records as wire frames, a sender batch at once: one frame per run, space, rank and vector size.

The publisher's sender thread takes every step record queued since its last turn and builds their frames
here (trainer_plugin/publisher.py). A record gives one ``Segment`` per space with rows: its firings'
pooled sums and what scales them, its row ids and per-row metadata, what a frame of that step alone would
hold. ``chunks`` groups the batch's segments by run, space, rank and size, in order of first appearance,
and cuts each group at ``max_rows`` rows (a step's rows of a space stay together); ``chunk_frame`` makes a
chunk one frame, its sums concatenated, scaled and converted to float16 once. A chunk of one segment is
that step's frame; in a chunk of several, rows carry their own ``step`` and ``micro_batch`` columns, as
``coalesce`` merges frames that were built already. The sender holds the interpreter lock, which the
training thread then waits for, once per batch and space for the array work instead of once per firing.
Pure functions: no torch, no zmq.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, NamedTuple

import numpy as np
from acestep_viz.trainer_plugin.coalesce import MAX_ROWS
from acestep_viz.trainer_plugin.step_record import CaptureRows, StepRecord, row_id, to_wire, weight_totals

from acestep_viz.wire import Frame


class _Part(NamedTuple):
    """One firing's rows to send: pooled sums, times ``scale``, divided row by row by ``totals`` if any."""

    sums: np.ndarray  # (rows, dim) float32
    scale: float
    totals: np.ndarray | None


class Segment(NamedTuple):
    """One step's rows of one space."""

    record: StepRecord
    space: str
    parts: list[_Part]
    ids: list[str]
    columns: dict[str, list]

    @property
    def group(self) -> tuple:
        """What a frame's rows share: run, space, rank and vector size."""
        return self.record.run, self.space, self.record.rank, self.parts[0].sums.shape[1]


def build_frames(record: StepRecord, errors: Any) -> list[Frame]:
    """A single step's frames: one per space with rows."""
    return [chunk_frame(chunk) for chunk in chunks(segments(record, errors))]


def segments(record: StepRecord, errors: Any) -> list[Segment]:
    """A record's segments, one per space with rows, in order of first firing; ``errors.record(kind, exc)``
    hears about firings left out."""
    by_space: dict[str, list[CaptureRows]] = {}
    for capture in record.captures:
        by_space.setdefault(capture.space, []).append(capture)
    found = (_segment(record, space, _same_size(space, captures, errors)) for space, captures in by_space.items())
    return [segment for segment in found if segment is not None]


def chunks(batch: Iterable[Segment], max_rows: int = MAX_ROWS) -> Iterator[list[Segment]]:
    """The segments of each run, space, rank and size (groups in order of first appearance), in chunks of at
    most ``max_rows`` rows unless a single segment is larger."""
    groups: dict[tuple, list[Segment]] = {}
    for segment in batch:
        groups.setdefault(segment.group, []).append(segment)
    for group in groups.values():
        chunk: list[Segment] = []
        rows = 0
        for segment in group:
            if chunk and rows + len(segment.ids) > max_rows:
                yield chunk
                chunk, rows = [], 0
            chunk.append(segment)
            rows += len(segment.ids)
        if chunk:
            yield chunk


def chunk_frame(chunk: list[Segment]) -> Frame:
    """One frame of a chunk's rows, in order; rows of a chunk of several steps carry their own step."""
    first = chunk[0].record
    vectors = to_wire(_pooled([part for segment in chunk for part in segment.parts]))
    if len(chunk) == 1:
        segment = chunk[0]
        return Frame(run=first.run, space=segment.space, step=first.step, vectors=vectors, ids=segment.ids,
                     micro_batch=first.micro_batch, rank=first.rank, columns=segment.columns, sent_at=first.sent_at)
    last = max((segment.record for segment in chunk), key=lambda record: (record.step, record.micro_batch))
    ids: list[str] = []
    for segment in chunk:
        ids.extend(segment.ids)
    sent = [segment.record.sent_at for segment in chunk if segment.record.sent_at]
    return Frame(run=first.run, space=chunk[0].space, step=last.step, vectors=vectors, ids=ids,
                 micro_batch=last.micro_batch, rank=first.rank, columns=_joined_columns(chunk),
                 sent_at=min(sent, default=0.0))


def _same_size(space: str, captures: list[CaptureRows], errors: Any) -> list[CaptureRows]:
    if len({c.vectors.shape[1] for c in captures}) == 1:
        return captures
    dim = min(captures, key=lambda c: c.order).vectors.shape[1]  # the first declared module's size wins
    kept = [c for c in captures if c.vectors.shape[1] == dim]
    if len(kept) < len(captures):
        odd = sorted({c.label for c in captures if c.vectors.shape[1] != dim})
        errors.record("dim_mismatch", ValueError(f"{space}: {', '.join(odd)} pool to a size other "
                                                 f"than {dim}; their rows are skipped"))
    return kept


def _segment(record: StepRecord, space: str, captures: list[CaptureRows]) -> Segment | None:
    parts, key_indices, labels = [], [], []
    for capture in captures:
        sums, weights, offsets = capture.vectors, capture.weights, capture.keep
        if offsets is None:
            offsets = range(sums.shape[0])
        elif not offsets:
            continue
        else:
            sums = sums[list(offsets)]
            weights = weights[list(offsets)] if weights is not None else None
        parts.append(_Part(sums, capture.scale, weight_totals(weights) if weights is not None else None))
        key_indices.extend([capture.first_key + offset for offset in offsets])
        labels.extend([capture.label] * len(offsets))
    if not parts:
        return None
    ids = [row_id(record.keys, record.step, record.micro_batch, index) for index in key_indices]
    return Segment(record, space, parts, ids, _columns(record, space, key_indices, labels))


def _pooled(parts: list[_Part]) -> np.ndarray:
    """The parts' vectors stacked: their sums, each row times its part's scale and over its total."""
    sums = parts[0].sums if len(parts) == 1 else np.concatenate([part.sums for part in parts])
    if all(part.scale == 1.0 and part.totals is None for part in parts):
        return sums
    factors = np.repeat(np.array([part.scale for part in parts], dtype=np.float32), [len(p.sums) for p in parts])
    start = 0
    for part in parts:
        if part.totals is not None:
            factors[start:start + len(part.sums)] /= part.totals
        start += len(part.sums)
    return sums * factors[:, None]


def _columns(record: StepRecord, space: str, key_indices: list[int], labels: list[str]) -> dict[str, list]:
    """Per-row metadata, one list per key: prompt, loss, timestep (LoRA), layer and audio (latent)."""
    batch = len(record.keys) if record.keys else None
    indices = [index % batch for index in key_indices] if batch else key_indices
    columns: dict[str, list] = {}
    if record.prompts:
        columns["prompt"] = _pick(record.prompts, indices)
    loss, sample_losses = record.loss, record.sample_losses
    step_loss = loss[0] if loss is not None and len(loss) == 1 else None
    if sample_losses is not None and len(sample_losses) != 1:
        columns["loss"] = _pick(sample_losses, indices, step_loss)
    elif step_loss is not None:
        columns["loss"] = [step_loss] * len(indices)
    if space == "lora" and record.timesteps is not None:
        columns["timestep"] = _pick(record.timesteps, indices)
    if space == "lora" or len(set(labels)) > 1:
        columns["layer"] = labels
    if space == "latent" and record.audio:
        columns["audio"] = _pick(record.audio, indices)
    return columns


def _pick(values: list, indices: list[int], default=None) -> list:
    """values[i] for each index, ``default`` past the end."""
    count = len(values)
    return [values[i] if i < count else default for i in indices]


def _joined_columns(chunk: list[Segment]) -> dict[str, list]:
    """The chunk's columns in row order (None where a step has none of a key), plus each row's step and
    micro-batch."""
    columns: dict[str, list] = {key: [] for key in dict.fromkeys(k for s in chunk for k in s.columns)}
    for segment in chunk:
        rows = len(segment.ids)
        for key, values in columns.items():
            own = segment.columns.get(key)
            values.extend(own if own is not None else [None] * rows)
    columns["step"] = [segment.record.step for segment in chunk for _ in segment.ids]
    columns["micro_batch"] = [segment.record.micro_batch for segment in chunk for _ in segment.ids]
    return columns
