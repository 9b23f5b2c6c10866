"""Durability: 4 publisher processes stream into a collector, which is killed -9 mid-stream and
restarted on the same store. Every frame accepted more than ~1 s before the kill must be back,
in count and content (ids and vector checksums against what the publishers logged as sent)."""
from __future__ import annotations

import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from acestep_viz.collector.store import RunStore, read_records
from stream_publisher import frame_vectors, run_name
from support import REPO, CollectorProcess, ManagedProcess, query, wait_for

from acestep_viz.wire import decode

pytestmark = pytest.mark.slow
PUBLISHERS, RATE, ROWS, DIM = 4, 100, 2, 64
COLLECTOR_ARGS = ["--buffer-size", "100000", "--projection-interval-s", "3600"]


def start_publishers(tmp: Path, endpoint: str, count: int, rate: float, seconds: float, rows: int = ROWS,
                     dim: int = DIM) -> list[tuple[ManagedProcess, Path]]:
    publishers = []
    for i in range(count):
        log = tmp / f"sent-{i}.log"
        proc = ManagedProcess([sys.executable, str(REPO / "tests" / "stream_publisher.py"), endpoint, str(i),
                               str(rate), str(seconds), str(log), str(rows), str(dim)],
                              log_path=tmp / f"publisher-{i}.out")
        publishers.append((proc.start(), log))
    return publishers


def sent_log(path: Path) -> dict[int, int]:
    """{frame number: crc32 of its payload} as the publisher logged after each send."""
    lines = path.read_text().splitlines() if path.exists() else []
    return {int(k): int(crc) for k, crc in (line.split() for line in lines if len(line.split()) == 2)}


def stored_frames(store: Path, run: str) -> list:
    return [decode(parts) for _, parts in read_records(RunStore(store).log_path(run))] if store else []


def test_kill9_while_four_publishers_stream_loses_nothing_older_than_a_second(tmp_path):
    kill9_while_streaming(tmp_path)


def kill9_while_streaming(tmp_path: Path, publishers_n: int = PUBLISHERS, rate: float = RATE) -> dict:
    store = tmp_path / "store"
    first = CollectorProcess(store, extra_args=COLLECTOR_ARGS)
    ingest, query_endpoint = first.ingest, first.query
    runs = [run_name(i) for i in range(publishers_n)]
    with first:
        publishers = start_publishers(tmp_path, ingest, publishers_n, rate, 60)
        try:
            def streaming():
                stats = query(first.query, {"op": "stats"})["runs"]
                return all(stats.get(r, {}).get("lora", {}).get("received", 0) >= 100 * ROWS for r in runs)
            wait_for(streaming, timeout=60)
            accepted = query(first.query, {"op": "stats"})  # what was accepted at T
            time.sleep(1.5)  # the promise covers frames accepted more than ~1 s before the kill
            first.kill9()
        finally:
            for proc, _ in publishers:
                proc.stop()
    frames_at_t = {r: accepted["runs"][r]["lora"]["received"] // ROWS for r in runs}

    with CollectorProcess(store, extra_args=COLLECTOR_ARGS, ingest=ingest, query_endpoint=query_endpoint) as second:
        restored = query(second.query, {"op": "stats"})
    assert restored["rejects"] == {}
    lost = 0
    for i, run in enumerate(runs):
        sent = sent_log(publishers[i][1])
        frames = stored_frames(store, run)
        steps = [f.step for f in frames]
        # a prefix of what was sent, in order, with no gaps, at least everything accepted at T
        assert steps == list(range(len(frames))), run
        assert len(frames) >= frames_at_t[run], (run, len(frames), frames_at_t[run])
        lost += max(0, frames_at_t[run] - len(frames))
        for frame in frames:
            k = frame.step
            assert frame.ids == [f"p{i}-{k}-{r}" for r in range(ROWS)]
            assert zlib.crc32(frame.vectors.tobytes()) == sent[k]
            assert np.array_equal(frame.vectors, frame_vectors(i, k, ROWS, DIM))
        # and the restarted collector holds every stored row in its buffers
        assert restored["runs"][run]["lora"]["buffered"] == len(frames) * ROWS
        assert restored["runs"][run]["lora"]["last_step"] == len(frames) - 1
    assert lost == 0
    result = {"publishers": publishers_n, "accepted_before_kill": sum(frames_at_t.values()),
              "restored": sum(restored["runs"][r]["lora"]["buffered"] for r in runs) // ROWS,
              "sent": sum(len(sent_log(log)) for _, log in publishers), "lost": lost}
    print(f"\ndurability: {result}")
    return result
