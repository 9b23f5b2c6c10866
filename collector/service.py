"""The collector process: sockets and three loops around ``CollectorState``.

- ingest: ZeroMQ SUB bound on the ingest endpoint -> decode -> store -> buffers;
- projections: hands fit jobs to the PaCMAP worker process, aligns and installs layouts;
- queries: ZeroMQ REP with one JSON request and one JSON reply (docs/query-api.md).
"""
from __future__ import annotations

import json
import logging
import threading
import time

import numpy as np
import zmq
from acestep_viz.collector import compare
from acestep_viz.collector.buffers import BufferReject
from acestep_viz.collector.exports import write_gif, write_npz, write_tensorboard
from acestep_viz.collector.health import frame_health
from acestep_viz.collector.options import RETENTION_DAYS, RETENTION_MAX_MB
from acestep_viz.collector.placement import RefitPolicy, extend_layout
from acestep_viz.collector.projection import (
    MIN_POINTS,
    align_to_previous,
    pca_layout,
    projection_method,
    warm_start,
)
from acestep_viz.collector.projector import Projector, ProjectorError
from acestep_viz.collector.quality import latest_by_key, neighbour_overlap, relative_drift
from acestep_viz.collector.saved_maps import MapSaver, load_map
from acestep_viz.collector.state import CollectorState, FitJob
from acestep_viz.collector.store import RunStore, run_dir_name
from acestep_viz.collector.upkeep import StoreUpkeep

from acestep_viz import security
from acestep_viz.point_columns import encoding_arg
from acestep_viz.wire import (
    ADAPTER_KIND,
    FROZEN_SPACES,
    MAX_HEADER_BYTES,
    MAX_PAYLOAD_BYTES,
    SPACES,
    AdapterSizes,
    ProtocolError,
    decode,
    decode_message,
    is_adapter_topic,
)

log = logging.getLogger("acestep_viz.collector")
POLL_MS = 100
EXPORT_FORMATS = ("npz", "tensorboard", "gif")
MAX_REQUEST_BYTES = 64 * 1024


class Collector:
    def __init__(self, ingest: str, query: str, store_dir: str, buffer_size: int = 2000,
                 n_neighbors: int = 10, projection_interval_s: float = 1.0, min_points: int = MIN_POINTS,
                 numba_cache_dir: str | None = None, rcvhwm: int = 100_000, max_fit_points: int = 3000,
                 history_size: int = 100, curve_dir: str | None = None,
                 retention_days: float = RETENTION_DAYS.default, retention_max_mb: float = RETENTION_MAX_MB.default,
                 refit_policy: RefitPolicy | None = None, prompt_variants_per_clip: int = 8):
        self.ingest_endpoint, self.query_endpoint = ingest, query
        self.curve_dir = curve_dir  # CurveZMQ keys (acestep_viz/security.py); None: plain sockets
        self._auth = None
        self.n_neighbors = n_neighbors
        self.projection_interval_s = projection_interval_s
        self.state = CollectorState(buffer_size=buffer_size, min_points=min_points, max_fit_points=max_fit_points,
                                    history_size=history_size, refit_policy=refit_policy,
                                    prompt_variants_per_clip=prompt_variants_per_clip)
        self.state.n_neighbors = n_neighbors
        self.store = RunStore(store_dir)
        self.maps = MapSaver(self.store.map_path)
        self.projector = Projector(numba_cache_dir)
        self.compares = compare.CompareBook()  # joint maps of two runs (collector/compare.py)
        self.rcvhwm = rcvhwm
        self.stop_event = threading.Event()
        # Held while a change enters both the buffers and the run log (ingest, clear), so the two agree.
        self._write_lock = threading.Lock()
        self.upkeep = StoreUpkeep(self.state, self.store, self.maps, self._write_lock, retention_days,
                                  retention_max_mb)
        self._threads: list[threading.Thread] = []
        self._ctx: zmq.Context | None = None
        self._closed = False

    # lifecycle ----------------------------------------------------------------------------
    def start(self) -> "Collector":
        self._ctx = zmq.Context()
        if self.curve_dir:
            self._auth = security.start_authenticator(self._ctx, self.curve_dir)
        sub = self._bind(zmq.SUB, self.ingest_endpoint, "ingest")
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        rep = self._bind(zmq.REP, self.query_endpoint, "query")
        self.upkeep.expire(time.time())
        replayed = self._replay()
        if replayed:
            log.info("restored %d frames from %s", replayed, self.store.root)
        self._restore_maps()
        self.projector.start()
        for target, sock in ((self._ingest_loop, sub), (self._query_loop, rep), (self._projection_loop, None),
                             (self.upkeep.run, self.stop_event)):
            args = (sock,) if sock is not None else ()
            thread = threading.Thread(target=target, args=args, name=target.__name__, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _bind(self, kind: int, endpoint: str, what: str) -> zmq.Socket:
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if kind == zmq.SUB:
            sock.setsockopt(zmq.RCVHWM, self.rcvhwm)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_HEADER_BYTES + MAX_PAYLOAD_BYTES + 4096)
        else:
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        if self.curve_dir:
            security.make_server(sock, self.curve_dir)
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            sock.close()
            self.close()
            raise OSError(f"cannot bind the {what} endpoint {endpoint}: {exc.strerror}; "
                          f"is another collector running? choose another port with --{what}") from None
        return sock

    def _replay(self) -> int:
        count = 0
        for parts in self.store.replay():
            try:
                message = decode_message(parts)
                if isinstance(message, AdapterSizes):
                    self.state.accept_adapter(message)
                else:
                    self.state.accept(message)
                count += 1
            except (ProtocolError, BufferReject) as exc:
                self.state.reject(f"store_{exc.reason}")
        return count

    def _restore_maps(self) -> None:
        """Serve each space's last saved map until its next fit; a bad file is logged once, then ignored."""
        restored = unreadable = 0
        for run in self.state.run_names(None):
            for space in SPACES:
                path = self.store.map_path(run, space)
                if not path.exists():
                    continue
                try:
                    proj = self.state.restore(run, space, load_map(path))
                except ValueError as exc:
                    unreadable += 1
                    log.warning("ignoring a saved map: %s", exc)
                    continue
                if proj is not None:
                    self.maps.mark_saved(run, space, proj.version, time.time())
                    restored += 1
        if restored or unreadable:
            log.info("restored %d saved maps (%d unreadable) from %s", restored, unreadable, self.store.root)

    def wait(self) -> None:
        while not self.stop_event.wait(0.5):
            pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stop_event.set()
        for thread in self._threads:
            thread.join(5)
        self.maps.save(self.state.latest_projections, time.time(), force=True)
        self.projector.close()
        self.store.close()
        if self._auth is not None:
            self._auth.stop()
        if self._ctx is not None:
            self._ctx.destroy(linger=0)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # ingest -------------------------------------------------------------------------------
    def _ingest_loop(self, sock: zmq.Socket) -> None:
        try:
            while not self.stop_event.is_set():
                if sock.poll(POLL_MS):
                    self._drain(sock)
        finally:
            sock.close(linger=0)

    def _drain(self, sock: zmq.Socket, budget: int = 1000) -> None:
        started = time.perf_counter()
        try:
            for _ in range(budget):
                try:
                    parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    return
                self.ingest(parts)
        finally:
            self.state.ingest_busy_s += time.perf_counter() - started

    def ingest(self, parts: list) -> bool:
        """Validate, store and buffer one wire frame; count a reject instead of raising."""
        self.state.frames_received += 1
        try:
            frame = decode_message(parts)
            if isinstance(frame, AdapterSizes):
                return self._ingest_adapter(frame, parts)
            with self._write_lock:
                added = self.state.accept(frame)
                if added or frame.space not in FROZEN_SPACES:
                    self.store.append(frame.run, parts)
                self.upkeep.live[frame.run] = time.time()
        except (ProtocolError, BufferReject) as exc:
            self.state.reject(exc.reason)
            return False
        except Exception:  # a bug must cost one frame, never the ingest thread
            self.state.reject("internal_error")
            log.exception("frame rejected by an internal error")
            return False
        return True

    def _ingest_adapter(self, message: AdapterSizes, parts: list) -> bool:
        """Keep and store an adapter message (the adapter's update size per layer)."""
        with self._write_lock:
            self.state.accept_adapter(message)
            self.store.append(message.run, parts)
            self.upkeep.live[message.run] = time.time()
        return True

    # projections --------------------------------------------------------------------------
    def _projection_loop(self) -> None:
        while not self.stop_event.is_set():
            if not self.projector.ready.is_set():
                if self.projector.failed:
                    log.error("%s; projections are off", self.projector.failed)
                    return
                self.stop_event.wait(0.2)
                continue
            jobs = self.state.due_fits(time.time(), self.projection_interval_s)
            for job in jobs:
                self._fit(job)
            self._fit_compares()
            self.maps.save(self.state.latest_projections, time.time())
            if not jobs:
                self.stop_event.wait(0.05)

    def _fit(self, job: FitJob) -> None:
        if not job.full:
            self._place(job)
            return
        if job.method == "pca":
            self._pca(job)
            return
        prev = job.previous
        start = warm_start(prev.keys, prev.coords, job.keys, job.vectors) if prev is not None else None
        init, held = start if start is not None else (None, None)
        try:
            coords, seconds = self.projector.fit(job.vectors, self.n_neighbors, init, held)
        except ProjectorError as exc:
            if self.stop_event.is_set():
                return
            first = not self.state.projection_errors
            self.state.projection_errors[type(exc).__name__] += 1
            if first:
                log.error("projection of %s/%s failed: %s", job.run, job.space, exc)
            return
        if prev is not None:
            coords = align_to_previous(prev.keys, prev.coords, job.keys, coords)
        self.state.install(job, coords, seconds, self._quality(job, coords))

    def _fit_compares(self) -> None:
        """One due joint map of two compared runs per round, after the runs' own fits."""
        if self.state.paused:
            return
        now = time.time()
        for pair, space in self.compares.due(now, self.projection_interval_s)[:1]:
            self.compares.started(pair, space, now)
            self._fit_compare(pair, space, now)

    def _fit_compare(self, pair: tuple[str, str], space: str, now: float) -> None:
        rows = []
        for run in pair:
            found = self.state.buffer_rows(run, space)
            stamp, vectors, keys, meta = found if found else (None, np.zeros((0, 0), np.float32), [], [])
            rows.append(compare.RunRows(run, stamp, vectors, keys, meta))
        try:
            joint = compare.joint_rows(rows, self.state.max_fit_points)
        except compare.CompareError as exc:
            self.compares.failed(pair, space, str(exc))
            return
        if len(joint.keys) < self.state.min_points:
            return
        key = compare.pair_key(rows)
        prev = self.compares.previous(pair, space)
        method = projection_method(len(joint.keys), self.n_neighbors)
        if method == "pca":
            started = time.perf_counter()
            coords = pca_layout(joint.vectors)
            seconds = time.perf_counter() - started
        else:
            start = warm_start(prev.keys, prev.coords, joint.keys, joint.vectors) if prev is not None else None
            init, held = start if start is not None else (None, None)
            try:
                coords, seconds = self.projector.fit(joint.vectors, self.n_neighbors, init, held)
            except ProjectorError as exc:
                self.state.projection_errors[f"compare_{type(exc).__name__}"] += 1
                self.compares.failed(pair, space, str(exc))
                return
        if prev is not None:
            coords = align_to_previous(prev.keys, prev.coords, joint.keys, coords)
        self.compares.install(pair, space, key, joint, coords, seconds, method, time.time())

    def _pca(self, job: FitJob) -> None:
        """A space too small for PaCMAP: its PCA layout, turned to match the previous map."""
        started = time.perf_counter()
        coords = pca_layout(job.vectors)
        if job.previous is not None:
            coords = align_to_previous(job.previous.keys, job.previous.coords, job.keys, coords)
        self.state.install(job, coords, time.perf_counter() - started, self._quality(job, coords))

    def _place(self, job: FitJob) -> None:
        """Keep the previous map's points exactly where they are and place the new rows among them."""
        started = time.perf_counter()
        coords, _ = extend_layout(job.previous.keys, job.previous.coords, job.keys, job.vectors, anchors=job.anchors)
        self.state.install(job, coords, time.perf_counter() - started, self._quality(job, coords))

    def _quality(self, job: FitJob, coords) -> dict:
        quality = {"neighbour_overlap": neighbour_overlap(job.vectors, coords, k=self.n_neighbors)}
        first = latest = None
        if job.space == "lora":
            latest = latest_by_key(job.vectors, job.meta)
            first = self.state.first_lora_vectors(job, latest)
            quality["lora_drift"] = relative_drift(first, latest)
        quality = {k: round(v, 4) for k, v in quality.items() if v is not None}
        try:  # collector/health.py; a failure costs this frame its health figures, never the map
            return {**quality, **frame_health(job.space, job.vectors, job.meta, first, latest)}
        except (ValueError, ArithmeticError) as exc:  # numpy's LinAlgError is a ValueError
            name = f"health_{type(exc).__name__}"
            if not self.state.projection_errors[name]:
                log.error("health figures of %s/%s failed: %s", job.run, job.space, exc)
            self.state.projection_errors[name] += 1
            return quality

    # queries ------------------------------------------------------------------------------
    def _query_loop(self, sock: zmq.Socket) -> None:
        try:
            while not self.stop_event.is_set():
                if not sock.poll(POLL_MS):
                    continue
                raw = sock.recv()
                sock.send(json.dumps(self.answer(raw), separators=(",", ":")).encode())
        finally:
            sock.close(linger=0)

    def answer(self, raw: bytes) -> dict:
        try:
            request = json.loads(raw)
            if not isinstance(request, dict):
                raise ValueError("request must be a JSON object")
            handlers = self._handlers()
            handler = handlers.get(request.get("op"))
            if handler is None:
                raise ValueError(f"unknown op {request.get('op')!r}; known: {', '.join(handlers)}")
            self._check_run(request)
            return handler(request)
        except UnknownRun as exc:
            return {"ok": False, "error": str(exc), "reason": "unknown_run"}
        except (ValueError, TypeError) as exc:
            return {"ok": False, "error": str(exc), "reason": "bad_request"}

    def _handlers(self) -> dict:
        return {
            "ping": lambda r: {"ok": True, "version": self.state.version, **self._health()},
            "stats": lambda r: {**self.state.stats(), **self._health()},
            "runs": lambda r: {"ok": True, "runs": self.state.run_list()},
            "snapshot": self._snapshot,
            "clear": self._clear,
            "pause": lambda r: self._set_paused(True),
            "resume": lambda r: self._set_paused(False),
            "refit": lambda r: self._refit(r),
            "history": self._history,
            "adapter": self._adapter,
            "set": self._set,
            "export": self._export,
            "delete": self._delete,
            "compare": self._compare,
        }

    def _check_run(self, request: dict) -> None:
        """A request naming a run must name one the collector knows (live, or kept in the store): an unknown
        name is an error, never another run's data."""
        run = _run_arg(request)
        if (run is not None and run not in self.state.run_names(None) and run not in self.state.adapter
                and not self.store.has_run(run)):
            known = ", ".join(sorted(self.state.run_names(None))) or "none"
            raise UnknownRun(f"no run named {run!r} (live runs: {known})")

    def _health(self) -> dict:
        return {"warming_up": not self.projector.ready.is_set() and not self.projector.failed,
                "projector_error": self.projector.failed, "warmup_s": self.projector.warmup_s,
                "ingest": self.ingest_endpoint, "store": str(self.store.root),
                "store_errors": {"write": self.store.write_errors.count, "fsync": self.store.fsync_errors,
                                 "saved_maps": self.maps.errors.count, "upkeep": self.upkeep.errors.count}}

    def _snapshot(self, request: dict) -> dict:
        since = request.get("since")
        if since is not None and (isinstance(since, bool) or not isinstance(since, int)):
            raise ValueError("since must be an integer version or null")
        reply = self.state.snapshot(_run_arg(request), since, encoding_arg(request))
        reply["warming_up"] = self._health()["warming_up"]
        return reply

    def _clear(self, request: dict) -> dict:
        """Empty the live view of a run or a space (None: all). A clear record goes into each affected run's
        log, so a restart keeps the view cleared; the stored frames stay and remain exportable."""
        run, space = _run_arg(request), _space_arg(request)
        with self._write_lock:
            targets = self.state.run_names(run)
            if space is None:  # a run may have sent update sizes before any frame
                targets += [name for name in self.state.adapter if run in (None, name) and name not in targets]
            self.state.clear(run, space)
            for name in targets:
                for cleared in (*SPACES, ADAPTER_KIND) if space is None else [space]:
                    self.store.mark_cleared(name, cleared)
                self.maps.discard(name, SPACES if space is None else [space])
        return {"ok": True, "cleared": {"runs": targets, "space": space}}

    def _delete(self, request: dict) -> dict:
        """Delete one run's stored data (log, saved maps, exports) and drop it from the live view."""
        run = _run_arg(request)
        if run is None:
            raise ValueError("delete needs the run to delete")
        with self._write_lock:
            self.state.forget(run)
            self.maps.discard(run, SPACES)
            folder = self.store.log_path(run).parent
            if folder.exists():
                try:
                    self.store.delete_run_dir(folder.name)
                except OSError as exc:
                    raise ValueError(f"cannot delete {folder}: {exc}") from None
        return {"ok": True, "deleted": run}

    def _set_paused(self, paused: bool) -> dict:
        self.state.set_paused(paused)
        return {"ok": True, "paused": paused}

    def _refit(self, request: dict) -> dict:
        self.state.request_refit(_run_arg(request), _space_arg(request))
        return {"ok": True}


    def _compare(self, request: dict) -> dict:
        """The latest joint map of two runs; asking also marks the pair for the projection loop to (re)fit."""
        pair = compare.check_pair(request.get("runs"))
        space = _space_arg(request) or "lora"
        since = request.get("since")
        if since is not None and (isinstance(since, bool) or not isinstance(since, int)):
            raise ValueError("since must be an integer version or null")
        for run in pair:
            self._check_run({"run": run})
        key = tuple((run, self.state.buffer_stamp(run, space)) for run in pair)  # as pair_key of the rows
        return compare.compare_reply(pair, space, self.compares.request(pair, space, key, time.time()), since,
                                     encoding_arg(request))

    def _history(self, request: dict) -> dict:
        space = _space_arg(request)
        if space is None:
            raise ValueError("history needs a space: latent, lora or prompt")
        version = request.get("version")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise ValueError("version must be an integer or null")
        return self.state.history(_run_arg(request), space, version, encoding_arg(request))

    def _adapter(self, request: dict) -> dict:
        run = _run_arg(request)
        if run is None:
            raise ValueError("adapter needs the run")
        return self.state.adapter_reply(run)

    def _set(self, request: dict) -> dict:
        """Change projection settings while running; each is validated like its start-up flag."""
        from acestep_viz.collector.options import BUFFER_SIZE, N_NEIGHBORS, PROJECTION_INTERVAL

        changed = {}
        for setting in (N_NEIGHBORS, PROJECTION_INTERVAL, BUFFER_SIZE):
            if request.get(setting.name) is not None:
                changed[setting.name] = setting.convert(request[setting.name], setting.name)
        if not changed:
            raise ValueError("set takes n_neighbors, projection_interval_s and/or buffer_size")
        self.n_neighbors = self.state.n_neighbors = changed.get("n_neighbors", self.n_neighbors)
        self.projection_interval_s = changed.get("projection_interval_s", self.projection_interval_s)
        self.state.configure(buffer_size=changed.get("buffer_size"))
        if "n_neighbors" in changed:
            self.state.request_refit(None, None)
        return {"ok": True, **changed}


    def _export(self, request: dict) -> dict:
        """Write the run to files under the store (a client may not choose where the collector writes)."""
        fmt = request.get("format")
        if fmt not in EXPORT_FORMATS:
            raise ValueError(f"format must be one of {', '.join(EXPORT_FORMATS)}")
        run = _run_arg(request) or self.state.latest_run()
        if run is None:
            raise ValueError("no run to export: the collector has no data")
        if fmt == "gif":
            return self._export_gif(run)
        spaces = self._stored_rows(run).export_rows(run, maps=self.state)
        target = self.store.export_dir(run) / f"{fmt}-{time.strftime('%Y%m%d-%H%M%S')}"
        if fmt == "npz":
            files = [write_npz(target / f"{run_dir_name(run)}.npz", spaces)]
        else:
            files = write_tensorboard(target, spaces)
        return {"ok": True, "run": run, "format": fmt, "path": str(target), "files": [str(f) for f in files],
                "rows": {s.space: len(s.meta) for s in spaces}}

    def _stored_rows(self, run: str) -> CollectorState:
        """The run as its stored frames rebuild it, cleared rows included: what an export holds."""
        rebuilt = CollectorState(buffer_size=self.state.buffer_size)
        for parts in self.store.frames_of(run):
            if is_adapter_topic(parts[0]):
                continue  # update sizes, not rows
            try:
                rebuilt.accept(decode(parts))
            except (ProtocolError, BufferReject) as exc:
                self.state.reject(f"export_{exc.reason}")
        return rebuilt

    def _export_gif(self, run: str) -> dict:
        """The run's map history as an animated GIF: one picture per training step, three panels."""
        run, history = self.state.history_frames(run)
        if not any(history.values()):
            raise ValueError(f"no map history to export for run {run!r}")
        target = self.store.export_dir(run) / f"gif-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            path, steps = write_gif(target / f"{run_dir_name(run)}.gif", history)
        except OSError as exc:
            raise ValueError(f"cannot write the GIF under {target}: {exc}") from None
        return {"ok": True, "run": run, "format": "gif", "path": str(target), "files": [str(path)],
                "steps": steps, "frames": {space: len(frames) for space, frames in history.items()}}


class UnknownRun(ValueError):
    """A request named a run that is neither live nor kept in the store."""


def _run_arg(request: dict) -> str | None:
    run = request.get("run")
    if run is not None and not isinstance(run, str):
        raise ValueError("run must be a string or null")
    return run


def _space_arg(request: dict) -> str | None:
    space = request.get("space")
    if space is not None and space not in SPACES:
        raise ValueError(f"space must be one of {', '.join(SPACES)} or null")
    return space
