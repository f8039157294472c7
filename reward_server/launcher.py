"""Start a reward service as a subprocess on loopback and wait until it is healthy (tests, the CPU demo)."""

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx

from reward_server.auth import API_KEY_ENV
from reward_server.redis_url import REDIS_URL_ENV

logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def reward_service(
    log_path: Path,
    redis_url: str | None = None,
    workers: int = 2,
    settings: dict | None = None,
    limits: dict | None = None,
    api_key: str | None = None,
    port: int | None = None,
    extra_args: tuple[str, ...] = (),
    ready_timeout_s: float = 120.0,
    require_workers: bool = True,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Yields (base URL, process) once /healthz is 200 (or, without `require_workers`, once it answers at all);
    stops the service (and with it its workers) on exit, whatever happens. `settings` are WorkerSettings fields,
    `limits` InputLimits fields; the API key and the Redis URL reach the service in its environment, never in its
    command line."""
    port = port or free_port()
    cmd = [
        sys.executable,
        "-m",
        "reward_server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--settings-json",
        json.dumps(settings or {}),
        "--limits-json",
        json.dumps(limits or {}),
        *extra_args,
    ]
    env = {k: v for k, v in os.environ.items() if k not in (API_KEY_ENV, REDIS_URL_ENV)}
    if api_key:
        env[API_KEY_ENV] = api_key
    if redis_url:
        env[REDIS_URL_ENV] = redis_url
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in [repo, env.get("PYTHONPATH", "")] if p)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"reward service exited ({proc.returncode}): {log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"reward service not healthy in {ready_timeout_s:.0f}s: {log_path.read_text()[-3000:]}"
                )
            try:
                status = httpx.get(url + "/healthz", timeout=2).status_code
                if status == 200 or not require_workers:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
