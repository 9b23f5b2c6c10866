"""Process control on POSIX and Windows. No Windows machine runs these tests: the Windows branches run
here with the platform faked (``processes.on_windows``, ``os.name``), so they check which calls are made
with which arguments, not Windows itself."""
import os
import signal
import subprocess

import pytest
from acestep_viz.collector import options as collector_options
from acestep_viz.collector import store

from acestep_viz import processes, settings


@pytest.fixture
def windows(monkeypatch):
    """The Windows branches, with the POSIX-only calls made to fail loudly."""
    monkeypatch.setattr(processes, "on_windows", lambda: True)
    monkeypatch.setattr(signal, "SIGBREAK", 21, raising=False)
    monkeypatch.setattr(signal, "CTRL_BREAK_EVENT", 1, raising=False)

    def posix_only(*args):
        raise AssertionError("a POSIX-only call on Windows")
    for name in ("kill", "getppid", "nice", "killpg"):
        monkeypatch.setattr(os, name, posix_only, raising=False)


class FakeChild:
    def __init__(self, finished=False):
        self.finished, self.sent, self.terminated = finished, [], False

    def poll(self):
        return 0 if self.finished else None

    def send_signal(self, signum):
        self.sent.append(signum)

    def terminate(self):
        self.terminated = True


def test_windows_children_get_their_own_group_and_are_asked_with_ctrl_break(windows):
    assert processes.child_popen_options() == {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP
                                               if hasattr(subprocess, "CREATE_NEW_PROCESS_GROUP") else 0x200}
    child = FakeChild()
    processes.ask_to_stop(child)
    assert child.sent == [signal.CTRL_BREAK_EVENT] and not child.terminated


def test_posix_children_are_asked_with_sigterm_and_a_finished_one_is_left_alone(monkeypatch):
    monkeypatch.setattr(processes, "on_windows", lambda: False)
    assert processes.child_popen_options() == {}
    child, finished = FakeChild(), FakeChild(finished=True)
    processes.ask_to_stop(child)
    processes.ask_to_stop(finished)
    assert child.terminated and not finished.terminated and not finished.sent


def test_windows_stop_signals_include_ctrl_break(windows):
    assert processes.stop_signals() == [signal.SIGINT, signal.SIGTERM, signal.SIGBREAK]


def test_stop_signal_handlers_call_back(monkeypatch):
    installed = {}
    monkeypatch.setattr(signal, "signal", lambda signum, handler: installed.setdefault(signum, handler))
    stopped = []
    processes.on_stop_signals(lambda: stopped.append(True))
    assert set(installed) == set(processes.stop_signals())
    installed[signal.SIGTERM](signal.SIGTERM, None)
    assert stopped == [True]


def test_windows_store_and_kernel_cache_default_to_local_app_data(monkeypatch):
    monkeypatch.setattr(os, "name", "nt")
    monkeypatch.setenv("LOCALAPPDATA", "/users/me/AppData/Local")
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    assert settings.default_store_dir() == os.path.join("/users/me/AppData/Local", "acestep-viz", "runs")
    assert collector_options.default_numba_cache() == os.path.join("/users/me/AppData/Local", "acestep-viz",
                                                                   "numba")


def test_windows_store_skips_the_folder_fsync_it_cannot_do(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "name", "nt")

    def no_folder_handles(*args):
        raise PermissionError("Windows cannot open a folder as a file")
    monkeypatch.setattr(os, "open", no_folder_handles)
    store._fsync_dir(tmp_path)  # returns without trying


def test_windows_child_without_a_console_is_ended_at_once(windows):
    class NoConsole(FakeChild):
        def send_signal(self, signum):
            raise OSError("GenerateConsoleCtrlEvent failed")
    child = NoConsole()
    processes.ask_to_stop(child)
    assert child.terminated


class RecordingPopen(FakeChild):
    started = []

    def __init__(self, cmd, **kwargs):
        super().__init__()
        self.cmd, self.kwargs = cmd, kwargs
        RecordingPopen.started.append(self)

    def wait(self, timeout=None):
        self.finished = True
        return 0


def test_up_on_windows_starts_children_in_their_own_group_and_stops_them_with_ctrl_break(windows, monkeypatch):
    from acestep_viz import launcher

    RecordingPopen.started = []
    monkeypatch.setattr(launcher.subprocess, "Popen", RecordingPopen)
    stack = launcher.Stack({"curve_dir": None}, {"host": "127.0.0.1", "port": 8050}, demo=False)
    stack._spawn("collector", "collector")
    stack._spawn("dashboard", "dashboard")
    stack.close()
    assert [p.kwargs["creationflags"] for p in RecordingPopen.started] == [processes.child_popen_options()[
        "creationflags"]] * 2
    assert all(p.sent == [signal.CTRL_BREAK_EVENT] and not p.terminated for p in RecordingPopen.started)


@pytest.mark.parametrize("run", ["con", "NUL", "com1.txt", "lpt9", "run."])
def test_run_names_windows_reserves_get_a_folder_name_valid_everywhere(run):
    folder = store.run_dir_name(run)
    assert folder.startswith("x-") and bytes.fromhex(folder[2:]).decode() == run


@pytest.mark.parametrize("run", ["demo-20261204-151800", "console", "my.lora.v2", "comet"])
def test_ordinary_run_names_keep_their_folder_name(run):
    assert store.run_dir_name(run) == run
