"""Clearing empties the live view and keeps the stored frames; deleting a run's stored data is its own,
explicit request; a request naming a run that does not exist is an error, never another run's data."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from acestep_viz.collector.store import stored_runs
from support import REPO, CollectorProcess, child_env, query, send_frames, synthetic_frames, wait_for

pytestmark = pytest.mark.slow
SPACES = ("latent", "lora", "prompt")
EVERY_ROW = {"latent": 12, "lora": 72, "prompt": 12}  # 12 clips, 2 steps, 3 LoRA layers


def live_runs(endpoint: str) -> dict:
    return query(endpoint, {"op": "stats"})["runs"]


def exported_rows(endpoint: str, run: str) -> dict:
    reply = query(endpoint, {"op": "export", "run": run, "format": "npz"}, timeout=20)
    assert reply["ok"], reply
    with np.load(reply["files"][0]) as npz:
        return {s: len(npz[f"{s}_vectors"]) for s in SPACES}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "acestep_viz", *args], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=120)


def test_clear_keeps_the_stored_frames_exportable_and_a_restart_keeps_the_view_cleared(tmp_path):
    store = tmp_path / "store"
    with CollectorProcess(store) as first:
        first.wait_ready(projections=False)
        send_frames(first.ingest, synthetic_frames(run="kept", n_clips=12, steps=2))
        send_frames(first.ingest, synthetic_frames(run="other", n_clips=12, steps=2, seed=3))
        wait_for(lambda: {s: live_runs(first.query).get("kept", {}).get(s, {}).get("buffered") for s in SPACES}
                 == EVERY_ROW, timeout=30)
        assert query(first.query, {"op": "clear", "run": "kept"})["ok"]
        assert "kept" not in live_runs(first.query) and "other" in live_runs(first.query)
        assert exported_rows(first.query, "kept") == EVERY_ROW  # the store still has every frame
        first.kill9()
    assert "kept" in {row["run"] for row in stored_runs(store)}
    with CollectorProcess(store) as second:
        second.wait_ready(projections=False)
        assert "kept" not in live_runs(second.query) and "other" in live_runs(second.query)
        assert exported_rows(second.query, "kept") == EVERY_ROW


def test_delete_removes_one_runs_stored_data_and_then_the_run_is_unknown(tmp_path):
    store = tmp_path / "store"
    with CollectorProcess(store) as collector:
        collector.wait_ready(projections=False)
        send_frames(collector.ingest, synthetic_frames(run="doomed", n_clips=12, steps=1))
        send_frames(collector.ingest, synthetic_frames(run="spared", n_clips=12, steps=1, seed=2))
        wait_for(lambda: {"doomed", "spared"} <= set(live_runs(collector.query)), timeout=30)
        reply = query(collector.query, {"op": "delete", "run": "doomed"})
        assert reply == {"ok": True, "deleted": "doomed"}
        assert [row["run"] for row in stored_runs(store)] == ["spared"]
        assert "doomed" not in live_runs(collector.query)
        gone = query(collector.query, {"op": "export", "run": "doomed", "format": "npz"})
        assert gone["ok"] is False and "no run named 'doomed'" in gone["error"]
        assert query(collector.query, {"op": "delete"})["ok"] is False  # never "every run" by omission


@pytest.mark.parametrize("request_", [
    {"op": "snapshot", "since": None}, {"op": "history", "space": "lora"}, {"op": "export", "format": "npz"},
    {"op": "export", "format": "gif"}, {"op": "clear"}, {"op": "refit"}, {"op": "delete"}])
def test_a_run_that_does_not_exist_is_an_error_for_every_op(tmp_path, request_):
    with CollectorProcess(tmp_path / "store") as collector:
        collector.wait_ready(projections=False)
        send_frames(collector.ingest, synthetic_frames(run="real-run", n_clips=12, steps=1))
        wait_for(lambda: "real-run" in live_runs(collector.query), timeout=30)
        reply = query(collector.query, {**request_, "run": "no-such-run"}, timeout=10)
        assert reply["ok"] is False and "no run named 'no-such-run'" in reply["error"]


def test_the_cli_clears_refits_and_deletes_through_the_collector(tmp_path):
    store = tmp_path / "store"
    with CollectorProcess(store) as collector:
        collector.wait_ready(projections=False)
        send_frames(collector.ingest, synthetic_frames(run="cli-run", n_clips=12, steps=1))
        wait_for(lambda: "cli-run" in live_runs(collector.query), timeout=30)
        endpoint = ["--collector", collector.query]
        done = cli("refit", *endpoint, "--run", "cli-run", "--space", "lora")
        assert done.returncode == 0 and "full fit" in done.stdout, done.stderr
        done = cli("clear", *endpoint, "--run", "cli-run", "--space", "prompt")
        assert done.returncode == 0, done.stderr
        assert live_runs(collector.query)["cli-run"]["prompt"]["buffered"] == 0
        assert live_runs(collector.query)["cli-run"]["latent"]["buffered"] == 12
        done = cli("clear", *endpoint, "--run", "no-such-run")
        assert done.returncode == 2 and "no run named 'no-such-run'" in done.stderr
        done = cli("runs", "--store", str(store), *endpoint, "--delete", "cli-run")
        assert done.returncode == 0, done.stderr
        assert stored_runs(store) == [] and "cli-run" not in live_runs(collector.query)


def test_the_cli_deletes_from_the_store_when_no_collector_answers(tmp_path):
    store = tmp_path / "store"
    with CollectorProcess(store) as collector:
        collector.wait_ready(projections=False)
        send_frames(collector.ingest, synthetic_frames(run="offline-run", n_clips=12, steps=1))
        wait_for(lambda: stored_runs(store), timeout=30)
    nobody = ["--collector", "tcp://127.0.0.1:9"]  # nothing listens there
    done = cli("runs", "--store", str(store), *nobody, "--delete", "no-such-run")
    assert done.returncode == 2 and "no run named 'no-such-run'" in done.stderr
    done = cli("runs", "--store", str(store), *nobody, "--delete", "offline-run")
    assert done.returncode == 0, done.stderr
    assert stored_runs(store) == []
