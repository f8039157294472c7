"""Runs verifiers in a forked child process that is SIGKILLed and replaced when a job overruns.

Hand-written rather than a process pool: concurrent.futures cannot kill a task stuck in C code (Math-Verify's
signal-based timeouts cannot either), and the worker must keep heartbeating while it waits; one child per
worker with a pipe is all that takes.
"""

import logging
import multiprocessing as mp
import os
import shutil
import signal
import tempfile
import time
from multiprocessing.connection import Connection
from typing import Callable

from pydantic import TypeAdapter

from reward_server.types import ScoreItem, ScoreResult
from reward_server.verifiers import InfraError

logger = logging.getLogger(__name__)

_ITEM = TypeAdapter(ScoreItem)
POLL_S = 0.5  # how often the parent wakes to heartbeat while a job runs


def _serve(conn: Connection, parent_end: Connection, verifiers: dict, tmp_root: str) -> None:
    parent_end.close()  # the fork copied the worker's end; holding it would hide the worker's death (no EOF)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a replacement child would inherit the worker's handler
    tempfile.tempdir = tmp_root  # every temp dir a verifier makes lands where the parent can sweep it
    try:
        while True:
            conn.send(_run_one(verifiers, conn.recv_bytes()))
    except (EOFError, OSError):  # the worker is gone (stopped, or killed mid-job): nobody to answer
        return
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)


def _run_one(verifiers: dict, payload: bytes) -> ScoreResult:
    item = _ITEM.validate_json(payload)
    try:
        verdict = verifiers[item.reward_type].verify(item)
    except InfraError as e:
        logger.warning("infra error in %s verifier: %s", item.reward_type, e)
        return ScoreResult(status="error", score=None, error=f"{item.reward_type} verifier infra error: {e}")
    except Exception as e:  # a verifier bug is our failure, not the response's
        logger.exception("%s verifier raised", item.reward_type)
        return ScoreResult(
            status="error", score=None, error=f"{item.reward_type} verifier raised {type(e).__name__}: {e}"
        )
    return ScoreResult(status="ok", score=verdict.score, details=verdict.details, cacheable=verdict.cacheable)


class Executor:
    def __init__(self, verifiers: dict):
        self._verifiers = verifiers
        self._ctx = mp.get_context("fork")
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        # A hard-killed child cannot clean up after itself; its temp root is swept when it is replaced.
        self.tmp_root = tempfile.mkdtemp(prefix="rs-exec-")
        os.chmod(self.tmp_root, 0o711)  # sandbox uids traverse into the C++ build dirs below, nothing more
        self._conn, child_conn = self._ctx.Pipe()
        self._proc = self._ctx.Process(
            target=_serve, args=(child_conn, self._conn, self._verifiers, self.tmp_root), daemon=True
        )
        self._proc.start()
        child_conn.close()

    def _replace(self) -> None:
        if self._proc.pid is not None and self._proc.is_alive():
            os.kill(self._proc.pid, signal.SIGKILL)
        self._proc.join(timeout=10)
        self._conn.close()
        shutil.rmtree(self.tmp_root, ignore_errors=True)
        self.restarts += 1
        self._start()

    def run(self, item: ScoreItem, tick: Callable[[], None]) -> ScoreResult:
        """Score one item; `tick` is called every POLL_S while waiting (the worker heartbeats there)."""
        timeout_s = self._verifiers[item.reward_type].hard_timeout_s(item)
        payload = item.model_dump_json().encode()
        try:
            self._conn.send_bytes(payload)
        except OSError:  # the idle child died (OOM killer, stray signal): replace it once
            logger.warning("verifier pid %s gone while idle; replacing it", self._proc.pid)
            self._replace()
            self._conn.send_bytes(payload)
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                logger.warning(
                    "%s verification overran %.1fs; killing verifier pid %s",
                    item.reward_type,
                    timeout_s,
                    self._proc.pid,
                )
                self._replace()
                return ScoreResult(
                    status="timeout",
                    score=0.0,
                    details={"reason": "verifier_timeout", "timeout_s": timeout_s},
                    cacheable=False,
                )
            if self._conn.poll(min(left, POLL_S)):
                try:
                    return self._conn.recv()
                except EOFError:
                    code = self._proc.exitcode
                    self._replace()
                    return ScoreResult(status="error", score=None, error=f"verifier process died (exit code {code})")
            tick()

    def close(self) -> None:
        self._conn.close()
        self._proc.join(timeout=2)
        if self._proc.is_alive():
            os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.join(timeout=5)
        shutil.rmtree(self.tmp_root, ignore_errors=True)
