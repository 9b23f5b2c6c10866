"""Send frames to the collector from a background thread; ``publish`` never blocks training.

The collector *binds* a SUB socket; every trainer rank *connects* an XPUB socket to it. XPUB
(not PUB) with ``XPUB_VERBOSE`` lets the sender thread see each subscription message, which
is how it learns that a collector is listening, or has restarted:

- PUB/SUB silently drops frames nobody has subscribed to yet. Until the first subscription,
  frames wait in a bounded ``pending`` deque (oldest dropped, counted).
- Frozen spaces (latent, prompt) are published once per clip, so losing one loses that clip
  for the whole run. Their frames stay in a bounded cache and are replayed whenever a
  subscription message arrives (collector started late or restarted). The collector must
  treat a frozen row it already has as a duplicate.
- ``XPUB_NODROP`` makes a full send buffer (slow collector) raise EAGAIN instead of dropping
  silently; the frame then waits in ``pending`` and is retried, so every loss is counted.

Items are ``Frame``, ``StepRecord`` or ``AdapterSizes`` objects, or zero-argument callables returning
one (or None); adapter messages are sent as they are. The callables run on the sender thread:
device-to-host waits, row planning and numpy conversion stay off the training thread.
``publish`` is a bounded deque append, with no lock and no wake-up: the
sender thread wakes every ``batch_s`` (sooner once ``WAKE_ITEMS`` are waiting) and handles
whatever queued meanwhile in one go: the records' frames are built together, one per run and
space (``batch_frames``), and ready frames are merged likewise (``coalesce``), so its work and the
collector's are paid per batch rather than per step. This module never imports torch.
"""
from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import Counter, deque
from typing import Callable, Iterator, Union

import zmq
from acestep_viz.trainer_plugin.batch_frames import Segment, build_frames, chunk_frame, chunks, segments
from acestep_viz.trainer_plugin.coalesce import coalesce
from acestep_viz.trainer_plugin.step_record import StepRecord

from acestep_viz.wire import AdapterSizes, Frame, check_shape, encode, encode_adapter, model_name_problem

log = logging.getLogger("acestep_viz")

Item = Union[Frame, StepRecord, AdapterSizes, Callable[[], "Frame | StepRecord | AdapterSizes | None"]]
CURVE_ENV = "ACESTEP_VIZ_CURVE_DIR"
SUBSCRIBE = 1
UNSUBSCRIBE = 0
BATCH_S = 0.5  # how often queued work is sent in one go: per batch, not per step (a step waits about this long at most)
WAKE_ITEMS = 64  # a backlog this long (a burst, or a fast loop) wakes the sender before batch_s is up


def frames_of(item: Item, errors: "ErrorLog") -> list[Frame]:
    """The frames an item stands for: run it if it is deferred, build a step record's frames."""
    value = item() if callable(item) else item
    if value is None:
        return []
    if isinstance(value, StepRecord):
        return build_frames(value, errors)
    return [value]


def frame_count(item: Item) -> int:
    """How many frames an item will make, for counting it as dropped without running it."""
    return getattr(item, "frames", 1)


def take_all(items: deque) -> list:
    """Empty ``items``; safe while another thread appends or takes (each popleft is atomic)."""
    taken = []
    while True:
        try:
            taken.append(items.popleft())
        except IndexError:
            return taken


class ErrorLog:
    """Counts errors by kind and logs only the first of each kind (with its traceback)."""

    def __init__(self, logger: logging.Logger = log):
        self._logger = logger
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def record(self, kind: str, exc: BaseException) -> None:
        with self._lock:
            self._counts[kind] += 1
            first = self._counts[kind] == 1
        if first:
            self._logger.warning("acestep_viz: %s error: %s: %s (further %s errors are only counted; "
                                 "training is not affected)", kind, type(exc).__name__, exc, kind,
                                 exc_info=(type(exc), exc, exc.__traceback__))

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class HandOff:
    """The caller's side of a sender thread: ``put`` is a bounded deque append that never blocks, and
    ``event`` wakes the thread early (once ``WAKE_ITEMS`` wait, or on ``wake``); otherwise the thread
    takes what is there every ``batch_s``. Refused items are counted by the frames they stand for."""

    def __init__(self, size: int):
        self.items: deque = deque()  # appended by the caller's thread, emptied by the sender thread
        self.size = size
        self.queued = self.refused = 0  # written by the caller's thread only
        self.event = threading.Event()

    def put(self, item: Item, accepting: bool = True) -> bool:
        if not accepting or len(self.items) >= self.size:
            self.refused += frame_count(item)
            return False
        self.items.append(item)
        self.queued += 1
        if len(self.items) == WAKE_ITEMS:
            self.event.set()
        return True

    def take(self) -> list:
        return take_all(self.items)

    def __len__(self) -> int:
        return len(self.items)


class Publisher:
    """A connected XPUB socket owned by a daemon thread. Use as a context manager or call ``close``."""

    def __init__(self, endpoint: str, sndhwm: int = 1000, queue_size: int = 256, *,
                 frozen_spaces: tuple[str, ...] = ("latent", "prompt"), frozen_cache_rows: int = 20_000,
                 pending_size: int = 1024, drain_s: float = 1.0, linger_ms: int = 250,
                 context: zmq.Context | None = None, poll_s: float = 0.02, batch_s: float = BATCH_S,
                 curve_dir: str | None = None, model: str | None = None):
        problem = model_name_problem(model) if model is not None else None
        if problem:
            raise ValueError(f"model={model!r}: {problem}")
        self.endpoint = endpoint
        self.model = model  # stamped on every frame: the collector learns which model the run trains
        # CurveZMQ client keys (acestep_viz/security.py); default: $ACESTEP_VIZ_CURVE_DIR, else plain tcp
        self.curve_dir = curve_dir if curve_dir is not None else os.environ.get(CURVE_ENV) or None
        self.errors = ErrorLog()
        self._frozen_spaces = frozenset(frozen_spaces)
        self._handoff = HandOff(queue_size)
        self._cache: deque[tuple[list, int]] = deque()  # (parts, rows) of encoded frozen frames, for replay
        self._cache_rows, self._cache_max_rows = 0, frozen_cache_rows
        self._replay: deque[tuple[list, int]] = deque(maxlen=pending_size)
        self._pending: deque[tuple[list, int]] = deque(maxlen=pending_size)
        self._drain_s = drain_s
        self._linger_ms = linger_ms
        self._poll_s = poll_s
        self._batch_s = batch_s
        self._subscriptions = 0
        self._sent = self._resent = self._dropped_sender = 0  # written by the sender thread only
        self._closed = False
        self._stop = threading.Event()
        self._socket = self._connect(context or zmq.Context.instance(), endpoint, sndhwm, self.curve_dir)
        self._thread = threading.Thread(target=self._run, name="acestep-viz-publisher", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ caller side

    def publish(self, item: Item) -> bool:
        """Queue a frame (or a callable making one). Never blocks; returns False if it was dropped."""
        return self._handoff.put(item, not self._closed)

    def wake(self) -> None:
        """Have the sender thread take what is queued now rather than at its next ``batch_s`` turn."""
        self._handoff.event.set()

    def stats(self) -> dict:
        return {
            "queued": self._handoff.queued,
            "sent": self._sent,
            "dropped": self._handoff.refused + self._dropped_sender,
            "resent": self._resent,
            "queue_depth": len(self._handoff),
            "held": len(self._pending) + len(self._replay),
            "subscribed": self._subscriptions > 0,
            "errors": self.errors.as_dict(),
        }

    def close(self, timeout: float = 3.0) -> None:
        """Send what is queued for up to ``drain_s``, then close the socket. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._handoff.event.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("acestep_viz: publisher thread did not stop within %.1f s; leaving it (daemon)", timeout)

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ sender thread

    @staticmethod
    def _connect(context: zmq.Context, endpoint: str, sndhwm: int, curve_dir: str | None = None) -> zmq.Socket:
        sock = context.socket(zmq.XPUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, sndhwm)
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription message, not only the first per topic
        sock.setsockopt(zmq.XPUB_NODROP, 1)  # full buffer -> EAGAIN, so drops are seen and counted
        try:
            if curve_dir:
                from acestep_viz.security import make_client

                make_client(sock, curve_dir)
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise ValueError(f"cannot connect to {endpoint!r}: {exc}; expected e.g. tcp://127.0.0.1:5557") from None
        except ValueError:  # missing or unreadable CurveZMQ keys: the message says what to fix
            sock.close(linger=0)
            raise
        return sock

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._read_subscriptions()
                self._take()
                self._pump()
                if self._subscriptions > 0 and (self._replay or self._pending):
                    # The collector pushed back: wait for room on the socket, not for the next batch.
                    self._socket.poll(int(self._poll_s * 1000), zmq.POLLOUT)
                elif len(self._handoff) < WAKE_ITEMS:
                    self._handoff.event.wait(self._batch_s)
                self._handoff.event.clear()
            self._drain()
        except Exception as exc:  # the thread must end cleanly whatever happens
            self.errors.record("publisher_thread", exc)
        finally:
            self._socket.close(linger=self._linger_ms)

    def _take(self) -> None:
        """Build, merge and encode everything queued since the last turn."""
        built: list[Segment] = []
        ready: list[Frame] = []
        for item in self._handoff.take():
            self._prepare(item, built, ready)
        now, model = time.time(), self.model
        for frame, count in itertools.chain(coalesce(ready), self._chunk_frames(built)):
            frame.sent_at = frame.sent_at or now
            frame.model = frame.model or model
            self._accept(frame, count)
            self._pump()  # the collector starts on this frame while the next one is built

    def _prepare(self, item: Item, built: list[Segment], ready: list[Frame]) -> None:
        """Run a deferred item; a step record's segments go to ``built``, a frame, its shape vetted before it
        can be merged with good ones, to ``ready``; an adapter message is held at once.

        Values are not vetted here: the collector drops rows holding NaN or Inf one by one and
        counts them in its stats, where the user looks."""
        try:
            value = item() if callable(item) else item
            if value is None:
                return
            if isinstance(value, StepRecord):
                built.extend(segments(value, self.errors))
            elif isinstance(value, AdapterSizes):
                value.sent_at = value.sent_at or time.time()
                self._accept_adapter(value)
            else:
                check_shape(value)
                ready.append(value)
        except Exception as exc:
            self.errors.record("prepare_frame" if callable(item) else "encode", exc)
            self._dropped_sender += frame_count(item)

    def _chunk_frames(self, built: list[Segment]) -> Iterator[tuple[Frame, int]]:
        """The records' frames, one per chunk, with how many step frames each stands for."""
        for chunk in chunks(built):
            try:
                yield chunk_frame(chunk), len(chunk)
            except Exception as exc:
                self.errors.record("build_frames", exc)
                self._dropped_sender += len(chunk)

    def _accept_adapter(self, message: AdapterSizes) -> None:
        """Encode and hold an adapter message (sent like a frame of a live space)."""
        try:
            parts = encode_adapter(message)
        except Exception as exc:
            self.errors.record("encode", exc)
            self._dropped_sender += 1
            return
        self._hold(self._pending, parts, 1)

    def _accept(self, frame: Frame, count: int) -> None:
        """Encode and hold a frame that stands for ``count`` published frames."""
        try:
            parts = encode(frame)
        except Exception as exc:
            self.errors.record("encode", exc)
            self._dropped_sender += count
            return
        if frame.space in self._frozen_spaces:
            self._remember(parts, frame.rows)
            self._hold(self._replay, parts, count)
        else:
            self._hold(self._pending, parts, count)

    def _remember(self, parts: list, rows: int) -> None:
        """Keep a frozen frame for replay; the cache holds at most ``frozen_cache_rows`` rows, oldest out."""
        self._cache.append((parts, rows))
        self._cache_rows += rows
        while self._cache_rows > self._cache_max_rows and len(self._cache) > 1:
            self._cache_rows -= self._cache.popleft()[1]

    def _hold(self, buffer: deque, parts: list, count: int) -> None:
        if len(buffer) == buffer.maxlen:
            self._dropped_sender += buffer[0][1]  # the oldest falls out
        buffer.append((parts, count))

    def _read_subscriptions(self) -> None:
        new_subscriber = False
        while True:
            try:
                message = self._socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if message[:1] == bytes([SUBSCRIBE]):
                self._subscriptions += 1
                new_subscriber = True
            elif message[:1] == bytes([UNSUBSCRIBE]):
                self._subscriptions = max(0, self._subscriptions - 1)
        if new_subscriber:
            self._replay_cache()

    def _replay_cache(self) -> None:
        """A collector (re)subscribed: it may have missed every frozen frame so far. Frames still waiting
        for their first send keep their count (``sent`` when they go); the others are ``resent``."""
        waiting = {id(parts): count for parts, count in self._replay}
        cached = {id(parts) for parts, _ in self._cache}
        entries = [(parts, count) for parts, count in self._replay if id(parts) not in cached]
        entries += [(parts, waiting.get(id(parts), 0)) for parts, _ in self._cache]
        self._resent += sum(1 for _, count in entries if count == 0)
        self._replay = deque(entries, maxlen=max(self._pending.maxlen, len(entries)))

    def _pump(self) -> None:
        """Send held frames, frozen first, until done or the socket pushes back."""
        if self._subscriptions <= 0:
            return
        for buffer in (self._replay, self._pending):
            while buffer:
                parts, count = buffer[0]
                try:
                    self._socket.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    return  # collector is slow: retry on the next turn; the bounded deque counts losses
                except zmq.ZMQError as exc:
                    self.errors.record("send", exc)
                    self._dropped_sender += count
                else:
                    self._sent += count
                buffer.popleft()

    def _drain(self) -> None:
        deadline = time.monotonic() + self._drain_s
        while time.monotonic() < deadline:
            self._take()
            self._read_subscriptions()
            self._pump()
            nothing_left = not (self._handoff.items or self._replay or self._pending)
            if nothing_left or self._subscriptions <= 0:
                break
            time.sleep(self._poll_s)
        held = sum(count for _, count in self._replay) + sum(count for _, count in self._pending)
        self._dropped_sender += sum(map(frame_count, self._handoff.take())) + held


class MemoryPublisher:
    """Keeps frames in a list instead of sending them: for tests and in-process inspection."""

    def __init__(self, model: str | None = None):
        self.frames: list[Frame] = []
        self.adapter: list[AdapterSizes] = []  # adapter messages, kept apart from the frames
        self.errors = ErrorLog()
        self.model = model
        self._closed = False

    def publish(self, item: Item) -> bool:
        try:
            frames = frames_of(item, self.errors)
            self.adapter.extend(f for f in frames if isinstance(f, AdapterSizes))
            frames = [f for f in frames if not isinstance(f, AdapterSizes)]
            for frame in frames:
                frame.model = frame.model or self.model
            self.frames.extend(frames)
        except Exception as exc:
            self.errors.record("prepare_frame", exc)
            return False
        return True

    def stats(self) -> dict:
        return {"queued": len(self.frames), "sent": len(self.frames), "dropped": 0, "resent": 0,
                "queue_depth": 0, "held": 0, "subscribed": True, "errors": self.errors.as_dict()}

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> "MemoryPublisher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
