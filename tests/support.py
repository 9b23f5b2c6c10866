"""Helpers for tests that run the real processes on free loopback ports."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import zmq

from acestep_viz.wire import Frame, encode

REPO = Path(__file__).resolve().parent.parent
NUMBA_CACHE = REPO / ".cache" / "numba"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.2):
    """Poll until predicate returns something truthy; return it, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(interval)


def query(endpoint: str, request: dict, timeout: float = 3.0) -> dict:
    """One request/reply round trip to a collector's query endpoint."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
    sock.setsockopt(zmq.SNDTIMEO, int(timeout * 1000))
    try:
        sock.connect(endpoint)
        sock.send(json.dumps(request).encode())
        return json.loads(sock.recv())
    finally:
        sock.close()


def try_query(endpoint: str, request: dict, timeout: float = 1.0) -> dict | None:
    try:
        return query(endpoint, request, timeout)
    except zmq.ZMQError:
        return None


def child_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("NUMBA_CACHE_DIR", str(NUMBA_CACHE))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class ManagedProcess:
    """A child process stopped by its own pid: SIGTERM, then SIGKILL after a grace period."""

    def __init__(self, args: list[str], env: dict | None = None, log_path: Path | None = None):
        self.args = args
        self.env = child_env(env)
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self):
        self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.args, env=self.env, cwd=REPO, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self, grace: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
            self._log = None
        return self.proc.returncode

    def kill9(self):
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class CollectorProcess(ManagedProcess):
    """`acestep-viz collector` on free loopback ports."""

    def __init__(self, store_dir: Path, env: dict | None = None, extra_args: list[str] = (),
                 ingest: str | None = None, query_endpoint: str | None = None):
        self.ingest = ingest or f"tcp://127.0.0.1:{free_port()}"
        self.query = query_endpoint or f"tcp://127.0.0.1:{free_port()}"
        self.store_dir = Path(store_dir)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "acestep_viz", "collector", "--ingest", self.ingest,
                "--query", self.query, "--store", str(self.store_dir), *extra_args]
        super().__init__(args, env, self.store_dir.parent / f"collector-{self.query.rsplit(':', 1)[1]}.log")

    def wait_ready(self, timeout: float = 120.0, projections: bool = True) -> dict:
        """Wait until the query endpoint answers (and, by default, PaCMAP has warmed up)."""
        def ready():
            if not self.alive():
                raise RuntimeError(f"collector exited early:\n{self.log_text()}")
            stats = try_query(self.query, {"op": "stats"})
            if stats and (not projections or not stats.get("warming_up")):
                return stats
            return None
        return wait_for(ready, timeout, 0.3)

    def __enter__(self):
        self.start()
        self.wait_ready(projections=False, timeout=60)
        return self


class DashboardProcess(ManagedProcess):
    """The dashboard on a free loopback port, talking to a collector's query endpoint."""

    def __init__(self, collector_query: str, interval_s: float = 1, env: dict | None = None,
                 log_dir: Path | None = None, extra_args: list[str] = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        args = [sys.executable, "-m", "acestep_viz", "dashboard", "--collector", collector_query, "--host", "127.0.0.1",
                "--port", str(self.port), "--interval", str(interval_s), *extra_args]
        log = (log_dir / f"dashboard-{self.port}.log") if log_dir else None
        super().__init__(args, env, log)

    def wait_ready(self, timeout: float = 60.0):
        import urllib.request

        def ready():
            if not self.alive():
                raise RuntimeError(f"dashboard exited early:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as resp:
                    return resp.status == 200
            except OSError:
                return False
        return wait_for(ready, timeout, 0.3)

    def __enter__(self):
        self.start()
        self.wait_ready()
        return self


GENRES = ("metal", "jazz", "ambient", "techno", "folk")


def synthetic_frames(run: str = "test-run", n_clips: int = 30, steps: int = 3, dim: int = 64,
                     lora_layers: int = 3, seed: int = 0, prompt_suffix: str = "") -> list[Frame]:
    """Genre-structured fake frames: one latent and prompt row per clip, LoRA rows every step."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, size=(len(GENRES), dim))
    clips = [(f"{GENRES[i % len(GENRES)]}_{i:03d}", i % len(GENRES)) for i in range(n_clips)]
    frames: list[Frame] = []

    def vectors(genre_ids, noise=1.0):
        return (centres[genre_ids] + rng.normal(0, noise, size=(len(genre_ids), dim))).astype(np.float16)

    ids = [key for key, _ in clips]
    genres = np.array([g for _, g in clips])
    prompts = [f"{GENRES[g]} song, 120 bpm{prompt_suffix}" for g in genres]
    for space in ("latent", "prompt"):
        meta = [{"prompt": p} for p in prompts]
        frames.append(Frame(run=run, space=space, step=0, vectors=vectors(genres), ids=ids, meta=meta,
                            sent_at=time.time()))
    for step in range(steps):
        for layer in range(lora_layers):
            meta = [{"prompt": p, "loss": 0.5 / (step + 1), "timestep": 500.0, "layer": f"block{layer}.to_out.0"}
                    for p in prompts]
            frames.append(Frame(run=run, space="lora", step=step, micro_batch=0, vectors=vectors(genres, 1.0 + layer),
                                ids=ids, meta=meta, sent_at=time.time()))
    return frames


def send_frames(ingest_endpoint: str, frames: list[Frame], timeout: float = 10.0) -> None:
    """Connect a publisher, wait for the collector's subscription, send every frame."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.setsockopt(zmq.SNDHWM, 100000)
    try:
        sock.connect(ingest_endpoint)
        if not sock.poll(int(timeout * 1000)):
            raise TimeoutError(f"no subscriber on {ingest_endpoint} within {timeout} s")
        sock.recv()  # the subscription message
        for frame in frames:
            sock.send_multipart(encode(frame), copy=False)
    finally:
        sock.close()


def projected_snapshot(query_endpoint: str, run: str, minimum: int = 10) -> dict | None:
    """``run``'s snapshot once every space shows at least ``minimum`` points, else None (for ``wait_for``)."""
    snap = query(query_endpoint, {"op": "snapshot", "run": run, "since": None})
    spaces = (snap.get("spaces") or {}).values()
    ready = snap.get("run") == run and len(spaces) == 3 and all(s["projected"] >= minimum for s in spaces)
    return snap if ready else None



def install_fake_fit(state, job) -> None:
    """What the collector's projection loop does with a fit job, minus PaCMAP: a full fit gets arbitrary
    coordinates, a placement places its new rows as the collector does."""
    from acestep_viz.collector.placement import extend_layout

    if job.full:
        coords = np.random.default_rng(len(job.keys)).normal(size=(len(job.keys), 2))
    else:
        coords, _ = extend_layout(job.previous.keys, job.previous.coords, job.keys, job.vectors, anchors=job.anchors)
    state.install(job, coords, 0.0)
