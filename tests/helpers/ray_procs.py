"""Stopping exactly the Ray processes a test started (never `ray stop`: other people's Ray runs on
this machine). Ray workers put themselves in their own sessions and rename themselves (ray::IDLE),
so a process group alone misses them: note the whole process tree before killing anything."""

import os
import signal
import time
from pathlib import Path


def _stat_fields(pid: int) -> list:
    # The name (field 2) may contain spaces and parentheses; everything after the last ")" is
    # space-separated: state, ppid, pgrp, ...
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    try:
        return _stat_fields(pid)[0] != "Z"
    except OSError:
        return False


def descendants(roots: list) -> set:
    children: dict = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(_stat_fields(int(entry.name))[1]), []).append(
                    int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    found, todo = set(), list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def pids_mentioning(text: str) -> set:
    """Processes whose command line contains ``text`` (e.g. a test's unique temp dir)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.add(int(entry.name))
            except OSError:
                continue
    return pids


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def kill_trees(procs: list, also: set = frozenset()) -> set:
    """SIGTERM then SIGKILL each Popen's process group (each started with start_new_session),
    then SIGKILL every descendant noted beforehand and ``also``. Returns pids still alive."""
    strays = descendants([p.pid for p in procs]) | set(also)
    # SIGTERM first lets `ray start --block` stop its own children; all groups at once, so the
    # grace periods overlap.
    _signal_groups(procs, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        time.sleep(0.1)
    _signal_groups(procs, signal.SIGKILL)  # whatever of the groups is left
    for proc in procs:
        proc.wait(timeout=15)
    for pid in strays:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(pid) for pid in strays):
        time.sleep(0.2)
    return {pid for pid in strays if alive(pid)}


def _signal_groups(procs: list, sig: int) -> None:
    for proc in procs:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
