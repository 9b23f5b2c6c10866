"""Autostart: a training process starts the sidecar when none answers, a second run reuses it, two racing
trainers end with one, and a run with autostart off and no collector still trains to the end."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from acestep_viz.trainer_plugin.autostart import collector_answers, ensure_collector
from support import NUMBA_CACHE, REPO, child_env, free_port, try_query, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def sidecar_env(tmp_path, monkeypatch):
    """Free loopback ports and a fresh store for a sidecar; any sidecar the test started is stopped."""
    env = {"ACESTEP_VIZ_STORE": str(tmp_path / "store"), "ACESTEP_VIZ_PORT": str(free_port()),
           "ACESTEP_VIZ_COLLECTOR": f"tcp://127.0.0.1:{free_port()}", "NUMBA_CACHE_DIR": str(NUMBA_CACHE)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    started: list[int] = []
    yield {**env, "ingest": f"tcp://127.0.0.1:{free_port()}", "started": started}
    for pid in started:
        os.kill(pid, signal.SIGTERM)  # `up` stops its collector and dashboard on SIGTERM
    wait_for(lambda: not collector_answers(env["ACESTEP_VIZ_COLLECTOR"]), timeout=30)


def test_the_first_run_starts_the_sidecar_and_the_second_reuses_it(sidecar_env):
    query = sidecar_env["ACESTEP_VIZ_COLLECTOR"]
    assert not collector_answers(query)
    state, pid = ensure_collector(sidecar_env["ingest"], query, sidecar_env["ACESTEP_VIZ_STORE"])
    sidecar_env["started"].append(pid)
    assert state == "started" and collector_answers(query)
    stats = try_query(query, {"op": "stats"})
    assert stats["ingest"] == sidecar_env["ingest"] and stats["store"] == sidecar_env["ACESTEP_VIZ_STORE"]
    assert ensure_collector(sidecar_env["ingest"], query, sidecar_env["ACESTEP_VIZ_STORE"]) == ("running", None)
    log = Path(sidecar_env["ACESTEP_VIZ_STORE"]) / "sidecar.log"
    url = f"http://127.0.0.1:{sidecar_env['ACESTEP_VIZ_PORT']}/"  # the dashboard, on the configured port
    wait_for(lambda: url in log.read_text(errors="replace"), timeout=60)


def test_two_trainers_racing_end_with_one_sidecar(sidecar_env):
    code = ("import json, sys; from acestep_viz.trainer_plugin.autostart import ensure_collector; "
            "print(json.dumps(ensure_collector(*sys.argv[1:4])))")
    args = [sidecar_env["ingest"], sidecar_env["ACESTEP_VIZ_COLLECTOR"], sidecar_env["ACESTEP_VIZ_STORE"]]
    env = child_env({k: v for k, v in sidecar_env.items() if k.startswith(("ACESTEP", "NUMBA"))})
    racers = [subprocess.Popen([sys.executable, "-c", code, *args], env=env, cwd=REPO, stdout=subprocess.PIPE,
                               text=True) for _ in range(2)]
    results = [json.loads(racer.communicate(timeout=120)[0]) for racer in racers]
    sidecar_env["started"].extend(pid for state, pid in results if state == "started")
    assert sorted(state for state, _ in results) == ["running", "started"]


def test_a_run_with_autostart_off_and_no_collector_trains_to_the_end(tmp_path):
    nobody = f"tcp://127.0.0.1:{free_port()}"
    done = subprocess.run([sys.executable, "-m", "acestep_viz", "demo", "--endpoint", nobody, "--steps", "4"],
                          cwd=REPO, env=child_env({"ACESTEP_VIZ_AUTOSTART": "0"}), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("rank, expected", [(0, True), (1, False)])
def test_attach_starts_the_sidecar_only_from_the_publishing_rank(monkeypatch, rank, expected):
    from acestep_viz.trainer_plugin import autostart
    from acestep_viz.trainer_plugin.demo import build_pipeline
    from acestep_viz.trainer_plugin.tap import attach

    calls = []
    monkeypatch.setattr(autostart, "ensure_collector", lambda *args, **kw: calls.append(args) or ("running", None))
    with attach(build_pipeline(batch_size=2), endpoint=f"tcp://127.0.0.1:{free_port()}", rank=rank,
                autostart=True):
        pass
    assert bool(calls) is expected


def test_a_sidecar_that_cannot_start_is_one_warning_and_the_hooks_still_attach(monkeypatch, caplog):
    from acestep_viz.trainer_plugin import autostart
    from acestep_viz.trainer_plugin.demo import build_pipeline
    from acestep_viz.trainer_plugin.tap import attach

    def refuse(*args, **kw):
        raise autostart.AutostartError("`acestep-viz up` exited with code 2; see sidecar.log")

    monkeypatch.setattr(autostart, "ensure_collector", refuse)
    with caplog.at_level("WARNING", logger="acestep_viz"):
        with attach(build_pipeline(batch_size=2), endpoint=f"tcp://127.0.0.1:{free_port()}", autostart=True) as tap:
            assert tap.hooked
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "exited with code 2" in warnings[0] and "training goes on" in warnings[0]
