"""The durable run store: one append-only log of accepted frames per run.

Layout: ``<store>/<run-dir>/frames.avz``, a sequence of records::

    b"AVZ1" | u32 topic_len | u32 header_len | u32 payload_len | u32 crc32 | topic | header | payload

(little-endian; the CRC covers topic, header and payload). The three parts are exactly the
wire frame, so a record is decoded by ``collector.protocol.decode`` like a live frame. A
record cut short by a crash or with a bad CRC ends the readable log: reading stops there and
appending first truncates the torn tail. No pickle.
"""
from __future__ import annotations

import os
import re
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Iterator

MAGIC = b"AVZ1"
_HEAD = struct.Struct("<4sIIII")
LOG_NAME = "frames.avz"
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def run_dir_name(run: str) -> str:
    """A directory name for a run id that cannot escape the store."""
    return run if _SAFE.fullmatch(run) else "x-" + run.encode().hex()[:180]


def default_store_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "acestep-viz", "runs")


def _buffer(part) -> memoryview:
    """A byte view of a message part (bytes, memoryview or zmq.Frame) without copying it."""
    view = memoryview(getattr(part, "buffer", part))
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def read_records(path: Path) -> Iterator[tuple[int, list[bytes]]]:
    """Yield (end offset, [topic, header, payload]) for each intact record."""
    with open(path, "rb") as f:
        data = f.read()
    offset = 0
    while offset + _HEAD.size <= len(data):
        magic, t_len, h_len, p_len, crc = _HEAD.unpack_from(data, offset)
        start = offset + _HEAD.size
        end = start + t_len + h_len + p_len
        if magic != MAGIC or end > len(data) or zlib.crc32(data[start:end]) != crc:
            return
        parts = [data[start:start + t_len], data[start + t_len:start + t_len + h_len],
                 data[start + t_len + h_len:end]]
        yield end, parts
        offset = end


def intact_length(path: Path) -> int:
    return max((end for end, _ in read_records(path)), default=0)


class RunStore:
    """Appends accepted frames to per-run logs. The appending thread hands data to the OS every
    0.25 s; a background thread fsyncs every second, so a kill -9 loses at most ~0.25 s and a
    machine crash ~1 s, and ingest never waits for the disk."""

    def __init__(self, root: str | os.PathLike, flush_every_s: float = 0.25, fsync_every_s: float = 1.0):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.flush_every_s = flush_every_s
        self._files: dict[str, object] = {}
        self._last_flush = time.monotonic()
        self.bytes_written = 0
        self.fsync_errors = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._syncer = threading.Thread(target=self._sync_loop, args=(fsync_every_s,), name="store-fsync",
                                        daemon=True)
        self._syncer.start()

    def export_dir(self, run: str) -> Path:
        return self.root / run_dir_name(run) / "exports"

    def log_path(self, run: str) -> Path:
        return self.root / run_dir_name(run) / LOG_NAME

    def append(self, run: str, parts: list) -> None:
        topic, header, payload = (_buffer(p) for p in parts)
        crc = zlib.crc32(payload, zlib.crc32(header, zlib.crc32(topic)))
        f = self._file(run)
        f.write(_HEAD.pack(MAGIC, topic.nbytes, header.nbytes, payload.nbytes, crc))
        for part in (topic, header, payload):
            f.write(part)
        self.bytes_written += _HEAD.size + topic.nbytes + header.nbytes + payload.nbytes

    def maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        """Hand buffered records to the OS (enough to survive the process being killed)."""
        for f in list(self._files.values()):
            f.flush()
        self._last_flush = time.monotonic()

    def _sync_loop(self, every_s: float) -> None:
        while not self._closed.wait(every_s):
            with self._lock:
                fds = [f.fileno() for f in self._files.values()]
            for fd in fds:
                try:
                    os.fsync(fd)
                except OSError:  # closed meanwhile, or the disk refused: counted, ingest goes on
                    self.fsync_errors += 1

    def replay(self) -> Iterator[list[bytes]]:
        """Every intact stored frame of every run, run by run, in the order they were accepted."""
        for path in self.logs():
            for _, parts in read_records(path):
                yield parts

    def logs(self) -> list[Path]:
        return self.logs_in(self.root)

    @staticmethod
    def logs_in(root: str | os.PathLike) -> list[Path]:
        return sorted(Path(root).glob(f"*/{LOG_NAME}"))

    def forget(self, run: str) -> None:
        """Delete a run's log (the user cleared it)."""
        with self._lock:
            f = self._files.pop(run, None)
        if f is not None:
            f.close()
        path = self.log_path(run)
        if path.exists():
            path.unlink()

    def _file(self, run: str):
        f = self._files.get(run)
        if f is None:
            path = self.log_path(run)
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                keep = intact_length(path)
                if keep != path.stat().st_size:
                    os.truncate(path, keep)  # drop a torn tail so new records stay readable
            f = open(path, "ab", buffering=1 << 20)
            with self._lock:
                self._files[run] = f
        return f

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._syncer.join(5)
        with self._lock:
            files, self._files = self._files, {}
        for f in files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
