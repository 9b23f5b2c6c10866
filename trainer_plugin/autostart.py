"""Start the sidecar (``acestep-viz up``) from the training process when no collector answers.

With ``autostart`` on, ``attach`` first asks the collector's query endpoint (``ACESTEP_VIZ_COLLECTOR``) for a
ping. With no answer it takes an exclusive lock file in the store (so two trainers starting together end
with one sidecar), asks again, and only then starts ``python -m acestep_viz up`` on the trainer's ingest
endpoint, detached so that it outlives the run (a session of its own on POSIX, a detached process group on
Windows), logging to ``<store>/sidecar.log``. It waits a bounded time for the ping. The dashboard port and
the store come to the sidecar through the usual variables (``ACESTEP_VIZ_PORT``, ``ACESTEP_VIZ_STORE``).
Nothing here binds a port or passes ``--allow-remote``: ``up`` refuses non-loopback addresses without it.
``ensure_collector`` raises only ``AutostartError``; ``start_sidecar``, which ``attach`` calls, turns any
failure into the one warning the trainer logs.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import zmq

from acestep_viz.security import CURVE_DIR
from acestep_viz.settings import COLLECTOR_ENDPOINT, STORE, SettingError, resolve

log = logging.getLogger("acestep_viz")

LOG_NAME = "sidecar.log"
LOCK_NAME = "sidecar.lock"


class AutostartError(RuntimeError):
    """The sidecar could not be found or started; the message says why and what to do."""


def collector_answers(query: str, timeout_ms: int = 300, curve_dir: str | None = None) -> bool:
    """True when a collector answers a ping on ``query`` within ``timeout_ms``."""
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
    sock.setsockopt(zmq.SNDTIMEO, timeout_ms)
    try:
        if curve_dir:
            from acestep_viz.security import make_client

            make_client(sock, curve_dir)
        sock.connect(query)
        sock.send(b'{"op": "ping"}')
        reply = json.loads(sock.recv())
        return isinstance(reply, dict) and reply.get("ok") is True
    except (zmq.ZMQError, ValueError):
        return False
    finally:
        sock.close()


@contextmanager
def exclusive_lock(path: Path, timeout_s: float) -> Iterator[None]:
    """Hold an OS lock on ``path`` (released when the process dies, so never stale); AutostartError after
    ``timeout_s`` of waiting."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        deadline = time.monotonic() + timeout_s
        while not _try_lock(handle):
            if time.monotonic() > deadline:
                raise AutostartError(f"another process holds {path} (starting the sidecar?) for over {timeout_s:.0f} s")
            time.sleep(0.05)
        try:
            yield
        finally:
            _unlock(handle)


def _try_lock(handle) -> bool:
    if os.name == "nt":
        import msvcrt

        try:
            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _unlock(handle) -> None:
    if os.name == "nt":
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def sidecar_command(ingest: str, query: str, python: str = sys.executable) -> list[str]:
    return [python, "-m", "acestep_viz", "up", "--ingest", ingest, "--query", query]


def detached() -> dict:
    """Popen arguments that let the child outlive this process and its terminal's Ctrl-C."""
    if os.name == "nt":
        flags = subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP
        return {"creationflags": flags}
    return {"start_new_session": True}


def ensure_collector(ingest: str, query: str, store: str, wait_s: float = 30.0,
                     curve_dir: str | None = None) -> tuple[str, int | None]:
    """("running", None) if a collector answers on ``query``; ("started", pid of ``acestep-viz up``) once a
    sidecar this call started answers; AutostartError otherwise (training goes on without a collector: its
    frames are dropped and counted)."""
    if collector_answers(query, curve_dir=curve_dir):
        return "running", None
    store_dir = Path(store)
    with exclusive_lock(store_dir / LOCK_NAME, timeout_s=wait_s + 10):  # the holder waits up to wait_s
        if collector_answers(query, curve_dir=curve_dir):
            return "running", None  # the trainer that held the lock started it
        log_path = store_dir / LOG_NAME
        try:
            with open(log_path, "ab") as log_file:
                child = subprocess.Popen(sidecar_command(ingest, query), stdin=subprocess.DEVNULL, stdout=log_file,
                                         stderr=subprocess.STDOUT, close_fds=True, **detached())
        except OSError as exc:
            raise AutostartError(f"cannot start `acestep-viz up`: {exc}") from None
        deadline = time.monotonic() + wait_s
        while not collector_answers(query, curve_dir=curve_dir):
            if child.poll() is not None:
                raise AutostartError(f"`acestep-viz up` exited with code {child.returncode}; see {log_path}")
            if time.monotonic() > deadline:
                raise AutostartError(f"the sidecar started (pid {child.pid}) but did not answer on {query} within "
                                     f"{wait_s:.0f} s; see {log_path}")
            time.sleep(0.2)
    return "started", child.pid


def start_sidecar(ingest: str) -> None:
    """Find or start the sidecar for ``ingest``, with the query endpoint, store and keys from the usual settings."""
    try:
        cfg = resolve([COLLECTOR_ENDPOINT, STORE, CURVE_DIR])
        state, pid = ensure_collector(ingest, cfg["collector"], cfg["store"], curve_dir=cfg["curve_dir"])
    except (AutostartError, SettingError, OSError) as exc:
        log.warning("acestep_viz: autostart: %s; training goes on, and its embeddings are dropped until a "
                    "collector runs (`acestep-viz up`)", exc)
        return
    if state == "started":
        log.info("acestep_viz: started the sidecar (acestep-viz up, pid %d) for %s; its log and the dashboard URL "
                 "are in %s", pid, ingest, Path(cfg["store"]) / LOG_NAME)
