"""The projection worker: a child process that imports PaCMAP once and fits layouts on request.

Running PaCMAP in its own process keeps its numba kernels and their CPU time away from the
collector's ingest and query threads (no shared GIL). The parent and the child speak over the
child's stdin/stdout: each message is a 4-byte little-endian length, a JSON header, then raw
array bytes whose size the header gives. No pickle.
"""
from __future__ import annotations

import json
import logging
import os
import struct
import subprocess
import sys
import threading
import time
from typing import BinaryIO

import numpy as np

_LEN = struct.Struct("<I")


class ProjectorError(RuntimeError):
    pass


def write_message(stream: BinaryIO, header: dict, *arrays: np.ndarray) -> None:
    body = json.dumps(header).encode()
    stream.write(_LEN.pack(len(body)) + body)
    for array in arrays:
        stream.write(np.ascontiguousarray(array).tobytes())
    stream.flush()


def read_header(stream: BinaryIO) -> dict:
    raw = _read_exact(stream, _LEN.size)
    return json.loads(_read_exact(stream, _LEN.unpack(raw)[0]))


def read_array(stream: BinaryIO, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    count = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer(_read_exact(stream, count), dtype=dtype).reshape(shape)


def _read_exact(stream: BinaryIO, count: int) -> bytes:
    chunks, remaining = [], count
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            raise EOFError("projection worker pipe closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


class Projector:
    """Parent side: starts the worker, waits for its warm-up in the background, sends fits."""

    def __init__(self, numba_cache_dir: str | None = None):
        self.numba_cache_dir = numba_cache_dir
        self.proc: subprocess.Popen | None = None
        self.ready = threading.Event()
        self.failed: str | None = None
        self.warmup_s: float | None = None
        self._lock = threading.Lock()

    def start(self) -> "Projector":
        env = dict(os.environ)
        if self.numba_cache_dir:
            os.makedirs(self.numba_cache_dir, exist_ok=True)
            env["NUMBA_CACHE_DIR"] = self.numba_cache_dir
        self.proc = subprocess.Popen([sys.executable, "-m", "acestep_viz.collector.projector"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env)
        threading.Thread(target=self._await_ready, name="projector-warmup", daemon=True).start()
        return self

    def _await_ready(self) -> None:
        try:
            hello = read_header(self.proc.stdout)
            self.warmup_s = hello.get("warmup_s")
            self.ready.set()
        except (EOFError, ValueError, OSError) as exc:
            self.failed = f"projection worker did not start: {exc}"

    def fit(self, vectors: np.ndarray, n_neighbors: int, init: np.ndarray | None = None,
            held: np.ndarray | None = None, timeout: float = 600.0) -> tuple[np.ndarray, float]:
        """Blocking: returns (coords (n, 2), seconds the fit took). With ``init``, a warm fit from
        it whose ``held`` rows (all when None) stay anchored to their place."""
        if not self.ready.wait(timeout):
            raise ProjectorError(self.failed or "projection worker is still warming up")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        header = {"n": vectors.shape[0], "d": vectors.shape[1], "n_neighbors": n_neighbors,
                  "init": init is not None}
        arrays = (vectors,)
        if init is not None:
            held = np.ones(len(vectors), dtype=bool) if held is None else held
            arrays += (np.asarray(init, dtype="<f8"), np.asarray(held, dtype="u1"))
        with self._lock:
            try:
                write_message(self.proc.stdin, header, *arrays)
                reply = read_header(self.proc.stdout)
                if not reply.get("ok"):
                    raise ProjectorError(reply.get("error", "fit failed"))
                coords = read_array(self.proc.stdout, (vectors.shape[0], 2), "<f8")
            except (EOFError, OSError, ValueError) as exc:
                raise ProjectorError(f"projection worker failed: {exc}") from exc
        return coords, float(reply["seconds"])

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


def limit_blas_threads() -> None:
    """One thread for every BLAS loaded in this process. PaCMAP's numba kernels use the cores in
    parallel; an idle BLAS pool's threads spin between calls and take cores from them, which makes
    fits slower and their time erratic on a small machine (figures: docs/benchmarks.md)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def _serve(inp: BinaryIO, out: BinaryIO) -> None:
    from acestep_viz.collector.projection import fit_layout

    started = time.perf_counter()
    warmup = np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32)
    fit_layout(warmup, 10, fit_layout(warmup, 10))  # compile the kernels of cold and warm fits
    limit_blas_threads()  # after the warm-up: every BLAS the fits use is loaded by now
    write_message(out, {"ready": True, "warmup_s": time.perf_counter() - started})
    while True:
        try:
            job = read_header(inp)
        except EOFError:
            return
        vectors = read_array(inp, (job["n"], job["d"]), "<f4")
        init = read_array(inp, (job["n"], 2), "<f8") if job.get("init") else None
        held = read_array(inp, (job["n"],), "u1").astype(bool) if job.get("init") else None
        started = time.perf_counter()
        try:
            coords = fit_layout(vectors, job["n_neighbors"], init, held)
        except Exception as exc:  # reported to the parent, which counts it; the worker lives on
            write_message(out, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
            continue
        write_message(out, {"ok": True, "seconds": time.perf_counter() - started}, coords.astype("<f8"))


def main() -> None:
    # Small early fits make PaCMAP warn about shrinking its pair counts on every call: expected, not news.
    logging.getLogger("pacmap").setLevel(logging.ERROR)
    # Keep the protocol pipe private: PaCMAP prints chatter to stdout, which goes nowhere.
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    _serve(sys.stdin.buffer, protocol_out)


if __name__ == "__main__":
    main()
