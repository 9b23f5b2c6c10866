"""Bounded per-(run, space) buffers of pooled vectors and their row metadata.

Frozen spaces keep one row per identity: the audio autoencoder and the text encoder do not train,
so a row's vector never changes and later copies only refresh metadata. A latent row is a clip; a
prompt row is a (clip, prompt text) pair, since ACE-Step draws a new prompt text for a clip on
every visit (shuffled tags, a random recaption). A clip keeps at most ``variants_per_clip`` prompt
texts; the oldest goes first. Every row's ``id`` stays the clip, so the dashboard treats a clip's
variants as one clip.
The LoRA space keeps one row per (clip, layer, step, micro-batch, rank) in a ring: when full,
the oldest rows are overwritten. Vectors live in one preallocated float16 matrix per buffer.

Ingest is the hot path, so a frame's metadata is kept once (``FrameRows``) and each slot only
points at it with a row index; the per-row dicts that ``snapshot`` returns are built the first
time a snapshot needs them and kept until the slot changes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from acestep_viz.wire import FROZEN_SPACES, Frame

VARIANT_SEPARATOR = "\x1f"  # between clip and prompt text in a prompt row's key: no clip id or prompt holds it
DEFAULT_VARIANTS_PER_CLIP = 8


class BufferReject(ValueError):
    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class FrameRows:
    """The metadata of one accepted frame's rows (no vectors), shared by the slots they fill."""

    __slots__ = ("ids", "columns", "step", "micro_batch", "rank", "sent_at")

    def __init__(self, frame: Frame):
        self.ids, self.columns = frame.ids, frame.columns
        self.step, self.micro_batch, self.rank, self.sent_at = frame.step, frame.micro_batch, frame.rank, frame.sent_at

    def keys(self, space: str) -> list[str]:
        """Identity of each row: the clip (latent), the clip and its prompt text (prompt), the full capture (LoRA)."""
        if space == "prompt" and self.columns.get("prompt") is not None:
            return [variant_key(clip, prompt) for clip, prompt in zip(self.ids, self.column("prompt", ""))]
        if space in FROZEN_SPACES:
            return self.ids
        steps, micro_batches = self.column("step", self.step), self.column("micro_batch", self.micro_batch)
        return [f"{clip}|{layer}|{step}|{micro_batch}|{self.rank}" for clip, layer, step, micro_batch
                in zip(self.ids, self.column("layer", ""), steps, micro_batches)]

    def column(self, key: str, default) -> list:
        values = self.columns.get(key)
        if values is None:
            return [default] * len(self.ids)
        return [default if v is None else v for v in values]

    def meta(self, row: int) -> dict:
        """One row's metadata as the dict ``SpaceBuffer.snapshot`` hands out."""
        value = self._value
        return {"id": self.ids[row], "step": value("step", row, self.step),
                "micro_batch": value("micro_batch", row, self.micro_batch), "rank": self.rank,
                "loss": value("loss", row), "timestep": value("timestep", row), "layer": value("layer", row),
                "prompt": value("prompt", row), "audio": value("audio", row), "sent_at": self.sent_at}

    def _value(self, key: str, row: int, default=None):
        values = self.columns.get(key)
        value = values[row] if values is not None else None
        return default if value is None else value


def variant_key(clip: str, prompt: str) -> str:
    return f"{clip}{VARIANT_SEPARATOR}{prompt}"


@dataclass
class SpaceBuffer:
    space: str
    capacity: int
    variants_per_clip: int = DEFAULT_VARIANTS_PER_CLIP  # prompt space: texts kept per clip
    dim: int | None = None
    vectors: np.ndarray | None = None
    keys: list[str | None] = field(default_factory=list)  # row key per slot, None when free
    sources: list[FrameRows | None] = field(default_factory=list)  # the frame each slot's row came from
    source_rows: list[int] = field(default_factory=list)  # the row's index in that frame
    meta: list[dict | None] = field(default_factory=list)  # per-slot dicts, built by snapshot on demand
    slot_of: dict[str, int] = field(default_factory=dict)
    next_slot: int = 0
    received: int = 0  # rows ever offered, duplicates included
    last_step: int = -1
    changed_at: float = 0.0
    variants: dict[str, dict[str, None]] = field(default_factory=dict)  # prompt space: clip -> its keys, oldest first
    generation: int = 0  # bumps on every change, never goes back; the projector compares it
    cleared_at: int = 0  # generation of the last clear: older fit jobs are stale

    @property
    def frozen(self) -> bool:
        return self.space in FROZEN_SPACES

    @property
    def size(self) -> int:
        return len(self.slot_of)

    def add(self, frame: Frame) -> int:
        """Store the frame's rows; return how many new rows entered. Raises BufferReject."""
        rows, dim = frame.vectors.shape
        if self.dim is None:
            self._allocate(dim)
        elif dim != self.dim:
            raise BufferReject("dim_mismatch", f"{self.space} vectors have dimension {self.dim}, "
                                               f"this frame has {dim}")
        source = FrameRows(frame)
        keys = source.keys(self.space)
        if self.slot_of.keys().isdisjoint(keys) and len(set(keys)) == rows:
            # The usual case: only new rows. Of a frame larger than the ring, the tail is what would stay.
            skip = max(0, rows - self.capacity)
            self._append(keys[skip:], frame.vectors[skip:], source, skip)
            added = rows
        else:
            added = self._upsert(keys, frame.vectors, source)
        if self.space == "prompt":
            added = max(0, added - self._bound_variants(frame.ids, keys))
        self.received += rows
        self.last_step = max(self.last_step, frame.step)
        self.changed_at = time.time()
        self.generation += 1
        return added

    def clear(self) -> None:
        generation = self.generation + 1
        self.__init__(space=self.space, capacity=self.capacity, variants_per_clip=self.variants_per_clip)
        self.generation = self.cleared_at = generation

    def resize(self, capacity: int) -> None:
        """Keep up to ``capacity`` rows from now on; the newest rows stay."""
        if capacity == self.capacity:
            return
        kept = self._slots_oldest_first()[-capacity:]
        old = self.vectors, self.keys, self.sources, self.source_rows, self.meta
        self.capacity, self.slot_of, self.next_slot = capacity, {}, 0
        if self.dim is not None:
            self._allocate(self.dim)
            vectors, keys, sources, source_rows, meta = old
            n = len(kept)
            self.vectors[:n] = vectors[kept]
            self.keys[:n] = [keys[s] for s in kept]
            self.sources[:n] = [sources[s] for s in kept]
            self.source_rows[:n] = [source_rows[s] for s in kept]
            self.meta[:n] = [meta[s] for s in kept]
            self.slot_of = {key: slot for slot, key in enumerate(self.keys[:n])}
            self.next_slot = n % capacity
        self.generation += 1

    def snapshot(self) -> tuple[np.ndarray, list[str], list[dict]]:
        """Copies of the live rows, oldest first: (float32 vectors, row keys, metadata)."""
        if not self.slot_of:
            return np.zeros((0, self.dim or 0), np.float32), [], []
        slots = self._slots_oldest_first()
        return (self.vectors[slots].astype(np.float32), [self.keys[s] for s in slots],
                [self._meta_of(s) for s in slots])

    def _meta_of(self, slot: int) -> dict:
        meta = self.meta[slot]
        if meta is None:
            meta = self.meta[slot] = self.sources[slot].meta(self.source_rows[slot])
        return meta

    def _slots_oldest_first(self) -> list[int]:
        return sorted(self.slot_of.values(), key=self._age_order)

    def _age_order(self, slot: int) -> int:
        return (slot - self.next_slot) % self.capacity

    def _allocate(self, dim: int) -> None:
        self.dim = dim
        self.vectors = np.zeros((self.capacity, dim), np.float16)
        self.keys = [None] * self.capacity
        self.sources = [None] * self.capacity
        self.source_rows = [0] * self.capacity
        self.meta = [None] * self.capacity

    def _append(self, keys: list[str], vectors: np.ndarray, source: FrameRows, first_row: int = 0) -> None:
        """Write rows with new, distinct keys (at most ``capacity``; the first is the frame's row
        ``first_row``) into the ring in one or two spans."""
        start = self.next_slot
        head = min(len(keys), self.capacity - start)
        self._write_span(start, keys[:head], vectors[:head], source, first_row)
        if head < len(keys):
            self._write_span(0, keys[head:], vectors[head:], source, first_row + head)
        self.next_slot = (start + len(keys)) % self.capacity

    def _write_span(self, first: int, keys: list[str], vectors: np.ndarray, source: FrameRows, first_row: int) -> None:
        end = first + len(keys)
        for evicted in self.keys[first:end]:
            if evicted is not None:
                del self.slot_of[evicted]
        self.keys[first:end] = keys
        self.slot_of.update(zip(keys, range(first, end)))
        self.vectors[first:end] = vectors
        self.sources[first:end] = [source] * len(keys)
        self.source_rows[first:end] = range(first_row, first_row + len(keys))
        self.meta[first:end] = [None] * len(keys)

    def _upsert(self, keys: list[str], vectors: np.ndarray, source: FrameRows) -> int:
        """Row by row: a known key keeps its slot (its vector and metadata are refreshed), a new one takes the next."""
        added = 0
        slots = []
        for key in keys:
            slot = self.slot_of.get(key)
            if slot is None:
                slot = self._claim_slot(key)
                added += 1
            slots.append(slot)
        self.vectors[slots] = vectors
        for row, slot in enumerate(slots):
            self.sources[slot], self.source_rows[slot], self.meta[slot] = source, row, None
        return added

    def _bound_variants(self, clips: Sequence[str], keys: Sequence[str]) -> int:
        """Keep each clip's newest ``variants_per_clip`` prompt rows; returns how many rows of this frame that
        dropped at once (a frame holding more new texts of one clip than the bound)."""
        touched = {}
        for clip, key in zip(clips, keys):
            order = touched[clip] = self.variants.setdefault(clip, {})
            order.setdefault(key, None)
        dropped = 0
        fresh = set(keys)
        for clip, order in touched.items():
            live = [key for key in order if key in self.slot_of]  # the ring may have overwritten some
            while len(live) > self.variants_per_clip:
                oldest = live.pop(0)
                self._free(oldest)
                dropped += oldest in fresh
            self.variants[clip] = dict.fromkeys(live)
        return dropped

    def _free(self, key: str) -> None:
        slot = self.slot_of.pop(key)
        self.keys[slot], self.sources[slot], self.meta[slot] = None, None, None

    def _claim_slot(self, key: str) -> int:
        slot = self.next_slot
        evicted = self.keys[slot]
        if evicted is not None:
            del self.slot_of[evicted]
        self.keys[slot] = key
        self.slot_of[key] = slot
        self.next_slot = (slot + 1) % self.capacity
        return slot
