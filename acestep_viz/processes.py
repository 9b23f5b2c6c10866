"""Process control that works on POSIX and Windows: stop signals, asking a child to stop, a parent's
liveness, a lower priority. Standard library only (the trainer side uses it too).

Windows has no SIGTERM delivery between processes, no ``os.nice``, and ``os.getppid()`` keeps
returning the dead parent's pid; ``os.kill(pid, 0)`` there sends CTRL_C_EVENT instead of probing.
So each function below picks its mechanism by ``os.name``: on Windows, children get a process group
of their own and are asked to stop with CTRL_BREAK_EVENT (Python turns it into SIGBREAK), a parent
is watched through a handle on its process, and priority is set with ``SetPriorityClass``.
"""
from __future__ import annotations

import functools
import os
import signal
import subprocess
from typing import Callable

_SYNCHRONIZE = 0x00100000  # the access right WaitForSingleObject needs
_WAIT_OBJECT_0 = 0  # WaitForSingleObject: the process has exited
_BELOW_NORMAL_PRIORITY_CLASS = 0x4000


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


class ParentWatch:
    """Whether the process that started this one is still running.

    POSIX: the parent is gone once ``os.getppid()`` no longer returns its pid (the orphan was
    adopted). Windows: a handle opened at start-up (the pid cannot be reused while it is open) is
    signalled when the parent exits. A watch that cannot open the handle reports the parent alive:
    the child then stops only when asked."""

    def __init__(self, parent_pid: int):
        self.parent_pid = parent_pid
        self._handle = _open_process(parent_pid) if on_windows() else None

    def alive(self) -> bool:
        if not on_windows():
            return os.getppid() == self.parent_pid
        if self._handle is None:
            return True
        return _process_running(self._handle)

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            _kernel32().CloseHandle(handle)

    def __enter__(self) -> "ParentWatch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def lower_priority(niceness: int) -> bool:
    """Run this process below normal priority, so that the training process goes first when cores are
    short. Returns False where the system refused."""
    try:
        if on_windows():
            kernel32 = _kernel32()
            return bool(kernel32.SetPriorityClass(kernel32.GetCurrentProcess(), _BELOW_NORMAL_PRIORITY_CLASS))
        os.nice(niceness)
        return True
    except (OSError, AttributeError):
        return False


@functools.lru_cache(maxsize=1)
def _kernel32():
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.WaitForSingleObject.argtypes = (wintypes.HANDLE, wintypes.DWORD)
    kernel32.WaitForSingleObject.restype = wintypes.DWORD
    kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
    kernel32.GetCurrentProcess.restype = wintypes.HANDLE
    kernel32.SetPriorityClass.argtypes = (wintypes.HANDLE, wintypes.DWORD)
    return kernel32


def _open_process(pid: int):
    try:
        handle = _kernel32().OpenProcess(_SYNCHRONIZE, False, pid)
    except (OSError, AttributeError):
        return None
    return handle or None


def _process_running(handle) -> bool:
    """A process handle is signalled once its process has exited; WAIT_FAILED means we cannot tell."""
    result = _kernel32().WaitForSingleObject(handle, 0)
    return result != _WAIT_OBJECT_0
