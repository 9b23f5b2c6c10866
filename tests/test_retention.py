"""Retention: old runs are deleted by age, big logs are compacted to what rebuilds the buffers."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from acestep_viz.collector.retention import DAY_S, compacted_frames, compaction_due, expired_runs
from acestep_viz.collector.saved_maps import MapSaver
from acestep_viz.collector.state import CollectorState
from acestep_viz.collector.store import RunStore
from acestep_viz.collector.upkeep import StoreUpkeep
from support import CollectorProcess, query, send_frames, synthetic_frames, wait_for

from acestep_viz.wire import Frame, decode, encode

NOW = 1_800_000_000.0  # explicit clock: no test here waits for time to pass


def test_runs_last_written_before_the_cutoff_are_expired():
    written = {"old": NOW - 31 * DAY_S, "recent": NOW - 29 * DAY_S, "ancient-but-live": NOW - 400 * DAY_S}
    assert expired_runs(written, NOW, days=30, keep={"ancient-but-live"}) == ["old"]
    assert expired_runs(written, NOW, days=0) == []  # 0 keeps runs forever
    assert expired_runs(written, NOW, days=0.5) == ["ancient-but-live", "old", "recent"]


def test_compaction_is_due_past_the_limit_but_never_on_every_check():
    mb = 1 << 20
    assert not compaction_due(900 * mb, limit_mb=1024)
    assert compaction_due(1100 * mb, limit_mb=1024)
    assert not compaction_due(10**12, limit_mb=0)  # 0: no limit
    # the buffers alone are 1.5 GB: compact again only once the log has doubled since
    assert not compaction_due(2000 * mb, limit_mb=1024, compacted_size=1500 * mb)
    assert compaction_due(3100 * mb, limit_mb=1024, compacted_size=1500 * mb)


def feed(state: CollectorState, store: RunStore, frames: list[Frame]) -> None:
    """What the collector's ingest does with each frame."""
    for frame in frames:
        parts = [bytes(p) for p in encode(frame)]
        if state.accept(decode(parts)) or frame.space == "lora":
            store.append(frame.run, parts)


def replayed(root) -> CollectorState:
    state = CollectorState(buffer_size=50)
    with RunStore(root) as store:
        for parts in store.replay():
            state.accept(decode(parts))
    return state


def assert_same_buffers(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for space, (vectors, keys, meta) in before.items():
        assert after[space][1] == keys, space
        assert after[space][2] == meta, space
        assert np.array_equal(after[space][0], vectors), space


def test_a_compacted_log_replays_into_the_same_buffers(tmp_path):
    state = CollectorState(buffer_size=50)  # the LoRA ring wraps: 3 steps x 3 layers x 12 clips = 108 rows
    with RunStore(tmp_path) as store:
        feed(state, store, synthetic_frames(run="run-r", n_clips=12, steps=3))
        feed(state, store, synthetic_frames(run="run-r", n_clips=14, steps=1, seed=2, prompt_suffix=" (v2)"))
        store.mark_cleared("run-r", "prompt")
        state.clear("run-r", "prompt")
        feed(state, store, [f for f in synthetic_frames(run="run-r", n_clips=11, seed=3) if f.space == "prompt"])
        feed(state, store, synthetic_frames(run="other", n_clips=5, steps=1))
        before = state.run_buffers("run-r")
        size = store.log_size("run-r")
        upkeep = StoreUpkeep(state, store, MapSaver(store.map_path), threading.Lock(), retention_days=30,
                             retention_max_mb=size / 2 / (1 << 20))
        assert upkeep.compact_due() == ["run-r"]
        assert store.log_size("run-r") < size
        assert upkeep.compact_due() == []  # nothing new since: no second rewrite
        feed(state, store, [f for f in synthetic_frames(run="run-r", n_clips=12, steps=5, seed=4)
                            if f.space == "lora" and f.step == 4])  # appending goes on after a compaction
        later = state.run_buffers("run-r")
    again = replayed(tmp_path)
    assert_same_buffers(later, again.run_buffers("run-r"))
    assert {s: len(rows[1]) for s, rows in before.items()} == {"latent": 14, "lora": 50, "prompt": 11}
    assert again.run_buffers("other")["latent"][1] == [f.ids for f in synthetic_frames(n_clips=5)][0]


def test_compacted_frames_keep_send_times_and_stay_small():
    frames = synthetic_frames(run="run-s", n_clips=30, steps=20, lora_layers=1)
    state = CollectorState(buffer_size=2000)
    for frame in frames:
        state.accept(frame)
    rebuilt = list(compacted_frames("run-s", state.run_buffers("run-s"), rows_per_frame=100))
    assert max(f.rows for f in rebuilt) <= 100
    assert {f.sent_at for f in rebuilt if f.space == "lora"} == {f.sent_at for f in frames if f.space == "lora"}


def test_expired_runs_are_deleted_but_a_live_run_is_kept(tmp_path):
    state = CollectorState()
    with RunStore(tmp_path) as store:
        for run in ("old-run", "live-run", "new-run"):
            feed(state, store, synthetic_frames(run=run, n_clips=10, steps=1))
        store.flush()
        for run in ("old-run", "live-run"):
            os.utime(store.log_path(run), (NOW - 40 * DAY_S, NOW - 40 * DAY_S))
        os.utime(store.log_path("new-run"), (NOW - DAY_S, NOW - DAY_S))
        upkeep = StoreUpkeep(state, store, MapSaver(store.map_path), threading.Lock(), retention_days=30,
                             retention_max_mb=0)
        upkeep.live["live-run"] = NOW - 60  # it received a frame a minute ago
        assert upkeep.expire(NOW) == ["old-run"]
    assert not (tmp_path / "old-run").exists() and (tmp_path / "live-run").exists()
    assert state.run_names(None) == ["live-run", "new-run"]


@pytest.mark.slow
def test_the_collector_deletes_expired_runs_at_start_up(tmp_path):
    store_dir = tmp_path / "store"
    with RunStore(store_dir) as store:
        for run in ("stale", "fresh"):
            for parts in (encode(f) for f in synthetic_frames(run=run, n_clips=10, steps=1)):
                store.append(run, parts)
    long_ago = os.path.getmtime(store_dir / "fresh" / "frames.avz") - 40 * DAY_S
    os.utime(store_dir / "stale" / "frames.avz", (long_ago, long_ago))
    with CollectorProcess(store_dir, extra_args=["--retention-days", "30"]) as collector:
        assert [r["run"] for r in query(collector.query, {"op": "runs"})["runs"]] == ["fresh"]
        assert not (store_dir / "stale").exists()
        assert "deleted run stale" in collector.log_text()


def exported(endpoint: str, run: str) -> dict:
    reply = query(endpoint, {"op": "export", "run": run, "format": "npz"}, timeout=30)
    with np.load(reply["files"][0], allow_pickle=False) as data:
        return {k: data[k] for k in data.files if not k.endswith("_coords")}


def replayed_counts(store_dir, run: str) -> dict:
    state = replayed(store_dir)
    return {s: len(rows[1]) for s, rows in (state.run_buffers(run) or {}).items()}


@pytest.mark.slow
def test_a_collector_compacts_a_big_log_and_restores_the_same_buffers_after_kill9(tmp_path):
    store_dir = tmp_path / "store"
    args = ["--buffer-size", "50", "--retention-max-mb", "0.05", "--projection-interval-s", "3600"]
    frames = synthetic_frames(run="run-k", n_clips=10, steps=12)  # 360 LoRA rows for a ring of 50
    with CollectorProcess(store_dir, extra_args=args) as first:
        send_frames(first.ingest, frames)
        wait_for(lambda: "compacted the log of run run-k" in first.log_text(), timeout=60)
        assert RunStore(store_dir).log_size("run-k") < 0.05 * (1 << 20)
        runs = query(first.query, {"op": "stats"})["runs"]
        buffered = {s: runs["run-k"][s]["buffered"] for s in ("latent", "lora", "prompt")}
        assert buffered == {"latent": 10, "lora": 50, "prompt": 10}
        wait_for(lambda: replayed_counts(store_dir, "run-k") == buffered, timeout=20)  # on disk, not in a buffer
        before = exported(first.query, "run-k")
        first.kill9()
    with CollectorProcess(store_dir, extra_args=args) as second:
        after = exported(second.query, "run-k")
    assert before.keys() == after.keys()
    for key in before:
        assert np.array_equal(before[key], after[key], equal_nan=before[key].dtype.kind == "f"), key
