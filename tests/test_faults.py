"""Faults during training, with real processes: the demo twin trains while the collector is
missing, frozen (SIGSTOP) or killed and restarted. Training must keep stepping, finish with exit
code 0 and no traceback, count what it dropped, and frames must flow again after a restart."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from support import REPO, CollectorProcess, ManagedProcess, free_port, try_query, wait_for

pytestmark = pytest.mark.slow
SPACES = ("latent", "lora", "prompt")
STOP_S = float(os.environ.get("ACESTEP_VIZ_FAULT_STOP_S", "5"))
STEPS = int(os.environ.get("ACESTEP_VIZ_FAULT_STEPS", "100"))
FAULT_PACE_S = 0.15  # slept per batch in the fault run: 100 steps last at least 15 s
QUIET = ["--projection-interval-s", "3600"]  # one fit per space: PaCMAP would compete with training for 2 cores


class DemoRun(ManagedProcess):
    """The twin under Lightning (tests/demo_with_progress.py), reporting finished batches in a file."""

    def __init__(self, tmp: Path, endpoint: str, steps: int, run: str, monitor: bool = True, pace_s: float = 0.0):
        self.progress_path = tmp / f"{run}.progress"
        self.run = run
        super().__init__([sys.executable, str(REPO / "tests" / "demo_with_progress.py"), endpoint, str(steps), run,
                          str(self.progress_path), "on" if monitor else "off", str(pace_s)],
                         log_path=tmp / f"{run}.log")

    def progress(self) -> int:
        try:
            return int(self.progress_path.read_text() or 0)
        except (OSError, ValueError):
            return 0

    def finish(self, timeout: float = 180) -> dict:
        self.proc.wait(timeout)
        log = self.log_text()
        assert self.proc.returncode == 0, log
        assert "Traceback" not in log, log
        return json.loads(log.strip().splitlines()[-1])


def run_stats(collector: CollectorProcess, run: str) -> dict | None:
    stats = try_query(collector.query, {"op": "stats"}, timeout=2)
    return (stats or {}).get("runs", {}).get(run)


def test_collector_never_started(tmp_path):
    never_started(tmp_path, 12)


def never_started(tmp_path: Path, steps: int) -> dict:
    endpoint = f"tcp://127.0.0.1:{free_port()}"  # nothing listens here
    demo = DemoRun(tmp_path, endpoint, steps, "nobody-home").start()
    summary = demo.finish()
    monitor = summary["monitor"]
    assert summary["steps"] == steps
    assert monitor["steps_captured"] == steps and monitor["frames_sent"] == 0
    assert monitor["frames_dropped"] == monitor["frames_queued"] > 0  # every loss counted
    print(f"\nnever started: {summary['ms_per_step_median']} ms/step, dropped {monitor['frames_dropped']}, "
          f"max RSS {summary['max_rss_mb']} MB")
    return summary


def test_collector_stopped_resumed_then_killed_and_restarted(tmp_path):
    """One training run, two faults (one demo start-up instead of two keeps the file short):
    the collector is SIGSTOPped and resumed, later killed -9 and restarted on the same ports."""
    stop_then_kill(tmp_path, STEPS, STOP_S)


def stop_then_kill(tmp_path: Path, steps: int, stop_s: float) -> dict:
    first = CollectorProcess(tmp_path / "store-a", extra_args=QUIET)
    ingest, query_endpoint = first.ingest, first.query
    with first:
        # paced: the run must outlast both faults (the twin alone does 100 steps in a few seconds)
        demo = DemoRun(tmp_path, ingest, steps, "faulty", pace_s=FAULT_PACE_S).start()
        try:
            # 1. SIGSTOP for stop_s seconds, then SIGCONT: training steps on, the collector catches up
            wait_for(lambda: (run_stats(first, "faulty") or {}).get("lora", {}).get("received"), timeout=120)
            received = run_stats(first, "faulty")["lora"]["received"]
            before = demo.progress()
            os.kill(first.pid, signal.SIGSTOP)
            stopped_at = time.monotonic()
            try:
                wait_for(lambda: demo.progress() >= before + 5 or not demo.alive(), timeout=60)
                time.sleep(max(0.0, stop_s - (time.monotonic() - stopped_at)))
                during = demo.progress()
            finally:
                os.kill(first.pid, signal.SIGCONT)
            assert during >= before + 5, "training did not step while the collector was stopped"
            # caught up: rows of steps trained while it was stopped arrive (the backlog goes oldest first)
            wait_for(lambda: run_stats(first, "faulty")["lora"]["last_step"] >= before, timeout=60)
            assert run_stats(first, "faulty")["lora"]["received"] > received
            assert first.alive()
            after_stop = run_stats(first, "faulty")

            # 2. kill -9, training steps on, a new collector on the same ports (fresh store: whatever
            #    it buffers came over the wire, the frozen spaces replayed by the publisher)
            first.kill9()
            before_kill = demo.progress()
            wait_for(lambda: demo.progress() >= before_kill + 3 or not demo.alive(), timeout=60)
            assert demo.progress() >= before_kill + 3, "training did not step while the collector was dead"
            while_dead = demo.progress() - before_kill
            with CollectorProcess(tmp_path / "store-b", ingest=ingest, query_endpoint=query_endpoint,
                                  extra_args=QUIET) as second:
                def all_spaces_buffered():
                    runs = run_stats(second, "faulty") or {}
                    return runs if runs and all(runs[s]["buffered"] > 0 for s in SPACES) else None
                runs = wait_for(all_spaces_buffered, timeout=60)
                summary = demo.finish()
                assert second.alive()
        finally:
            demo.stop()
    monitor = summary["monitor"]
    assert summary["steps"] == steps and monitor["steps_captured"] == steps
    assert monitor["errors"] == {}
    assert after_stop["lora"]["last_step"] >= before
    assert monitor["frames_resent"] > 0  # the frozen spaces were replayed on the new subscription
    assert runs["lora"]["last_step"] > before_kill - 2
    print(f"\nSIGSTOP {stop_s:.0f} s: {during - before} steps while stopped; kill -9 + restart: "
          f"{ {s: runs[s]['buffered'] for s in SPACES} } buffered by the new collector; "
          f"{summary['ms_per_step_median']} ms/step, sent {monitor['frames_sent']}, resent {monitor['frames_resent']}, "
          f"dropped {monitor['frames_dropped']} of {monitor['frames_queued']}, max RSS {summary['max_rss_mb']} MB")
    return {"summary": summary, "steps_while_stopped": during - before, "steps_while_dead": while_dead,
            "buffered_after_restart": {s: runs[s]["buffered"] for s in SPACES}}
