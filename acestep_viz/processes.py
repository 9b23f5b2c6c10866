"""Process control that works on POSIX and Windows: stop signals and asking a child to stop.
Standard library only.

Windows has no SIGTERM delivery between processes. So each function below picks its mechanism by
``os.name``: on Windows, children get a process group of their own and are asked to stop with
CTRL_BREAK_EVENT (Python turns it into SIGBREAK).
"""
from __future__ import annotations

import os
import signal
import subprocess
from typing import Callable


def on_windows() -> bool:
    return os.name == "nt"


def stop_signals() -> list[int]:
    """The signals that mean "stop now, cleanly": Ctrl-C and SIGTERM, plus Ctrl-Break on Windows."""
    signals = [signal.SIGINT, signal.SIGTERM]
    if on_windows() and hasattr(signal, "SIGBREAK"):
        signals.append(signal.SIGBREAK)
    return signals


def on_stop_signals(callback: Callable[[], None]) -> None:
    """Call ``callback`` (from the main thread) when a stop signal arrives."""
    def handler(signum, frame):
        callback()
    for signum in stop_signals():
        signal.signal(signum, handler)


def child_popen_options() -> dict:
    """Popen keywords for a child that ``ask_to_stop`` can stop cleanly: on Windows a process group of
    its own, so that CTRL_BREAK_EVENT reaches it and nothing else."""
    if on_windows():
        return {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200)}
    return {}


def ask_to_stop(proc: subprocess.Popen) -> None:
    """Ask a child started with ``child_popen_options`` to stop and clean up (``Popen.terminate`` on
    Windows would end it at once, without its shutdown)."""
    if proc.poll() is not None:
        return
    if on_windows():
        try:
            proc.send_signal(getattr(signal, "CTRL_BREAK_EVENT", 1))
            return
        except OSError:
            pass  # no console to send the event through (pythonw, a service): end it at once instead
    proc.terminate()
