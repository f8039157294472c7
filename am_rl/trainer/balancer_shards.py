"""K balancer processes (shards) for one run, started and always stopped by the trainer (``am_rl.balancer.processes``).

Each shard is a plain ``python -m load_balancer`` on its own port, with the run's policy and migration switch; it
inherits the trainer's environment, so it reads the API key from ``AM_RL_BALANCER_API_KEY`` as every client does
(never on its command line, where ``ps`` would show it). Engines given here are split round robin; engines the
trainer registers later go to the shard that owns the fewest (``ShardedBalancerControl``). The shards share nothing:
each routes and migrates among its own engines, and the trainer's clients spread samples over them
(``am_rl.rollout.shards``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx

from am_rl.trainer.balancer_args import balancer_flags

logger = logging.getLogger(__name__)


def shard_argv(section, port: int, engines: list[str]) -> list[str]:
    """The command line of one shard (``section``: ``am_rl.balancer``): it routes as the in-process balancer would."""
    argv = [sys.executable, "-m", "load_balancer", "--host", section.host, "--port", str(port),
            *balancer_flags(section), "--log-level", "warning"]  # fmt: skip
    for engine in engines:
        argv += ["--instance", engine]
    return argv


def wait_up(proc: subprocess.Popen, url: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"balancer shard {url} exited with {proc.returncode} at startup (log: {log})")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"balancer shard {url} did not answer /healthz within {timeout_s:.0f} s (log: {log})")
        time.sleep(0.2)


def stop(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout_s)


@contextlib.contextmanager
def started_shards(section, public_host: str, engine_urls: list[str], log_dir: Path,
                   startup_timeout_s: float = 120.0) -> Iterator[list[str]]:  # fmt: skip
    """``section.processes`` balancer processes, up and answering; yields their URLs as other nodes reach them
    (``public_host``). Engine ``i`` of ``engine_urls`` goes to shard ``i % processes``."""
    k = section.processes
    procs: list[subprocess.Popen] = []
    try:
        urls = []
        for s in range(k):
            port = section.port + s
            log = log_dir / f"balancer_shard{s}.log"
            with open(log, "ab") as out:
                procs.append(subprocess.Popen(shard_argv(section, port, engine_urls[s::k]), stdout=out,
                                              stderr=subprocess.STDOUT, start_new_session=True))  # fmt: skip
            wait_up(procs[-1], f"http://127.0.0.1:{port}", log, startup_timeout_s)
            urls.append(f"http://{public_host}:{port}")
        logger.info("%d balancer shards: %s (logs in %s)", k, " ".join(urls), log_dir)
        yield urls
    finally:
        for proc in procs:
            stop(proc)
