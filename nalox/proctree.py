"""The processes below a pid, read from Linux's /proc, and making sure they are gone.

A process is named by its pid and its start time, so a pid the kernel has handed out again is never
signalled by mistake. Linux only, as the rest of the unit software."""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Process:
    pid: int
    start: int  # clock ticks after boot: field 22 of /proc/PID/stat


@dataclass(frozen=True)
class _Stat:
    ppid: int
    state: str
    start: int


def _stat(pid: int) -> _Stat | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 onwards
    return _Stat(ppid=int(fields[1]), state=fields[0], start=int(fields[19]))


def descendants(pid: int) -> list[Process]:
    """Every process below `pid` right now (children, their children, ...)."""
    children: dict[int, list[Process]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                children.setdefault(st.ppid, []).append(Process(int(entry.name), st.start))
    found: list[Process] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child.pid)
    return found


def running(p: Process) -> bool:
    """The same process (same start time) still exists and is not a zombie."""
    st = _stat(p.pid)
    return st is not None and st.start == p.start and st.state != "Z"


def kill(p: Process) -> None:
    if running(p):
        try:
            os.kill(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def wait_gone(procs: list[Process], timeout: float) -> list[Process]:
    """Wait until none of `procs` is running; those still running after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    left = [p for p in procs if running(p)]
    while left and time.monotonic() < deadline:
        pause.wait(0.02)
        left = [p for p in left if running(p)]
    return left
