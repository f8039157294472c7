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

from am_rl.ports import PortReservation
from am_rl.trainer.balancer_args import balancer_flags
from am_rl.trainer.balancer_control import API_KEY_ENV

logger = logging.getLogger(__name__)


def shard_argv(section, shard: int, port: int, engines: list[str], peers: list[str]) -> list[str]:
    """The command line of shard ``shard`` (1-based; ``section``: ``am_rl.balancer``): it routes as the in-process
    balancer would; ``peers``, the other shards, make its ``/dashboard?view=all`` the whole run's."""
    argv = [sys.executable, "-m", "load_balancer", "--host", section.host, "--port", str(port),
            *balancer_flags(section), "--shard", f"{shard}/{section.processes}", "--log-level", "warning"]  # fmt: skip
    for engine in engines:
        argv += ["--instance", engine]
    for peer in peers:
        argv += ["--peer", peer]
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


def report_totals(urls: list[str]) -> None:
    """One line per shard with what it relayed, read from its dashboard data before it stops: the samples really went
    through every shard, and to which of its engines (the trainer's one-balancer line is ``balancer totals``)."""
    key = os.environ.get(API_KEY_ENV)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    for shard, url in enumerate(urls, 1):
        try:
            data = httpx.get(f"{url}/dashboard/data", headers=headers, timeout=10.0).json()
        except (httpx.HTTPError, ValueError) as e:
            print(f"balancer shard {shard}/{len(urls)} totals: unreadable ({e!r})", flush=True)
            continue
        totals = data["totals"]
        per_engine = {view["url"]: view["tokens_relayed"] for view in data["instances"]}
        print(
            f"balancer shard {shard}/{len(urls)} totals: requests={totals['requests']} "
            f"tokens_relayed={totals['tokens_relayed']} failovers={totals['failovers']} "
            f"migrations={totals['migrations']} per_engine_tokens={per_engine}",
            flush=True,
        )


@contextlib.contextmanager
def started_shards(section, public_host: str, engine_urls: list[str], log_dir: Path,
                   startup_timeout_s: float = 120.0) -> Iterator[list[str]]:  # fmt: skip
    """``section.processes`` balancer processes, up and answering; yields their URLs as other nodes reach them
    (``public_host``). Shard ``s`` listens on ``section.port + s - 1`` (port 0: each on a free port) and gets engines
    ``s - 1, s - 1 + K, ...`` of ``engine_urls``."""
    k = section.processes
    reserved = [] if section.port else [PortReservation(section.host) for _ in range(k)]
    ports = [r.port for r in reserved] or [section.port + s for s in range(k)]
    local = [f"http://127.0.0.1:{port}" for port in ports]
    urls = [f"http://{public_host}:{port}" for port in ports]
    procs: list[subprocess.Popen] = []
    try:
        for s, port in enumerate(ports, 1):
            log = log_dir / f"balancer_shard{s}.log"
            argv = shard_argv(section, s, port, engine_urls[s - 1 :: k], local[: s - 1] + local[s:])
            with open(log, "ab") as out:
                procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
            wait_up(procs[-1], local[s - 1], log, startup_timeout_s)
            logger.info("load balancer shard %d of %d at %s (dashboard: %s/dashboard)", s, k, urls[s - 1], urls[s - 1])
        logger.info("%d balancer shards: %s (logs in %s; the whole run on any shard's %s/dashboard?view=all)", k,
                    " ".join(urls), log_dir, urls[0])  # fmt: skip
        yield urls
        report_totals(local)
    finally:
        for proc in procs:
            stop(proc)
        for r in reserved:
            r.release()
