"""The command line as a user meets it: one-line errors that say what to fix, exit code 2."""
import subprocess
import sys

import pytest
from support import REPO, child_env, free_port

from acestep_viz.security import bind_problem


def cli(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "acestep_viz", *args], cwd=REPO, env=child_env(env),
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(result):
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.slow
def test_bad_endpoint_flag():
    line = one_line_error(cli("collector", "--ingest", "localhost:5557"))
    assert "--ingest" in line and "tcp://" in line


@pytest.mark.slow
def test_bad_number_from_the_environment_names_the_variable():
    line = one_line_error(cli("collector", env={"ACESTEP_VIZ_BUFFER_SIZE": "lots"}))
    assert "ACESTEP_VIZ_BUFFER_SIZE" in line


@pytest.mark.slow
def test_non_loopback_bind_needs_allow_remote():
    line = one_line_error(cli("collector", "--ingest", "tcp://0.0.0.0:5557"))
    assert "--allow-remote" in line
    line = one_line_error(cli("dashboard", "--host", "0.0.0.0"))
    assert "--allow-remote" in line


@pytest.mark.slow
def test_stats_without_a_collector_says_how_to_start_one():
    line = one_line_error(cli("stats", "--collector", f"tcp://127.0.0.1:{free_port()}"))
    assert "acestep-viz collector" in line


@pytest.mark.slow
def test_port_in_use_is_a_clear_error(tmp_path):
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_line_error(cli("collector", "--ingest", f"tcp://127.0.0.1:{port}",
                                  "--query", f"tcp://127.0.0.1:{free_port()}", "--store", str(tmp_path)))
    assert "--ingest" in line and str(port) in line


@pytest.mark.parametrize("address, ok", [
    ("tcp://127.0.0.1:1", True), ("tcp://localhost:1", True), ("tcp://[::1]:1", True), ("127.0.0.1", True),
    ("ipc:///tmp/x", True), ("tcp://0.0.0.0:1", False), ("tcp://*:1", False), ("0.0.0.0", False),
    ("tcp://192.168.1.4:1", False),
])
def test_loopback_detection(address, ok):
    assert (bind_problem(address, allow_remote=False) is None) is ok
    assert bind_problem(address, allow_remote=True) is None
