"""Checks shared by the sandbox test files: nothing of a sandbox outlives it on the host."""

import tempfile
import time
from pathlib import Path

import psutil

from reward_server import sandbox


def sandbox_processes() -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["uids", "status"]):
        uids = p.info["uids"]
        if uids and sandbox.SANDBOX_UID_BASE <= uids.real < sandbox.SANDBOX_UID_BASE + 4000:
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
    return {p.name for p in Path(tempfile.gettempdir()).glob("rs-*")}
