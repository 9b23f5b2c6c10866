"""Everything the collector knows, as plain data with a lock: runs, buffers, projections, counters.

No sockets and no PaCMAP here: the service feeds frames in, the projection loop takes fit jobs
out and puts layouts back, and the query loop reads snapshots and statistics.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np
from acestep_viz.collector.adapter_series import AdapterSeries
from acestep_viz.collector.buffers import DEFAULT_VARIANTS_PER_CLIP, SpaceBuffer
from acestep_viz.collector.placement import PLACE_BATCH, RefitPolicy, full_fit_reason, map_change, rows_to_place
from acestep_viz.collector.projection import MIN_POINTS, projection_method
from acestep_viz.collector.quality import cap_rows

from acestep_viz.point_columns import LISTS, encode_points
from acestep_viz.wire import SPACES, AdapterSizes, Frame

POINT_FIELDS = ("id", "step", "loss", "timestep", "layer", "prompt", "audio")
SPARSE_POINT_FIELDS = ("audio",)  # sent only when a row of the map has one; readers treat absent as null
RESTORED = -1  # generation of a map saved by an earlier collector: matches no buffer, so it gets refitted


@dataclass
class Projection:
    keys: list[str]
    coords: np.ndarray  # (n, 2)
    meta: list[dict]
    generation: int  # buffer generation it was fitted on
    version: int  # collector-wide version when it was installed
    projected_at: float
    seconds: float
    step: int = -1  # newest training step among its rows
    quality: dict = field(default_factory=dict)  # neighbour_overlap, lora_drift
    fit: str = "full"  # "full": a whole new layout; "placed": the previous map with new rows placed on it
    placed: int = 0  # rows placed since the last full fit
    method: str = "pacmap"  # what drew it: "pacmap", or "pca" for a space too small for PaCMAP

    def summary(self) -> dict:
        return {"version": self.version, "step": self.step, "projected_at": self.projected_at,
                "seconds": round(self.seconds, 4), "points": len(self.keys), "fit": self.fit,
                "placed": self.placed, "method": self.method, **self.quality}


@dataclass
class SpaceState:
    buffer: SpaceBuffer
    history: deque  # of Projection, oldest first; the last one is the current map
    last_fit_at: float = 0.0
    force: bool = False
    first_vectors: dict | None = None  # LoRA: each (clip, layer)'s vector in the first fitted frame
    full_keys: frozenset = frozenset()  # rows of the last full fit
    full_fit_at: float = 0.0
    left_out: frozenset = frozenset()  # rows the last full fit's cap left out: placed onto it, never "new"
    unplaced: int = 0  # buffered rows the last job left off the map: placed in the next rounds

    @property
    def projection(self) -> Projection | None:
        return self.history[-1] if self.history else None


@dataclass
class RunState:
    name: str
    spaces: dict[str, SpaceState]
    first_seen: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)
    model: str | None = None  # the model the trainer says it trains (the frames' "model"); None: not said

    @property
    def last_step(self) -> int:
        """The newest training step any space of the run has received."""
        return max(st.buffer.last_step for st in self.spaces.values())


@dataclass
class FitJob:
    run: str
    space: str
    generation: int
    vectors: np.ndarray
    keys: list[str]
    meta: list[dict]
    previous: Projection | None
    full: bool = True  # False: place the new rows on ``previous``, keep its points where they are
    reason: str = ""  # why a full fit (collector/placement.py: full_fit_reason)
    method: str = "pacmap"  # "pca": too few rows for PaCMAP (collector/projection.py: projection_method)
    left_out: frozenset = frozenset()  # a full fit: buffered rows its cap left out
    anchors: frozenset | None = None  # a placement: the last full fit's rows, which new rows are placed among


class CollectorState:
    def __init__(self, buffer_size: int = 2000, min_points: int = MIN_POINTS, max_fit_points: int = 3000,
                 history_size: int = 100, refit_policy: RefitPolicy | None = None,
                 prompt_variants_per_clip: int = DEFAULT_VARIANTS_PER_CLIP):
        self.lock = threading.RLock()
        self.prompt_variants_per_clip = prompt_variants_per_clip
        self.n_neighbors = 10  # the service's PaCMAP n_neighbors: below n_neighbors + 1 rows a map is PCA
        self.refit_policy = refit_policy or RefitPolicy()
        self.buffer_size = buffer_size
        self.max_fit_points = max_fit_points
        self.history_size = history_size
        self.min_points = max(min_points, MIN_POINTS)
        self.runs: dict[str, RunState] = {}
        self.version = 0
        self.paused = False
        self.cleared = False  # everything was cleared and nothing has arrived since
        self.frames_received = 0
        self.frames_accepted = 0
        self.ingest_busy_s = 0.0  # time the ingest thread spent receiving and storing: its load
        self.rejects: Counter[str] = Counter()
        self.dropped_rows: Counter[str] = Counter()  # rows left out of accepted frames, by reason
        self.projection_errors: Counter[str] = Counter()
        self.started_at = time.time()
        self._snapshot_cache: dict[tuple[str, str], tuple[int, dict]] = {}  # (run, encoding) -> (version, spaces)
        self.adapter: dict[str, AdapterSeries] = {}  # run -> its adapter update sizes (collector/adapter_series.py)

    # ingest -------------------------------------------------------------------------------
    def accept(self, frame: Frame) -> int:
        """Buffer a decoded frame; returns the number of new rows. Raises BufferReject."""
        with self.lock:
            run = self.runs.get(frame.run)
            if run is None:
                run = self.runs[frame.run] = RunState(frame.run, {s: self._new_space(s) for s in SPACES})
            added = run.spaces[frame.space].buffer.add(frame)
            run.last_seen = time.time()
            if frame.model is not None:
                run.model = frame.model
            self.cleared = False
            self.frames_accepted += 1
            if frame.dropped_rows:
                self.dropped_rows["non_finite"] += frame.dropped_rows
            return added

    def accept_adapter(self, message: AdapterSizes) -> None:
        """Keep an adapter message's update sizes in its run's series."""
        with self.lock:
            series = self.adapter.get(message.run)
            if series is None:
                series = self.adapter[message.run] = AdapterSeries(message.run)
            series.add(message)
            self.frames_accepted += 1

    def adapter_reply(self, run: str) -> dict:
        """The ``adapter`` query's reply: every layer's update sizes against step (none yet: empty)."""
        with self.lock:
            series = self.adapter.get(run)
            return {"ok": True, "run": run, "layers": series.as_reply() if series is not None else {}}

    def adapter_messages(self, run: str) -> list[AdapterSizes]:
        with self.lock:
            series = self.adapter.get(run)
            return series.messages() if series is not None else []

    def run_buffers(self, run: str) -> dict[str, tuple[np.ndarray, list[str], list[dict]]] | None:
        """Copies of one run's buffered rows per space, oldest first (None: no such run)."""
        with self.lock:
            state = self.runs.get(run)
            return None if state is None else {name: st.buffer.snapshot() for name, st in state.spaces.items()}

    def buffer_stamp(self, run: str, space: str) -> tuple | None:
        """What changes whenever the run's rows of ``space`` do: (first seen, buffer generation); None: no run."""
        with self.lock:
            state = self.runs.get(run)
            return None if state is None else (state.first_seen, state.spaces[space].buffer.generation)

    def buffer_rows(self, run: str, space: str) -> tuple[tuple, np.ndarray, list[str], list[dict]] | None:
        """(stamp, vectors, keys, meta): a copy of the run's buffered rows of ``space``; None: no run."""
        with self.lock:
            stamp = self.buffer_stamp(run, space)
            return None if stamp is None else (stamp, *self.runs[run].spaces[space].buffer.snapshot())

    def _new_space(self, space: str) -> SpaceState:
        return SpaceState(SpaceBuffer(space, self.buffer_size, self.prompt_variants_per_clip),
                          deque(maxlen=self.history_size))

    def reject(self, reason: str) -> None:
        with self.lock:
            self.rejects[reason] += 1

    # projections --------------------------------------------------------------------------
    def due_fits(self, now: float, min_interval_s: float, max_full: int = 1) -> list[FitJob]:
        """Spaces with new rows, enough points and no fit within the interval (or forced), the space
        fitted longest ago first. At most ``max_full`` full PaCMAP fits per call, after the placements
        (cheap): a space whose full fit must wait gets its new rows placed meanwhile when it can."""
        placements, fulls = [], []
        with self.lock:
            if self.paused:
                return []
            due = [(space.last_fit_at, run.name, name, space) for run in self.runs.values()
                   for name, space in run.spaces.items() if self._is_due(space, now, min_interval_s)]
            for _, run, name, space in sorted(due, key=lambda d: d[0]):
                job = self._fit_job(run, name, space, now, full_allowed=len(fulls) < max_full,
                                    catch_up=self._catching_up(space, now, min_interval_s))
                if job is not None:
                    (fulls if job.full and job.method == "pacmap" else placements).append(job)
        return placements + fulls

    def _is_due(self, space: SpaceState, now: float, min_interval_s: float) -> bool:
        """New rows once the interval has passed; rows still off the map (a capped fit, a large
        placement) at once, whether or not more rows arrive."""
        fitted = space.projection.generation if space.projection else 0
        if space.buffer.generation == fitted and not space.force and not space.unplaced:
            return False
        if space.buffer.size < self.min_points:
            return False
        return space.force or bool(space.unplaced) or now - space.last_fit_at >= min_interval_s

    def _catching_up(self, space: SpaceState, now: float, min_interval_s: float) -> bool:
        """Only placing rows still off the map: no new rows, or too soon for a fit, and no request."""
        unchanged = space.projection is not None and space.buffer.generation == space.projection.generation
        return bool(space.unplaced) and not space.force and (unchanged or now - space.last_fit_at < min_interval_s)

    def _fit_job(self, run: str, name: str, space: SpaceState, now: float, full_allowed: bool,
                 catch_up: bool = False) -> FitJob | None:
        """A placement when the map changed little since its last full fit (or rows left off it are
        catching up), else a full fit (None: it has to wait for the next round)."""
        vectors, keys, meta = space.buffer.snapshot()
        prev = space.projection
        if projection_method(len(keys), self.n_neighbors) == "pca":  # a small space: a whole PCA layout, cheap
            space.force, space.last_fit_at, space.unplaced = False, now, 0
            return FitJob(run, name, space.buffer.generation, vectors, keys, meta, prev, True, "small", "pca")
        grown = prev is not None and prev.method == "pca"  # grown past PCA: PaCMAP's first fit, never a placement
        if grown and not full_allowed:
            return None
        # Rows a capped fit left out count as fitted: placing them is no reason for another (capped) fit.
        change = map_change(space.full_keys | space.left_out, keys) if space.full_keys and prev else None
        reason = None if catch_up and prev is not None else "grown" if grown else full_fit_reason(
            change, now - space.full_fit_at, self.refit_policy, space.force, self.min_points)
        if reason is not None and not full_allowed and (prev is None or reason in ("first", "requested",
                                                                                   "too_few_kept")):
            return None
        full = reason is not None and full_allowed
        if full:
            rows = cap_rows(meta, self.max_fit_points)
            space.force = False
        else:
            rows = rows_to_place(prev.keys, keys, PLACE_BATCH)
        space.last_fit_at = now
        space.unplaced = len(keys) - len(rows)
        left_out = frozenset(keys) - {keys[i] for i in rows} if full else frozenset()
        if len(rows) < len(keys):
            vectors, keys, meta = vectors[rows], [keys[i] for i in rows], [meta[i] for i in rows]
        return FitJob(run, name, space.buffer.generation, vectors, keys, meta, prev, full, reason if full else "",
                      left_out=left_out, anchors=None if full else space.full_keys)

    def install(self, job: FitJob, coords: np.ndarray, seconds: float, quality: dict | None = None) -> None:
        with self.lock:
            run = self.runs.get(job.run)
            if run is None:
                return  # cleared while fitting
            space = run.spaces[job.space]
            if job.generation < space.buffer.cleared_at:
                return  # cleared while fitting
            self.version += 1
            step = max((m["step"] for m in job.meta), default=-1)
            if job.full:
                space.full_keys, space.full_fit_at, placed = frozenset(job.keys), time.time(), 0
                space.left_out = job.left_out
            else:
                placed = sum(k not in space.full_keys for k in job.keys)
            space.history.append(Projection(job.keys, coords, job.meta, job.generation, self.version,
                                            time.time(), seconds, step, quality or {},
                                            "full" if job.full else "placed", placed, job.method))

    def restore(self, run: str, space: str, saved) -> Projection | None:
        """Install a map an earlier collector saved (collector/saved_maps.py) as the current one, so
        snapshots serve it before any fit; the next fit aligns to it. The space is refitted when due:
        counted from now, like a fit."""
        with self.lock:
            state = self.runs.get(run)
            if state is None:
                return None
            st = state.spaces[space]
            self.version += 1
            proj = Projection(list(saved.keys), np.asarray(saved.coords, np.float64), list(saved.meta), RESTORED,
                              self.version, saved.projected_at, saved.seconds, saved.step, dict(saved.quality),
                              method=getattr(saved, "method", "pacmap"))
            st.history.append(proj)
            st.last_fit_at = time.time()
            return proj

    def latest_projections(self) -> list[tuple[str, str, Projection]]:
        """(run, space, current map) for every space that has one."""
        with self.lock:
            return [(run.name, name, st.projection) for run in self.runs.values()
                    for name, st in run.spaces.items() if st.projection is not None]

    def first_lora_vectors(self, job: FitJob, latest: dict) -> dict:
        """The (clip, layer) vectors of the run's first LoRA fit: drift is measured against them."""
        with self.lock:
            space = self.runs[job.run].spaces[job.space] if job.run in self.runs else None
            if space is None:
                return latest
            if space.first_vectors is None:
                space.first_vectors = latest
            return space.first_vectors

    def request_refit(self, run: str | None, space: str | None) -> None:
        with self.lock:
            for state in self._select(run, space):
                state.force = True

    def set_paused(self, paused: bool) -> None:
        with self.lock:
            self.paused = paused

    def clear(self, run: str | None, space: str | None) -> list[str]:
        """Forget buffers and projections; returns the runs that are now gone entirely."""
        with self.lock:
            removed = []
            if space is None:
                names = list(self.runs) if run is None else [run] if run in self.runs else []
                for name in names:
                    del self.runs[name]
                    removed.append(name)
                for name in list(self.adapter) if run is None else [run]:
                    self.adapter.pop(name, None)
            else:
                for state in self._select(run, space):
                    state.buffer.clear()
                    state.history.clear()
                    state.first_vectors = None
                    state.full_keys = state.left_out = frozenset()
                    state.unplaced = 0
            self.cleared = True
            self.version += 1
            return removed

    def forget(self, run: str) -> bool:
        """Drop a run from the live view entirely (its stored data is the store's business)."""
        with self.lock:
            gone = self.runs.pop(run, None) is not None
            self.adapter.pop(run, None)
            self.version += gone
            return gone

    def run_names(self, run: str | None) -> list[str]:
        """The runs a request for ``run`` (None: all of them) refers to."""
        with self.lock:
            return list(self.runs) if run is None else [run] if run in self.runs else []

    def _select(self, run: str | None, space: str | None) -> list[SpaceState]:
        runs = self.runs.values() if run is None else [self.runs[run]] if run in self.runs else []
        return [st for r in runs for name, st in r.spaces.items() if space in (None, name)]

    # queries ------------------------------------------------------------------------------
    def latest_run(self) -> str | None:
        with self.lock:
            if not self.runs:
                return None
            return max(self.runs.values(), key=lambda r: r.last_seen).name

    def counts(self, run: str | None) -> dict:
        with self.lock:
            state = self.runs.get(run) if run else None
            result = {}
            for name in SPACES:
                st = state.spaces[name] if state else None
                result[name] = {"buffered": st.buffer.size if st else 0,
                                "projected": len(st.projection.keys) if st and st.projection else 0,
                                "method": st.projection.method if st and st.projection else None}
            return result

    def snapshot(self, run: str | None, since: int | None, encoding: str = LISTS) -> dict:
        """The run's maps (``encoding`` "typed": numeric point columns as base64, acestep_viz/point_columns.py)."""
        with self.lock:
            run = self.latest_run() if run is None else run
            reply = {"ok": True, "version": self.version, "run": run, "paused": self.paused, "cleared": self.cleared,
                     "counts": self.counts(run), "model": self.runs[run].model if run in self.runs else None,
                     **self._freshness(run)}
            if since is not None and since == self.version:
                return {**reply, "changed": False}
            reply["changed"] = True
            reply["spaces"] = self._spaces_payload(run, encoding)
            return reply

    def _freshness(self, run: str | None) -> dict:
        """When the run's newest frame arrived (collector clock) and its newest training step."""
        state = self.runs.get(run) if run else None
        if state is None:
            return {"last_seen": None, "last_step": -1}
        return {"last_seen": round(state.last_seen, 3),
                "last_step": state.last_step}

    def _spaces_payload(self, run: str | None, encoding: str) -> dict:
        key = (run or "", encoding)
        cached = self._snapshot_cache.get(key)
        if cached and cached[0] == self.version:
            return cached[1]
        state = self.runs.get(run) if run else None
        payload = {}
        for name in SPACES:
            st = state.spaces[name] if state else None
            payload[name] = _space_payload(st, encoding)
        self._snapshot_cache = {k: v for k, v in self._snapshot_cache.items() if v[0] == self.version}
        self._snapshot_cache[key] = (self.version, payload)
        return payload

    def stats(self) -> dict:
        with self.lock:
            runs = {}
            for run in self.runs.values():
                runs[run.name] = {name: {
                    "received": st.buffer.received,
                    "buffered": st.buffer.size,
                    "projected": len(st.projection.keys) if st.projection else 0,
                    "version": st.projection.version if st.projection else 0,
                    "last_projection_at": st.projection.projected_at if st.projection else None,
                    "last_projection_s": st.projection.seconds if st.projection else None,
                    "last_step": st.buffer.last_step,
                    "dim": st.buffer.dim,
                    "frames": len(st.history),
                    "quality": st.projection.quality if st.projection else {},
                } for name, st in run.spaces.items()}
            return {"ok": True, "paused": self.paused, "uptime_s": time.time() - self.started_at,
                    "version": self.version, "frames_received": self.frames_received,
                    "frames_accepted": self.frames_accepted, "ingest_busy_s": round(self.ingest_busy_s, 3),
                    "rejects": dict(self.rejects), "dropped_rows": dict(self.dropped_rows),
                    "projection_errors": dict(self.projection_errors), "runs": runs,
                    "models": {run.name: run.model for run in self.runs.values()}}

    def history(self, run: str | None, space: str, version: int | None, encoding: str = LISTS) -> dict:
        """The frames of one space: summaries, or one frame's points when ``version`` is given."""
        with self.lock:
            run = self.latest_run() if run is None else run
            frames = list(self.runs[run].spaces[space].history) if run in self.runs else []
            if version is None:
                return {"ok": True, "run": run, "space": space, "frames": [f.summary() for f in frames]}
            match = [f for f in frames if f.version == version]
            if not match:
                raise ValueError(f"no frame with version {version} in {run}/{space} (it may have aged out)")
            points = encode_points(_points(match[0]), encoding)
            return {"ok": True, "run": run, "space": space, "frame": {**match[0].summary(), "points": points}}

    def history_frames(self, run: str | None) -> tuple[str | None, dict[str, list[Projection]]]:
        """Every space's frame history with its points (``step``, ``coords``, per-row ``meta``),
        oldest first, for replays such as the GIF export. A missing run means the latest active."""
        with self.lock:
            run = self.latest_run() if run is None else run
            spaces = self.runs[run].spaces if run in self.runs else {}
            return run, {name: list(st.history) for name, st in spaces.items()}

    def export_rows(self, run: str, maps: "CollectorState | None" = None) -> list:
        """Every buffered row of each space of ``run`` with its coordinates in the current map of ``maps``
        (default: this state's own), NaN where that map does not show the row."""
        from acestep_viz.collector.exports import SpaceExport

        maps = maps or self
        with self.lock, maps.lock:
            own = self.runs.get(run)
            mapped = maps.runs.get(run)
            out = []
            for name in SPACES:
                vectors, keys, meta = own.spaces[name].buffer.snapshot() if own else (np.zeros((0, 0)), [], [])
                coords = np.full((len(keys), 2), np.nan, np.float32)
                projection = mapped.spaces[name].projection if mapped else None
                if projection is not None:
                    where = {k: i for i, k in enumerate(projection.keys)}
                    for row, key in enumerate(keys):
                        if key in where:
                            coords[row] = projection.coords[where[key]]
                out.append(SpaceExport(name, vectors.astype(np.float16), coords, meta))
            return out

    def configure(self, buffer_size: int | None = None) -> None:
        with self.lock:
            if buffer_size is not None:
                self.buffer_size = buffer_size
                for run in self.runs.values():
                    for st in run.spaces.values():
                        st.buffer.resize(buffer_size)

    def run_list(self) -> list[dict]:
        with self.lock:
            ordered = sorted(self.runs.values(), key=lambda r: r.last_seen, reverse=True)
            return [{"run": r.name, "first_seen": r.first_seen, "last_seen": r.last_seen,
                     "last_step": r.last_step, "model": r.model} for r in ordered]


def _space_payload(state: SpaceState | None, encoding: str = LISTS) -> dict:
    empty = {"buffered": 0, "projected": 0, "projected_at": None, "last_step": -1,
             "points": {"x": [], "y": [], **{f: [] for f in POINT_FIELDS}}}
    if state is None:
        return empty
    proj = state.projection
    payload = {**empty, "buffered": state.buffer.size, "last_step": state.buffer.last_step}
    if proj is None:
        return payload
    return {**payload, "projected": len(proj.keys), "projected_at": proj.projected_at, "quality": proj.quality,
            "method": proj.method, "frames": len(state.history), "points": encode_points(_points(proj), encoding)}


def _points(proj: Projection) -> dict:
    coords = np.round(proj.coords, 4)
    points = {"x": coords[:, 0].tolist(), "y": coords[:, 1].tolist()}
    for f in POINT_FIELDS:
        values = [m.get(f) for m in proj.meta]
        if f in SPARSE_POINT_FIELDS and all(v is None for v in values):
            continue  # most spaces never carry it: leave it out of every snapshot rather than send nulls
        points[f] = values
    return points
