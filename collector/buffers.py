"""Bounded per-(run, space) buffers of pooled vectors and their row metadata.

Frozen spaces (latent, prompt) keep one row per clip key: the audio autoencoder and the text
encoder do not train, so a clip's vector never changes and later copies only refresh metadata.
The LoRA space keeps one row per (clip, layer, step, micro-batch, rank) in a ring: when full,
the oldest rows are overwritten. Vectors live in one preallocated float16 matrix per buffer.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from collector.protocol import Frame

FROZEN_SPACES = frozenset({"latent", "prompt"})


class BufferReject(ValueError):
    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass
class SpaceBuffer:
    space: str
    capacity: int
    dim: int | None = None
    vectors: np.ndarray | None = None
    keys: list[str | None] = field(default_factory=list)  # row key per slot, None when free
    meta: list[dict | None] = field(default_factory=list)
    slot_of: dict[str, int] = field(default_factory=dict)
    next_slot: int = 0
    received: int = 0  # rows ever offered, duplicates included
    last_step: int = -1
    changed_at: float = 0.0
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
        added = 0
        slots = []
        for row in range(rows):
            meta = _row_meta(frame, row)
            key = row_key(self.space, meta)
            slot = self.slot_of.get(key)
            if slot is None:
                slot = self._claim_slot(key)
                added += 1
            self.meta[slot] = meta
            slots.append(slot)
        self.vectors[slots] = frame.vectors
        self.received += rows
        self.last_step = max(self.last_step, frame.step)
        self.changed_at = time.time()
        self.generation += 1
        return added

    def clear(self) -> None:
        generation = self.generation + 1
        self.__init__(space=self.space, capacity=self.capacity)
        self.generation = self.cleared_at = generation

    def resize(self, capacity: int) -> None:
        """Keep up to ``capacity`` rows from now on; the newest rows stay."""
        if capacity == self.capacity:
            return
        vectors, keys, meta = self.snapshot()
        self.capacity, self.slot_of, self.next_slot = capacity, {}, 0
        if self.dim is not None:
            self._allocate(self.dim)
            for key, vector, row_meta in zip(keys[-capacity:], vectors[-capacity:], meta[-capacity:]):
                slot = self._claim_slot(key)
                self.vectors[slot], self.meta[slot] = vector, row_meta
        self.generation += 1

    def snapshot(self) -> tuple[np.ndarray, list[str], list[dict]]:
        """Copies of the live rows, oldest first: (float32 vectors, row keys, metadata)."""
        if not self.slot_of:
            return np.zeros((0, self.dim or 0), np.float32), [], []
        slots = sorted(self.slot_of.values(), key=self._age_order)
        return (self.vectors[slots].astype(np.float32), [self.keys[s] for s in slots],
                [self.meta[s] for s in slots])

    def _age_order(self, slot: int) -> int:
        return (slot - self.next_slot) % self.capacity

    def _allocate(self, dim: int) -> None:
        self.dim = dim
        self.vectors = np.zeros((self.capacity, dim), np.float16)
        self.keys = [None] * self.capacity
        self.meta = [None] * self.capacity

    def _claim_slot(self, key: str) -> int:
        slot = self.next_slot
        evicted = self.keys[slot]
        if evicted is not None:
            del self.slot_of[evicted]
        self.keys[slot] = key
        self.slot_of[key] = slot
        self.next_slot = (slot + 1) % self.capacity
        return slot


def row_key(space: str, meta: dict) -> str:
    """Identity of a row: the clip for frozen spaces, the full capture for the LoRA space."""
    if space in FROZEN_SPACES:
        return meta["id"]
    return f"{meta['id']}|{meta.get('layer') or ''}|{meta['step']}|{meta['micro_batch']}|{meta['rank']}"


def _row_meta(frame: Frame, row: int) -> dict:
    extra = frame.meta[row] if frame.meta else {}
    return {"id": frame.ids[row], "step": extra.get("step", frame.step),
            "micro_batch": extra.get("micro_batch", frame.micro_batch), "rank": frame.rank,
            "loss": extra.get("loss"), "timestep": extra.get("timestep"), "layer": extra.get("layer"),
            "prompt": extra.get("prompt"), "sent_at": frame.sent_at}
