"""The publisher over a real ZeroMQ SUB socket: delivery, never blocking, replay after a restart."""
import threading
import time

import numpy as np
import pytest
import zmq
from acestep_viz.trainer_plugin.publisher import Publisher

from acestep_viz.wire import AdapterSizes, Frame, decode_message
from tests.support import free_port, wait_for


class SubCollector:
    """A stand-in collector: binds a SUB socket and decodes frames on its own thread, as the real one polls."""

    def __init__(self, endpoint: str, context: zmq.Context | None = None):
        self.endpoint = endpoint
        self.frames: list[Frame] = []
        self.adapter: list[AdapterSizes] = []  # adapter update-size messages
        self._context = context or zmq.Context.instance()
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        assert self._bound.wait(5)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)

    def _run(self):
        sock = self._context.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(self.endpoint)
        sock.subscribe(b"")
        self._bound.set()
        try:
            while not self._stop.is_set():
                if sock.poll(20):
                    message = decode_message(sock.recv_multipart(copy=False))
                    (self.adapter if isinstance(message, AdapterSizes) else self.frames).append(message)
        finally:
            sock.close()

    def spaces(self, space: str) -> list[Frame]:
        return [f for f in self.frames if f.space == space]

    def rows(self, space: str) -> list[dict]:
        """One dict per received row of ``space`` (id, run, step, micro_batch, its metadata, vector),
        whether frames arrived one per step or merged."""
        return [{**meta, "id": frame.ids[row], "run": frame.run, "step": meta.get("step", frame.step),
                 "micro_batch": meta.get("micro_batch", frame.micro_batch), "vector": frame.vectors[row]}
                for frame in self.spaces(space) for row, meta in enumerate(frame.meta)]


def make_frame(space="lora", step=0, rows=3, dim=8, run="pub-test", ids=None) -> Frame:
    vectors = (np.arange(rows * dim).reshape(rows, dim) / 10 + step).astype(np.float16)
    ids = ids or [f"clip{i}" for i in range(rows)]
    meta = [{"layer": "blocks.0", "loss": 0.5, "prompt": "jazz"} for _ in range(rows)]
    return Frame(run=run, space=space, step=step, vectors=vectors, ids=ids, micro_batch=1, rank=0, meta=meta)


def rows_by_step(frames: list[Frame]) -> dict:
    """{step: (ids, vectors, meta)} over frames that may each hold several steps' rows."""
    out: dict = {}
    for frame in frames:
        for row, (key, meta) in enumerate(zip(frame.ids, frame.meta)):
            meta = dict(meta)
            step = meta.pop("step", frame.step)
            assert meta.pop("micro_batch", frame.micro_batch) == 1
            ids, vectors, metas = out.setdefault(step, ([], [], []))
            ids.append(key)
            vectors.append(frame.vectors[row])
            metas.append(meta)
    return {step: (ids, np.array(vectors), metas) for step, (ids, vectors, metas) in out.items()}


def loopback() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


@pytest.mark.parametrize("transport", ["tcp", "inproc"])
def test_round_trip_including_frames_published_before_the_subscription(transport):
    context = zmq.Context.instance()
    endpoint = loopback() if transport == "tcp" else f"inproc://pub-test-{time.monotonic_ns()}"
    with SubCollector(endpoint, context) as collector, Publisher(endpoint, context=context) as publisher:
        sent = [make_frame(step=s) for s in range(3)]  # no subscription has arrived yet: held, not lost
        for frame in sent:
            assert publisher.publish(frame)
        publisher.publish(lambda: make_frame(space="latent", step=9))  # deferred frames run on the sender
        wait_for(lambda: sum(f.rows for f in collector.frames) == 12, timeout=5, interval=0.02)
    by_step = rows_by_step(collector.frames)  # a backlog may arrive coalesced into one frame
    for frame in sent:
        ids, vectors, meta = by_step[frame.step]
        assert (ids, meta) == (frame.ids, frame.meta)
        np.testing.assert_array_equal(vectors, frame.vectors)
    assert all(f.sent_at > 0 for f in collector.frames)
    assert [f.space for f in collector.frames if f.step == 9] == ["latent"]
    assert publisher.stats()["sent"] == 4 and publisher.stats()["dropped"] == 0


def test_publish_never_blocks_when_nobody_listens():
    publisher = Publisher(loopback(), queue_size=64, pending_size=16)
    frame = make_frame(rows=64, dim=256)
    accepted = sum(publisher.publish(frame) for _ in range(10_000))
    publisher.close()
    stats = publisher.stats()
    assert accepted < 10_000  # the bounded queue refused the overflow instead of waiting
    assert stats["sent"] == 0 and stats["dropped"] == 10_000  # every frame is accounted for


def test_frozen_frames_are_replayed_when_the_collector_restarts():
    endpoint = loopback()
    publisher = Publisher(endpoint)
    try:
        with SubCollector(endpoint) as first:
            publisher.publish(make_frame(space="latent", ids=["a", "b", "c"]))
            publisher.publish(make_frame(space="lora", step=1))
            wait_for(lambda: len(first.frames) == 2, timeout=5, interval=0.02)
        with SubCollector(endpoint) as restarted:  # same port, fresh collector: it missed the latent rows
            wait_for(lambda: restarted.spaces("latent"), timeout=5, interval=0.02)
            publisher.publish(make_frame(space="lora", step=2))  # sent after any replay: once it is in, all is
            wait_for(lambda: restarted.spaces("lora"), timeout=5, interval=0.02)
        assert [f.ids for f in restarted.spaces("latent")] == [["a", "b", "c"]]
        assert [f.step for f in restarted.spaces("lora")] == [2]  # only frozen spaces are replayed
        assert publisher.stats()["resent"] >= 1
    finally:
        publisher.close()


def test_frozen_frames_held_until_the_first_subscription_count_once_each_as_sent():
    endpoint = loopback()
    with Publisher(endpoint) as publisher:
        publisher.publish(make_frame(space="latent", step=1, ids=["a", "b", "c"]))
        publisher.publish(make_frame(space="latent", step=2, ids=["d", "e", "f"]))
        publisher.wake()
        wait_for(lambda: publisher.stats()["held"] == 1, timeout=5, interval=0.02)  # merged, waiting for a collector
        with SubCollector(endpoint) as collector:
            wait_for(lambda: len(collector.rows("latent")) == 6, timeout=5, interval=0.02)
            stats = publisher.stats()
    assert (stats["sent"], stats["resent"], stats["dropped"]) == (2, 0, 0)


def test_bad_frames_are_counted_not_raised():
    with SubCollector(loopback()) as collector, Publisher(collector.endpoint) as publisher:
        misshapen = make_frame()
        misshapen.ids = misshapen.ids[:1]  # one id for three rows: it must not spoil a merged frame
        publisher.publish(misshapen)
        publisher.publish(lambda: 1 / 0)
        publisher.publish(make_frame(step=5))
        wait_for(lambda: collector.frames and publisher.stats()["dropped"] == 2, timeout=5, interval=0.02)
        stats = publisher.stats()
    assert [f.step for f in collector.frames] == [5]
    assert stats["dropped"] == 2 and stats["errors"] == {"encode": 1, "prepare_frame": 1}


def test_a_row_with_nan_is_dropped_by_the_collector_not_its_whole_frame():
    with SubCollector(loopback()) as collector, Publisher(collector.endpoint) as publisher:
        frame = make_frame(step=3)
        frame.vectors[1, 0] = np.nan
        publisher.publish(frame)
        wait_for(lambda: collector.frames, timeout=5, interval=0.02)
    [back] = collector.frames
    assert back.ids == ["clip0", "clip2"] and back.dropped_rows == 1
    assert publisher.stats()["dropped"] == 0


def test_close_is_idempotent_and_later_publishes_are_dropped():
    publisher = Publisher(loopback())
    publisher.close()
    publisher.close()
    assert publisher.publish(make_frame()) is False
    assert publisher.stats()["dropped"] == 1


def test_bad_endpoint_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot connect"):
        Publisher("tcp://nowhere")
