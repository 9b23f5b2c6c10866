"""Send frames from a separate process, so that building and encoding them never holds the
training process's GIL.

A training loop on small tensors is mostly Python, so any Python work in the same process, even
on another thread, delays it about one for one, and more when two threads trade the GIL. The
trainer therefore keeps only the cheapest part, on the caller's thread: ``publish`` queues the step, and
the call that finds the batch due (every ``batch_s``, or ``MESSAGE_STEPS`` steps) encodes the queued steps
(``link_step``: each step's header as plain values and one float32 array) and sends them as one
message over a loopback ZeroMQ PAIR socket to a child Python process running ``main`` below. Encoding
them together costs less than half of encoding each right after its step, when its code is cold. The
child runs the ordinary ``Publisher``: frame building, merging, encoding, replay and the collector
connection; it sends each timed batch on as soon as it arrives, so a step waits for one ``batch_s``, not
two (the pieces of a burst wait for the child's own batch, which merges them). It reports its
counters back every ``STATS_S``, and once more after its final drain on ``close``.

A step whose device-to-host copies are still in flight is never waited for by the caller: it goes
to the relay thread, which waits for the copies and sends it. That thread also reads the child's
reports, watches its health, and sends a batch the caller left waiting (training paused).

The child exits when asked or when its parent process is gone. A child that dies or never starts
is logged once and counted (its frames count as dropped); the trainer goes on.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, NamedTuple

import zmq
from acestep_viz.trainer_plugin.publisher import (
    BATCH_S,
    CURVE_ENV,
    ErrorLog,
    HandOff,
    Item,
    Publisher,
    frame_count,
    take_all,
)
from acestep_viz.trainer_plugin.step_record import (
    StepRecord,
    decode_records,
    encode_step,
    link_message,
    record_link_step,
)

from acestep_viz.processes import ParentWatch, lower_priority
from acestep_viz.wire import model_name_problem

log = logging.getLogger("acestep_viz")

STATS_S = 0.5  # how often the child reports its counters: often enough for a live view, rarely enough to cost nothing
START_TIMEOUT_S = 30.0  # the child imports numpy and zmq: well under a second, unless the disk is cold
MESSAGE_STEPS = 64  # steps per link message: a backlog after a stall goes in pieces the child can take
LINK_HWM = 2000  # link messages on their way to the child; a stuck child costs drops, never a blocked trainer
PARENT_CHECK_S = 1.0
RELAY_NICENESS = 10
PUBLISHER_OPTIONS = ("sndhwm", "queue_size", "frozen_spaces", "frozen_cache_rows", "pending_size", "drain_s",
                     "linger_ms", "poll_s", "batch_s", "curve_dir", "model")
STEPS, STEPS_NOW, CLOSE, HELLO, STATS = b"steps", b"steps-now", b"close", b"hello", b"stats"


class RelayPublisher:
    """``Publisher``'s interface, with the work done in a child process. A context manager."""

    def __init__(self, endpoint: str, *, queue_size: int = 256, batch_s: float = BATCH_S, drain_s: float = 1.0,
                 python: str = sys.executable, **options: Any):
        unknown = sorted(set(options) - set(PUBLISHER_OPTIONS))
        if unknown:
            raise ValueError(f"unknown publisher option(s) {', '.join(unknown)}; known: {', '.join(PUBLISHER_OPTIONS)}")
        model = options.get("model")
        if model is not None and model_name_problem(model):
            raise ValueError(f"model={model!r}: {model_name_problem(model)}")
        context = zmq.Context.instance()
        # the endpoint and CurveZMQ keys are checked here, so that a mistake is an error at attach
        curve_dir = options.get("curve_dir") or os.environ.get(CURVE_ENV) or None
        Publisher._connect(context, endpoint, 1, curve_dir).close(linger=0)
        self.endpoint = endpoint
        self.errors = ErrorLog()
        self._handoff = HandOff(queue_size)  # the steps of the batch being gathered
        self._late: deque = deque()  # steps the caller could not send yet (device copies in flight)
        self._batch_s, self._drain_s = batch_s, drain_s
        self._last_forward = 0.0  # monotonic time the last batch was taken
        self._late_busy = False  # the relay thread is sending late steps: later ones must queue behind them
        self._dropped = 0  # steps lost on the link or with the child; refusals are counted by the hand-off
        self._child_stats: dict = {}
        self._linked = False
        self._dead = False  # the child died or never started: every frame from now on counts as dropped
        self._closed = False
        self._stop = threading.Event()
        self._link_lock = threading.Lock()  # the link socket is used by the caller's thread and the relay thread
        self._link = context.socket(zmq.PAIR)
        self._link.setsockopt(zmq.LINGER, 0)
        self._link.setsockopt(zmq.SNDHWM, LINK_HWM)
        port = self._link.bind_to_random_port("tcp://127.0.0.1")
        child_options = {**options, "queue_size": queue_size, "batch_s": batch_s, "drain_s": drain_s}
        try:
            self._child = _start_child(python, f"tcp://127.0.0.1:{port}", endpoint, child_options)
        except ValueError:
            self._link.close(linger=0)
            raise
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="acestep-viz-relay", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ caller side

    def publish(self, item: Item) -> bool:
        """Queue a step for the child; send the batch if it is due. Never blocks; returns False if it was dropped."""
        if not self._handoff.put(item, not (self._closed or self._dead)):
            return False
        if not self._linked:
            return True
        if time.monotonic() - self._last_forward >= self._batch_s:
            self._forward_batch(woken=True)  # the child sends it on at once: a step waits one batch_s, not two
        elif len(self._handoff) >= MESSAGE_STEPS:
            self._forward_batch(woken=False)  # a burst: the child merges its pieces in its own batch
        return True

    def wake(self) -> None:
        """Send what is queued now, and have the child send it on at once, rather than at the next batch."""
        if self._linked and not self._closed:
            self._forward_batch(woken=True)
        else:
            self._handoff.event.set()

    def stats(self) -> dict:
        child = dict(self._child_stats)
        errors = dict(child.get("errors", {}))
        for kind, count in self.errors.as_dict().items():
            errors[kind] = errors.get(kind, 0) + count
        return {
            "queued": self._handoff.queued,
            "sent": child.get("sent", 0),
            "dropped": self._handoff.refused + self._dropped + child.get("dropped", 0),
            "resent": child.get("resent", 0),
            "queue_depth": len(self._handoff) + len(self._late) + child.get("queue_depth", 0),
            "held": child.get("held", 0),
            "subscribed": child.get("subscribed", False),
            "errors": errors,
            "relay_pid": self._child.pid,
        }

    def close(self, timeout: float | None = None) -> None:
        """Forward what is queued, let the child drain for up to ``drain_s`` and report; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._handoff.event.set()
        self._thread.join(timeout if timeout is not None else self._drain_s + START_TIMEOUT_S)
        if self._thread.is_alive():
            log.warning("acestep_viz: relay thread did not stop in time; leaving it (daemon)")
            return
        self._link.close(linger=0)
        if self._child.poll() is None:
            self._child.kill()
            self._child.wait()

    def __enter__(self) -> "RelayPublisher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _forward_batch(self, woken: bool) -> None:
        """Take the batch and send it from this thread, or hand it to the relay thread if a step in it
        (or before it) still waits for a device copy."""
        self._last_forward = time.monotonic()
        items = self._handoff.take()
        if self._late or self._late_busy or not all(map(_ready, items)):
            self._late.extend(items)
            self._handoff.event.set()
            return
        self._forward(items, woken)

    # ------------------------------------------------------------------ relay thread

    def _run(self) -> None:
        # Each system call costs tens of microseconds on a busy machine and may hold the GIL, so a
        # turn makes none unless there is something to do; reports and the child's health are read
        # once per STATS_S.
        woken, last_check = False, 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if not self._linked or now - last_check >= STATS_S:
                    last_check = now
                    self._receive()
                    if not self._linked and now - self._started_at > START_TIMEOUT_S:
                        self._child.kill()
                    if self._child_gone():
                        self._give_up("the relay process exited" if self._linked
                                      else "the relay process did not start")
                        return
                if self._linked:
                    self._forward_left(woken)
                woken = self._handoff.event.wait(self._batch_s if self._linked else 0.05)
                self._handoff.event.clear()
            self._finish()
        except Exception as exc:  # the thread must end cleanly whatever happens
            self.errors.record("relay_thread", exc)
            self._drop_queued()

    def _forward_left(self, woken: bool) -> None:
        """Send the steps handed over for their device copies, and a batch the caller left waiting
        (training paused for over ``2 * batch_s``, or steps queued before the child was linked)."""
        self._late_busy = True  # before taking them: a caller's batch must not overtake them
        try:
            late = take_all(self._late)
            if late:
                self._forward(late, woken=True)
        finally:
            self._late_busy = False
        if self._handoff.items and (woken or time.monotonic() - self._last_forward >= 2 * self._batch_s):
            self._last_forward = time.monotonic()
            self._forward(self._handoff.take(), woken)

    def _receive(self, timeout_ms: int = 0) -> bool:
        """Read what the child sent; True once its final report after a close has arrived."""
        final = False
        with self._link_lock:
            while self._link.poll(timeout_ms, zmq.POLLIN):
                timeout_ms = 0
                parts = self._link.recv_multipart()
                if parts[0] == HELLO:
                    self._linked = True
                elif parts[0] == STATS and len(parts) == 3:
                    self._child_stats = json.loads(parts[1])
                    final = final or parts[2] == b"final"
        return final

    def _forward(self, items: list, woken: bool = False) -> None:
        """Encode and send ``items`` (step records, deferred steps with ``link_step``, or callables
        making a record), up to ``MESSAGE_STEPS`` steps per link message; ``woken``: the child sends them
        on at once too."""
        steps, frames = [], 0
        for item in items:
            try:
                step = _encode(item)
                if step is None:
                    continue
            except Exception as exc:
                self.errors.record("relay_forward", exc)
                self._dropped += frame_count(item)
                continue
            steps.append(step)
            frames += frame_count(item)
            if len(steps) == MESSAGE_STEPS:
                self._send(steps, frames, woken)
                steps, frames = [], 0
        if steps:
            self._send(steps, frames, woken)

    def _send(self, steps: list, frames: int, woken: bool) -> None:
        try:
            parts = [STEPS_NOW if woken else STEPS, *link_message(steps)]
            with self._link_lock:
                self._link.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self._dropped += frames  # the child is stuck: count, never wait
        except Exception as exc:
            self.errors.record("relay_forward", exc)
            self._dropped += frames

    def _finish(self) -> None:
        deadline = time.monotonic() + self._drain_s + 5.0
        while not self._linked and not self._child_gone() and time.monotonic() < deadline:
            self._receive(timeout_ms=100)  # closed right after attach: the child is still starting
        if not self._linked:
            self._drop_queued()
            return
        self._forward(take_all(self._late) + self._handoff.take())
        try:
            with self._link_lock:
                self._link.send_multipart([CLOSE], flags=zmq.NOBLOCK)
        except zmq.Again:
            pass  # a stuck child: it is killed below, its frames count as dropped
        deadline = time.monotonic() + self._drain_s + 5.0
        while time.monotonic() < deadline and not self._child_gone():
            if self._receive(timeout_ms=100):
                break
        try:
            self._child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.errors.record("relay_close", TimeoutError("the relay process did not finish its drain"))

    def _child_gone(self) -> bool:
        return self._child.poll() is not None

    def _give_up(self, why: str) -> None:
        code = self._child.poll()
        self.errors.record("relay_exited", RuntimeError(f"{why} (exit code {code}); frames are counted as dropped"))
        self._linked = False
        self._dead = True
        self._drop_queued()

    def _drop_queued(self) -> None:
        self._dropped += sum(map(frame_count, take_all(self._late) + self._handoff.take()))


class _EncodedStep(NamedTuple):
    header: tuple  # made JSON with the rest of its link message
    payload: Any  # float32 values: bytes or a numpy array
    frames: int


def _encode(item: Item) -> _EncodedStep | None:
    """An item encoded for the link (waiting for its device copies); None for a deferred item that made nothing."""
    link_step = getattr(item, "link_step", None)
    if link_step is not None:
        return _EncodedStep(*link_step(), frame_count(item))
    value = item() if callable(item) else item
    if value is None:
        return None
    if not isinstance(value, StepRecord):
        raise TypeError(f"the relay forwards step records, not {type(value).__name__}")
    return _EncodedStep(*encode_step(*record_link_step(value)), frame_count(item))


def _ready(item: Item) -> bool:
    """True when ``item`` can be resolved without waiting for a device (a step record, or a deferred
    step whose copies are done); anything else is resolved by the relay thread."""
    if isinstance(item, StepRecord):
        return True
    ready = getattr(item, "ready", None)
    return bool(ready()) if ready is not None else False


def _start_child(python: str, link: str, endpoint: str, options: dict) -> subprocess.Popen:
    """Start ``main`` in a child Python. The folder ``acestep_viz`` was imported from goes at the end of
    the child's sys.path: it finds the package even when it is not installed, and shadows nothing."""
    import acestep_viz

    package_root = str(Path(acestep_viz.__file__).resolve().parent.parent)
    bootstrap = ("import sys; sys.path.append(sys.argv.pop(1)); from acestep_viz.trainer_plugin.relay import main; "
                 "sys.exit(main())")
    command = [python, "-c", bootstrap, package_root, "--link", link, "--endpoint", endpoint,
               "--parent", str(os.getpid()), "--options", json.dumps(options)]
    try:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    except OSError as exc:
        raise ValueError(f"cannot start the relay process with {python!r}: {exc}; sender='thread' sends "
                         "from a thread of this process instead") from None


# ---------------------------------------------------------------------------- the child process

def serve(link_endpoint: str, endpoint: str, parent: int, options: dict) -> int:
    """The child's loop: records in, frames out to the collector, counters back to the parent."""
    errors = ErrorLog()
    link = zmq.Context.instance().socket(zmq.PAIR)
    link.setsockopt(zmq.LINGER, 2000)
    link.connect(link_endpoint)
    link.send_multipart([HELLO])
    decoded_errors = 0
    with Publisher(endpoint, **options) as publisher, ParentWatch(parent) as training_process:
        last_report = last_parent_check = time.monotonic()
        while True:
            if link.poll(int(STATS_S * 1000), zmq.POLLIN):
                parts = link.recv_multipart()
                if parts[0] == CLOSE:
                    break
                if parts[0] in (STEPS, STEPS_NOW) and len(parts) == 3:
                    try:
                        for record in decode_records(parts[1], parts[2]):
                            publisher.publish(record)
                    except ValueError as exc:
                        errors.record("relay_link", exc)
                        decoded_errors += 1
                    if parts[0] == STEPS_NOW:
                        publisher.wake()
            now = time.monotonic()
            if now - last_parent_check >= PARENT_CHECK_S:
                last_parent_check = now
                if not training_process.alive():
                    log.warning("acestep_viz relay: the training process is gone; sending what is left and exiting")
                    break
            if now - last_report >= STATS_S:
                last_report = now
                _report(link, publisher, errors, decoded_errors, final=False)
    _report(link, publisher, errors, decoded_errors, final=True)
    link.close()
    return 0


def _report(link: zmq.Socket, publisher: Publisher, errors: ErrorLog, link_errors: int, final: bool) -> None:
    stats = publisher.stats()
    stats["errors"] = {**stats.get("errors", {}), **errors.as_dict()}
    stats["dropped"] = stats.get("dropped", 0) + link_errors
    try:
        link.send_multipart([STATS, json.dumps(stats).encode(), b"final" if final else b""], flags=zmq.NOBLOCK)
    except zmq.Again:
        pass  # the parent reads reports as they come; a missed one is replaced by the next


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m acestep_viz.trainer_plugin.relay",
                                     description="acestep-viz relay: started by the trainer plugin, not by hand.")
    parser.add_argument("--link", required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--options", default="{}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s acestep_viz relay %(levelname)s %(message)s")
    lower_priority(RELAY_NICENESS)  # background work: when cores are short, the training process goes first
    options = json.loads(args.options)
    if "frozen_spaces" in options:
        options["frozen_spaces"] = tuple(options["frozen_spaces"])
    return serve(args.link, args.endpoint, args.parent, options)


if __name__ == "__main__":
    sys.exit(main())
