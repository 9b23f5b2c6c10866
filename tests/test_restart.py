"""What a collector restart (after kill -9) brings back from the run store: buffers without the
spaces the user cleared, and the latest maps before any new fit."""
from __future__ import annotations

import pytest
from acestep_viz.collector.store import RunStore, live_frames
from support import CollectorProcess, query, send_frames, synthetic_frames, wait_for

from acestep_viz.wire import decode

pytestmark = pytest.mark.slow
SPACES = ("latent", "lora", "prompt")


def buffered(endpoint: str, run: str) -> dict:
    runs = query(endpoint, {"op": "stats"})["runs"]
    return {s: runs[run][s]["buffered"] for s in SPACES} if run in runs else {}


def stored_rows(store, run: str, space: str) -> int:
    path = RunStore.logs_in(store)
    frames = [decode(p) for log in path for p in live_frames(log)]
    return sum(f.rows for f in frames if f.run == run and f.space == space)


def test_a_cleared_space_stays_cleared_after_kill9_and_the_other_spaces_come_back(tmp_path):
    store = tmp_path / "store"
    frames = synthetic_frames(run="run-c", n_clips=15, steps=2)
    with CollectorProcess(store) as first:
        send_frames(first.ingest, frames)
        wait_for(lambda: buffered(first.query, "run-c") == {"latent": 15, "lora": 90, "prompt": 15}, timeout=20)
        assert query(first.query, {"op": "clear", "run": "run-c", "space": "lora"})["ok"]
        assert buffered(first.query, "run-c") == {"latent": 15, "lora": 0, "prompt": 15}
        send_frames(first.ingest, [f for f in synthetic_frames(run="run-c", n_clips=15, steps=3, seed=1)
                                   if f.space == "lora" and f.step == 2])  # rows after the clear stay
        wait_for(lambda: stored_rows(store, "run-c", "lora") == 45, timeout=20)
        first.kill9()
    with CollectorProcess(store) as second:
        assert buffered(second.query, "run-c") == {"latent": 15, "lora": 45, "prompt": 15}
        snap = query(second.query, {"op": "snapshot", "run": "run-c", "since": None})
        assert snap["counts"]["lora"]["buffered"] == 45


def all_projected(endpoint: str, run: str):
    snap = query(endpoint, {"op": "snapshot", "run": run, "since": None})
    return snap if snap.get("run") == run and all(snap["spaces"][s]["projected"] >= 10 for s in SPACES) else None


def test_the_latest_maps_are_served_right_after_a_restart_and_refits_go_on(tmp_path):
    store = tmp_path / "store"
    one_fit = ["--projection-interval-s", "3600"]  # each space is fitted once, then only on request
    with CollectorProcess(store, extra_args=one_fit) as first:
        first.wait_ready()
        send_frames(first.ingest, synthetic_frames(run="run-m", n_clips=20, steps=2))
        wait_for(lambda: all_projected(first.query, "run-m"), timeout=60)
        maps = [RunStore(store).map_path("run-m", s) for s in SPACES]
        wait_for(lambda: all(m.exists() for m in maps), timeout=20)
        # the store hands frames to the OS every 0.25 s, and a fit can take less: a kill -9 before then
        # loses them by design (and with them the rows a refit needs after the restart)
        wait_for(lambda: [stored_rows(store, "run-m", s) for s in SPACES] == [20, 120, 20], timeout=20)
        before = all_projected(first.query, "run-m")
        first.kill9()
    with CollectorProcess(store, extra_args=one_fit) as second:
        after = query(second.query, {"op": "snapshot", "run": "run-m", "since": None})
        for space in SPACES:
            assert after["spaces"][space]["points"] == before["spaces"][space]["points"], space
            assert after["spaces"][space]["projected_at"] == before["spaces"][space]["projected_at"]
        second.wait_ready()
        version = query(second.query, {"op": "stats"})["runs"]["run-m"]["lora"]["version"]
        assert query(second.query, {"op": "refit", "run": "run-m", "space": "lora"})["ok"]
        wait_for(lambda: query(second.query, {"op": "stats"})["runs"]["run-m"]["lora"]["version"] > version,
                 timeout=60)
        history = query(second.query, {"op": "history", "run": "run-m", "space": "lora"})
        assert len(history["frames"]) == 2  # the restored map, then the new fit aligned to it
