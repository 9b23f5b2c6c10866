"""Comparing two runs: one joint map of both runs' buffered rows, fitted on the projection worker.

Each run's own map is fitted on its own rows, so two runs' maps share no axes: a point's place
in run A's map says nothing about run B's. A joint fit lays out both runs' rows together, so
distances between the runs mean something. This module is the pure part: which rows enter the
fit (the cap split between the runs), the cache key (both runs' buffer stamps), the book of
requested pairs and their latest joint maps, and the reply. No sockets, no PaCMAP.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from acestep_viz.collector.quality import cap_rows

from acestep_viz.point_columns import LISTS, encode_points

REQUEST_TTL_S = 120.0  # a pair nobody asked for this long stops being refitted
MAX_PAIRS = 8  # joint maps kept; the least recently asked for goes first
KEY_SEPARATOR = "\x1e"  # between run and row key in a joint map's keys: no run name or row key holds it
POINT_FIELDS = ("id", "step", "loss", "timestep", "layer", "prompt")

Pair = tuple[str, str]
Stamp = tuple  # a run's buffer stamp: (when the run was first seen, the space's buffer generation)


class CompareError(ValueError):
    """A comparison that cannot be made (the same run twice, vectors of different sizes)."""


@dataclass
class RunRows:
    """One run's buffered rows of the compared space, with the stamp that changes whenever they do."""
    run: str
    stamp: Stamp
    vectors: np.ndarray  # (n, d)
    keys: list[str]
    meta: list[dict]


@dataclass
class JointRows:
    vectors: np.ndarray
    keys: list[str]  # run + KEY_SEPARATOR + row key: unique across the two runs
    meta: list[dict]  # each row's metadata plus its "run"
    counts: dict[str, int]  # rows of each run in the fit


@dataclass
class JointMap:
    pair: Pair
    space: str
    key: tuple  # the stamps of both runs' rows it was fitted on
    keys: list[str]
    coords: np.ndarray  # (n, 2)
    meta: list[dict]
    counts: dict[str, int]
    version: int
    projected_at: float
    seconds: float
    method: str  # "pacmap", or "pca" when the two runs hold too few rows together


@dataclass
class PairState:
    requested_at: float
    current_key: tuple | None = None  # the stamps the latest request saw
    fitted: JointMap | None = None
    last_fit_at: float = 0.0
    error: str | None = None  # why the last fit failed, until one succeeds


def split_cap(cap: int, sizes: dict[str, int]) -> dict[str, int]:
    """Rows each run may bring to the joint fit: half the cap each, a run needing less hands its share on."""
    runs = list(sizes)
    shares = {run: cap // len(runs) for run in runs}
    shares[runs[0]] += cap - sum(shares.values())
    spare = sum(max(0, shares[r] - sizes[r]) for r in runs)
    for run in runs:
        shares[run] = min(shares[run], sizes[run])
    for run in runs:
        extra = min(spare, sizes[run] - shares[run])
        shares[run] += extra
        spare -= extra
    return shares


def joint_rows(rows: list[RunRows], cap: int) -> JointRows:
    """Both runs' rows in one matrix, each run capped to its share (every clip kept, as in a full fit)."""
    dims = {r.vectors.shape[1] for r in rows if len(r.keys)}
    if len(dims) > 1:
        raise CompareError(f"the runs' vectors have different sizes ({', '.join(map(str, sorted(dims)))}): "
                           "they come from different models and cannot share a map")
    shares = split_cap(cap, {r.run: len(r.keys) for r in rows})
    vectors, keys, meta, counts = [], [], [], {}
    for r in rows:
        chosen = cap_rows(r.meta, shares[r.run]) if len(r.keys) else np.arange(0)
        vectors.append(np.asarray(r.vectors, dtype=np.float32)[chosen] if len(chosen) else None)
        keys += [f"{r.run}{KEY_SEPARATOR}{r.keys[i]}" for i in chosen]
        meta += [{**r.meta[i], "run": r.run} for i in chosen]
        counts[r.run] = len(chosen)
    stacked = [v for v in vectors if v is not None]
    matrix = np.concatenate(stacked) if stacked else np.zeros((0, dims.pop() if dims else 0), np.float32)
    return JointRows(matrix, keys, meta, counts)


def pair_key(rows: list[RunRows]) -> tuple:
    return tuple((r.run, r.stamp) for r in rows)


def check_pair(runs) -> Pair:
    """The two runs of a compare request, or a CompareError saying what is wrong."""
    if not isinstance(runs, (list, tuple)) or len(runs) != 2 or not all(isinstance(r, str) and r for r in runs):
        raise CompareError("compare needs runs: a list of two run names")
    if runs[0] == runs[1]:
        raise CompareError("compare needs two different runs")
    return runs[0], runs[1]


class CompareBook:
    """The pairs clients asked to compare and their latest joint maps (thread-safe).

    The query thread records requests and reads maps; the projection loop asks which pair is due
    and installs what it fitted. A pair is due when it was asked for recently, its rows changed
    since its map was fitted, and the fit interval has passed since its last fit.
    """

    def __init__(self, ttl_s: float = REQUEST_TTL_S, max_pairs: int = MAX_PAIRS):
        self.ttl_s, self.max_pairs = ttl_s, max_pairs
        self.pairs: dict[tuple[Pair, str], PairState] = {}
        self.version = 0
        self._lock = threading.Lock()

    def request(self, pair: Pair, space: str, key: tuple, now: float) -> PairState:
        """Record that a client wants this pair's joint map of rows ``key``; returns its state."""
        with self._lock:
            state = self.pairs.pop((pair, space), None) or PairState(now)
            state.requested_at, state.current_key = now, key
            self.pairs[(pair, space)] = state  # most recently asked for last
            while len(self.pairs) > self.max_pairs:
                self.pairs.pop(next(iter(self.pairs)))
            return state

    def due(self, now: float, min_interval_s: float) -> list[tuple[Pair, str]]:
        """Pairs to refit now, the one fitted longest ago first; pairs nobody asked for lately are dropped."""
        with self._lock:
            for gone in [k for k, s in self.pairs.items() if now - s.requested_at > self.ttl_s]:
                del self.pairs[gone]
            due = [(s.last_fit_at, k) for k, s in self.pairs.items()
                   if (s.fitted is None or s.fitted.key != s.current_key) and now - s.last_fit_at >= min_interval_s]
            return [k for _, k in sorted(due, key=lambda d: d[0])]

    def started(self, pair: Pair, space: str, now: float) -> None:
        with self._lock:
            state = self.pairs.get((pair, space))
            if state is not None:
                state.last_fit_at = now

    def install(self, pair: Pair, space: str, key: tuple, rows: JointRows, coords: np.ndarray, seconds: float,
                method: str, now: float) -> JointMap | None:
        with self._lock:
            state = self.pairs.get((pair, space))
            if state is None:
                return None  # nobody asks for it any more
            self.version += 1
            state.fitted = JointMap(pair, space, key, rows.keys, coords, rows.meta, rows.counts, self.version,
                                    now, seconds, method)
            state.error = None
            return state.fitted

    def failed(self, pair: Pair, space: str, error: str) -> None:
        with self._lock:
            state = self.pairs.get((pair, space))
            if state is not None:
                state.error = error

    def previous(self, pair: Pair, space: str) -> JointMap | None:
        with self._lock:
            state = self.pairs.get((pair, space))
            return state.fitted if state else None


def compare_reply(pair: Pair, space: str, state: PairState, since: int | None = None,
                  encoding: str = LISTS) -> dict:
    """The compare op's answer: the latest joint map (points carry their ``run``), its version, whether it
    was fitted on the rows the runs hold now (``current``); without points when ``since`` is its version."""
    fitted = state.fitted
    reply = {"ok": True, "runs": list(pair), "space": space, "version": fitted.version if fitted else None,
             "current": fitted is not None and fitted.key == state.current_key, "error": state.error}
    if fitted is None:
        return {**reply, "changed": True, "counts": {run: 0 for run in pair}, "points": _points(None)}
    reply.update(projected_at=round(fitted.projected_at, 3), seconds=round(fitted.seconds, 4),
                 method=fitted.method, counts=dict(fitted.counts))
    if since is not None and since == fitted.version:
        return {**reply, "changed": False}
    return {**reply, "changed": True, "points": encode_points(_points(fitted), encoding)}


def _points(fitted: JointMap | None) -> dict:
    if fitted is None:
        return {"x": [], "y": [], "run": [], **{f: [] for f in POINT_FIELDS}}
    coords = np.round(fitted.coords, 4)
    points = {"x": coords[:, 0].tolist(), "y": coords[:, 1].tolist(), "run": [m["run"] for m in fitted.meta]}
    for f in POINT_FIELDS:
        points[f] = [m.get(f) for m in fitted.meta]
    return points

