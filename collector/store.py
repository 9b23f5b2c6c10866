"""The durable run store: one append-only log of accepted frames per run.

Layout: ``<store>/<run-dir>/frames.avz``, a sequence of records::

    b"AVZ1" | u32 topic_len | u32 header_len | u32 payload_len | u32 crc32 | topic | header | payload

(little-endian; the CRC covers topic, header and payload). The three parts are exactly the
wire frame, so a record is decoded by ``acestep_viz.wire.decode`` like a live frame. A
record cut short by a crash or with a bad CRC ends the readable log: reading stops there and
appending first truncates the torn tail. No pickle.

Control records use the same framing (so the CRC and torn-tail rules cover them) with the topic
``CONTROL_TOPIC``, which has no ``/`` and so is never a frame's ``<run>/<space>``; their header is
a JSON object without ``v`` (``decode`` would refuse it) and their payload is empty. One op so far:
``{"op": "clear", "space": S, "at": T}`` -- frames of space S stored before it are not replayed.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import re
import shutil
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Iterator

from acestep_viz.collector.errors import CountedErrors

log = logging.getLogger("acestep_viz.collector")

MAGIC = b"AVZ1"
WRITE_QUEUE = 256  # records the writer may fall behind before ingest waits for it
_HEAD = struct.Struct("<4sIIII")
LOG_NAME = "frames.avz"
CONTROL_TOPIC = b"!control"
MAPS_FOLDER = "projections"  # the latest map of each space (collector/saved_maps.py)
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


# Names Windows reserves for devices, with or without an extension: "con" or "nul.txt" cannot be files there.
_WINDOWS_DEVICES = re.compile(r"(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?", re.I)


def run_dir_name(run: str) -> str:
    """A directory name for a run id that cannot escape the store and is valid on Windows too (the same
    name on every system, so a store can move between machines)."""
    if _SAFE.fullmatch(run) and not run.endswith(".") and not _WINDOWS_DEVICES.fullmatch(run):
        return run
    return "x-" + run.encode().hex()[:180]


def _buffer(part) -> memoryview:
    """A byte view of a message part (bytes, memoryview or zmq.Frame) without copying it."""
    view = memoryview(getattr(part, "buffer", part))
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def read_records(path: Path) -> Iterator[tuple[int, list[bytes]]]:
    """Yield (end offset, [topic, header, payload]) for each intact record."""
    with open(path, "rb") as f:
        data = f.read()
    yield from _records(data)


def _records(data: bytes) -> Iterator[tuple[int, list[bytes]]]:
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


def control_record(op: str, **fields) -> list[bytes]:
    """The three parts of a control record (see the module doc)."""
    header = json.dumps({"op": op, **fields}, separators=(",", ":")).encode()
    return [CONTROL_TOPIC, header, b""]


def parse_control(parts: list[bytes]) -> dict | None:
    """A control record's fields, or None for a data frame (or a control record this version cannot read)."""
    if bytes(parts[0]) != CONTROL_TOPIC:
        return None
    try:
        fields = json.loads(bytes(parts[1]))
    except (UnicodeDecodeError, ValueError):
        return None
    return fields if isinstance(fields, dict) else None


def frame_space(parts: list[bytes]) -> bytes:
    """The space of a stored data frame, read from its topic ``<run>/<space>`` without decoding it."""
    return bytes(parts[0]).rpartition(b"/")[2]


def live_frames(path: Path) -> Iterator[list[bytes]]:
    """The data frames of one log that rebuild its run: control records honoured, not yielded."""
    with open(path, "rb") as f:
        data = f.read()
    cleared: dict[bytes, int] = {}  # space -> index of its last clear
    for index, (_, parts) in enumerate(_records(data)):
        control = parse_control(parts)
        if control and control.get("op") == "clear" and isinstance(control.get("space"), str):
            cleared[control["space"].encode()] = index
    for index, (_, parts) in enumerate(_records(data)):
        if parts[0] != CONTROL_TOPIC and index > cleared.get(frame_space(parts), -1):
            yield parts


def stored_frames(path: Path) -> Iterator[list[bytes]]:
    """Every data frame of one log, cleared ones too (clearing empties the live view, not the store)."""
    with open(path, "rb") as f:
        data = f.read()
    for _, parts in _records(data):
        if parts[0] != CONTROL_TOPIC:
            yield parts


def stored_runs(root: str | os.PathLike) -> list[dict]:
    """The runs kept under ``root``, newest first: name (from the first frame's topic), folder, size, mtime."""
    rows = []
    for path in RunStore.logs_in(root):
        first = next((parts for _, parts in read_records(path) if parts[0] != CONTROL_TOPIC), None)
        topic = bytes(first[0]).decode("utf-8", "replace") if first else ""
        stat = path.stat()
        rows.append({"run": topic.rpartition("/")[0] or path.parent.name, "path": str(path.parent),
                     "mb": round(stat.st_size / 2**20, 2), "modified": stat.st_mtime})
    return sorted(rows, key=lambda row: row["modified"], reverse=True)


def _write_record(f, parts: list) -> int:
    """Write one record (three parts: bytes, memoryview or zmq.Frame) to ``f``; returns its size."""
    topic, header, payload = (_buffer(p) for p in parts)
    crc = zlib.crc32(payload, zlib.crc32(header, zlib.crc32(topic)))
    f.write(_HEAD.pack(MAGIC, topic.nbytes, header.nbytes, payload.nbytes, crc))
    for part in (topic, header, payload):
        f.write(part)
    return _HEAD.size + topic.nbytes + header.nbytes + payload.nbytes


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` survive a machine crash. Windows cannot open a folder as a file; NTFS
    journals the rename itself."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RunStore:
    """Appends accepted frames to per-run logs. ``append`` queues the record; a writer thread
    checksums and writes it (both release the GIL, so they overlap with ingest's decoding) and
    hands data to the OS every 0.25 s; another thread fsyncs every second. A kill -9 loses at
    most ~0.25 s, a machine crash ~1 s. Ingest waits for the disk only when the writer is
    ``WRITE_QUEUE`` records behind. Every other operation first waits for queued records."""

    def __init__(self, root: str | os.PathLike, flush_every_s: float = 0.25, fsync_every_s: float = 1.0):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.flush_every_s = flush_every_s
        self._files: dict[str, object] = {}
        self.fsync_errors = 0
        self.write_errors = CountedErrors(log)
        self._lock = threading.RLock()  # guards _files and every write, flush, fsync and close of them
        self._closed = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=WRITE_QUEUE)
        self._writer = threading.Thread(target=self._write_loop, name="store-writer", daemon=True)
        self._writer.start()
        self._syncer = threading.Thread(target=self._sync_loop, args=(fsync_every_s,), name="store-fsync",
                                        daemon=True)
        self._syncer.start()

    def export_dir(self, run: str) -> Path:
        return self.root / run_dir_name(run) / "exports"

    def log_path(self, run: str) -> Path:
        return self.root / run_dir_name(run) / LOG_NAME

    def map_path(self, run: str, space: str) -> Path:
        return self.root / run_dir_name(run) / MAPS_FOLDER / f"{space}.npz"

    def append(self, run: str, parts: list) -> None:
        """Queue one record (three parts, kept alive until written) for the writer thread."""
        self._queue.put((run, parts))

    def wait_written(self) -> None:
        """Return once every record queued before this call is written (or counted as a write error)."""
        reached = threading.Event()
        self._queue.put(reached)  # the writer sets it when it gets there, after the records before it
        while not reached.wait(0.5):
            if not self._writer.is_alive():
                return  # closed: it wrote everything before it stopped

    def log_size(self, run: str) -> int:
        """Bytes in the run's log as the OS has them (the last ~0.25 s may still be buffered)."""
        self.wait_written()
        try:
            return self.log_path(run).stat().st_size
        except FileNotFoundError:
            return 0

    def rewrite(self, run: str, records) -> int:
        """Replace the run's log by ``records`` (lists of three parts), atomically: written to a
        temporary file, synced, renamed over the log. Returns the new size. The caller makes sure
        nothing is appended to the run meanwhile."""
        self.wait_written()
        self._close_file(run)
        path = self.log_path(run)
        tmp = path.with_name(LOG_NAME + ".tmp")
        try:
            with open(tmp, "wb", buffering=1 << 20) as f:
                size = sum(_write_record(f, parts) for parts in records)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)
        return size

    def last_written(self) -> dict[str, float]:
        """{run folder name: time its log was last written} for every run in the store."""
        self.flush()
        times = {}
        for path in self.logs():
            try:
                times[path.parent.name] = path.stat().st_mtime
            except FileNotFoundError:
                continue  # deleted meanwhile
        return times

    def delete_run_dir(self, name: str) -> None:
        """Delete a run folder (log, saved maps, exports): retention. Raises OSError if it cannot."""
        self.wait_written()
        with self._lock:
            runs = [run for run in self._files if run_dir_name(run) == name]
        for run in runs:
            self._close_file(run)
        shutil.rmtree(self.root / name)

    def mark_cleared(self, run: str, space: str) -> None:
        """Record that ``space`` of ``run`` was cleared: a replay skips its frames stored before this.
        Handed to the OS at once, so the clear survives a kill -9 right after it."""
        self.append(run, control_record("clear", space=space, at=time.time()))
        self.flush()

    def flush(self) -> None:
        """Write what is queued and hand it to the OS (enough to survive the process being killed)."""
        self.wait_written()
        self._flush_files()

    def _flush_files(self) -> None:
        with self._lock:
            for f in self._files.values():
                f.flush()

    def _write_loop(self) -> None:
        """The writer thread: one record at a time, in order; flushes when idle or every ``flush_every_s``."""
        last_flush, unflushed = time.monotonic(), False
        while True:
            try:
                item = self._queue.get(timeout=self.flush_every_s)
            except queue.Empty:
                item = ()
            if isinstance(item, threading.Event):
                item.set()
                continue
            if item is None:
                return
            try:
                with self._lock:
                    if item:
                        run, parts = item
                        _write_record(self._file(run), parts)
                        unflushed = True
                    if unflushed and (not item or time.monotonic() - last_flush >= self.flush_every_s):
                        self._flush_files()
                        last_flush, unflushed = time.monotonic(), False
            except Exception as exc:  # a full or failing disk costs durability, never the collector
                self.write_errors.record("run store: writing failed; frames stay in memory", exc)

    def _sync_loop(self, every_s: float) -> None:
        while not self._closed.wait(every_s):
            with self._lock:  # duplicates: a file closed meanwhile cannot hand its number to another
                fds = [os.dup(f.fileno()) for f in self._files.values()]
            for fd in fds:
                try:
                    os.fsync(fd)
                except OSError:  # the disk refused: counted, ingest goes on
                    self.fsync_errors += 1
                finally:
                    os.close(fd)

    def replay(self) -> Iterator[list[bytes]]:
        """Every intact stored frame of every run that a clear has not dropped, run by run, in the order
        they were accepted."""
        self.flush()
        for path in self.logs():
            yield from live_frames(path)

    def logs(self) -> list[Path]:
        return self.logs_in(self.root)

    @staticmethod
    def logs_in(root: str | os.PathLike) -> list[Path]:
        return sorted(Path(root).glob(f"*/{LOG_NAME}"))

    def has_run(self, run: str) -> bool:
        return self.log_path(run).exists()

    def frames_of(self, run: str) -> Iterator[list[bytes]]:
        """Every stored data frame of ``run`` (see ``stored_frames``); nothing for a run without a log."""
        self.flush()
        path = self.log_path(run)
        return stored_frames(path) if path.exists() else iter(())

    def forget(self, run: str) -> None:
        """Delete a run's log: the user asked for its stored data to go."""
        self.wait_written()
        self._close_file(run)
        path = self.log_path(run)
        if path.exists():
            path.unlink()

    def _close_file(self, run: str) -> None:
        with self._lock:
            f = self._files.pop(run, None)
            if f is not None:
                f.close()

    def _file(self, run: str):
        """The run's open log (the caller holds ``_lock``)."""
        f = self._files.get(run)
        if f is None:
            path = self.log_path(run)
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                keep = intact_length(path)
                if keep != path.stat().st_size:
                    os.truncate(path, keep)  # drop a torn tail so new records stay readable
            f = self._files[run] = open(path, "ab", buffering=1 << 20)
        return f

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._queue.put(None)  # after every queued record
        self._writer.join(30)
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
