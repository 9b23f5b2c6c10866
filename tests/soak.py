"""`make soak`: the reliability claims at full size, with real processes. Not collected by pytest.

1. bad input: 100k garbage frames into a live collector (tests/test_fuzz.py ``storm``);
2. faults: the demo twin trains while the collector is missing, SIGSTOPped for 30 s, then
   killed -9 and restarted (tests/test_faults.py); plus a no-monitor run for the step-time baseline;
3. durability: kill -9 while 4 publishers stream, restart on the same store (tests/test_durability.py);
4. load: 8 publisher processes x 200 frames/s for 60 s into one collector, with a dashboard process
   running and a poller asking for a snapshot every second as the dashboard does.

Prints a summary table and writes ``soak-results.json``. Sizes can be lowered for a quick look:
``SOAK_FUZZ_FRAMES``, ``SOAK_STOP_S``, ``SOAK_FAULT_STEPS``, ``SOAK_LOAD_S``, ``SOAK_LOAD_PUBLISHERS``,
``SOAK_LOAD_RATE``.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import psutil  # noqa: E402
import test_durability  # noqa: E402
import test_faults  # noqa: E402
import test_fuzz  # noqa: E402
from support import REPO, CollectorProcess, DashboardProcess, query, try_query, wait_for  # noqa: E402

FUZZ_FRAMES = int(os.environ.get("SOAK_FUZZ_FRAMES", "100000"))
STOP_S = float(os.environ.get("SOAK_STOP_S", "30"))
LOAD_S = float(os.environ.get("SOAK_LOAD_S", "60"))
LOAD_PUBLISHERS = int(os.environ.get("SOAK_LOAD_PUBLISHERS", "8"))
LOAD_RATE = float(os.environ.get("SOAK_LOAD_RATE", "200"))
FAULT_STEPS = int(os.environ.get("SOAK_FAULT_STEPS", "450"))  # long enough to outlast the stop and a restart
LOAD_ROWS, LOAD_DIM = 2, 512


class PeakRss(threading.Thread):
    """Samples a process's resident memory (with its children) every 0.2 s; keeps the peak."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()
        self.start()

    def run(self):
        try:
            proc = psutil.Process(self.pid)
            while not self.stop.wait(0.2):
                rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
                self.peak = max(self.peak, rss)
        except psutil.Error:
            pass

    def mb(self) -> float:
        self.stop.set()
        return round(self.peak / 2**20, 1)


def load(tmp: Path) -> dict:
    collector = CollectorProcess(tmp / "store")
    with collector:
        rss = PeakRss(collector.pid)
        dashboard = DashboardProcess(collector.query, interval_s=1, log_dir=tmp)
        with dashboard:
            polls, poll_errors, stop = [0], [0], threading.Event()

            def poll():  # what the dashboard's interval callback asks for, every second
                version = None
                while not stop.wait(1.0):
                    reply = try_query(collector.query, {"op": "snapshot", "run": None, "since": version}, timeout=5)
                    polls[0] += 1
                    if reply is None or not reply.get("ok"):
                        poll_errors[0] += 1
                    else:
                        version = reply["version"]
            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            before = query(collector.query, {"op": "stats"})
            publishers = test_durability.start_publishers(tmp, collector.ingest, LOAD_PUBLISHERS, LOAD_RATE, LOAD_S,
                                                          LOAD_ROWS, LOAD_DIM)
            started = time.monotonic()
            for proc, _ in publishers:
                proc.proc.wait(LOAD_S + 120)
            seconds = time.monotonic() - started
            sent = sum(len(test_durability.sent_log(log)) for _, log in publishers)
            stats = wait_for(lambda: (lambda s: s if s["frames_received"] - before["frames_received"] >= sent
                                      else None)(query(collector.query, {"op": "stats"}, timeout=10)), timeout=120)
            drained = time.monotonic() - started
            stop.set()
            poller.join(5)
            dashboard_alive = dashboard.alive()
        alive = collector.alive()
        accepted = stats["frames_accepted"] - before["frames_accepted"]
        return {"publishers": LOAD_PUBLISHERS, "rate_per_publisher": LOAD_RATE, "seconds": round(seconds, 1),
                "frames_sent": sent, "frames_accepted": accepted, "frames_lost": sent - accepted,
                # each publisher paces itself over LOAD_S seconds from its own start; the collector's
                # window is the same plus however long it needed to catch up after the last send
                "sent_per_s": round(sent / LOAD_S), "accepted_per_s": round(accepted / (LOAD_S + drained - seconds)),
                "target_per_s": round(LOAD_PUBLISHERS * LOAD_RATE), "snapshot_polls": polls[0],
                "poll_errors": poll_errors[0], "collector_peak_rss_mb": rss.mb(), "collector_alive": alive,
                "dashboard_alive": dashboard_alive, "rejects": stats["rejects"],
                "ingest_busy_s": stats.get("ingest_busy_s")}


def run_part(name: str, results: dict, fn, *args) -> None:
    print(f"== {name} ...", flush=True)
    started = time.monotonic()
    try:
        results[name] = {"ok": True, **fn(*args)}
    except Exception as exc:  # a failed part is reported, the others still run
        traceback.print_exc()
        results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    results[name]["wall_s"] = round(time.monotonic() - started, 1)
    print(f"== {name}: {json.dumps(results[name], default=str)}", flush=True)


def baseline(tmp: Path) -> dict:
    demo = test_faults.DemoRun(tmp, "tcp://127.0.0.1:9", 200, "no-monitor", monitor=False).start()
    return demo.finish()


def faults(tmp: Path) -> dict:
    return test_faults.stop_then_kill(tmp, FAULT_STEPS, STOP_S)


def table(r: dict) -> str:
    def get(part, *keys, default="failed"):
        value = r.get(part, {})
        for key in keys:
            value = value.get(key, default) if isinstance(value, dict) else default
        return value
    fz, fl = r.get("fuzz", {}), r.get("faults", {})
    summary = fl.get("summary", {})
    monitor = summary.get("monitor", {}) if isinstance(summary, dict) else {}
    rows = [
        ("load held (8 x 200 frames/s, 60 s, dashboard polling)",
         f"{get('load', 'sent_per_s')} frames/s in, {get('load', 'accepted_per_s')} accepted/s; "
         f"{get('load', 'frames_accepted')} of {get('load', 'frames_sent')} accepted; "
         f"{get('load', 'snapshot_polls')} snapshot polls, {get('load', 'poll_errors')} failed"),
        ("collector peak RSS under load", f"{get('load', 'collector_peak_rss_mb')} MB"),
        ("frames lost under load", f"{get('load', 'frames_lost')}"),
        ("bad inputs tried (live collector)",
         f"{get('fuzz', 'frames')} frames, {get('fuzz', 'rejected')} rejected and counted by reason "
         f"({len(fz.get('rejects', {}))} reasons), collector alive, valid frames after: "
         f"{get('fuzz', 'accepted_after')} accepted"),
        ("faults survived (demo twin)",
         f"collector never started: exit 0, {get('never_started', 'monitor', 'frames_dropped')} drops counted; "
         f"SIGSTOP {STOP_S:.0f} s: {get('faults', 'steps_while_stopped')} steps while stopped; kill -9 + restart: "
         f"{get('faults', 'steps_while_dead')} steps while dead, then {get('faults', 'buffered_after_restart')} "
         f"buffered by the new collector"),
        ("trainer step time, no monitor / through the faults",
         f"{get('baseline', 'ms_per_step_median')} / {summary.get('ms_per_step_median', 'failed')} ms (median)"),
        ("trainer peak RSS, no monitor / through the faults",
         f"{get('baseline', 'max_rss_mb')} / {summary.get('max_rss_mb', 'failed')} MB; "
         f"drops counted {monitor.get('frames_dropped', 'failed')} of {monitor.get('frames_queued', 'failed')}"),
        ("frames lost after kill -9 (4 publishers; accepted > 1 s before the kill)",
         f"{get('durability', 'lost')} of {get('durability', 'accepted_before_kill')}; "
         f"{get('durability', 'restored')} restored"),
    ]
    lines = ["| measure | figure |", "| --- | --- |"] + [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines)


def main() -> int:
    results: dict = {"machine": f"{os.cpu_count()} cores", "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    with tempfile.TemporaryDirectory(prefix="acestep-viz-soak-") as tmp:
        tmp = Path(tmp)
        for name, fn in (("fuzz", lambda d: test_fuzz.storm(d, FUZZ_FRAMES)),
                         ("baseline", baseline),
                         ("never_started", lambda d: test_faults.never_started(d, 60)),
                         ("faults", faults),
                         ("durability", test_durability.kill9_while_streaming),
                         ("load", load)):
            part = tmp / name
            part.mkdir()
            run_part(name, results, fn, part)
    text = table(results)
    print("\n" + text)
    ok = all(results[k].get("ok") for k in ("fuzz", "baseline", "never_started", "faults", "durability", "load"))
    results["ok"] = ok
    (REPO / "soak-results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {REPO / 'soak-results.json'}; {'all parts passed' if ok else 'SOME PARTS FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
