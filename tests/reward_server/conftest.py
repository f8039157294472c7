"""Real reward servers (`python -m reward_server` subprocesses) on loopback, with real Redis and workers."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
FAST_SETTINGS = {"math_timeout_s": 4.0, "code_test_timeout_s": 3.0, "heartbeat_ttl_s": 3.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@contextlib.contextmanager
def reward_server(log_path: Path, redis_url: str | None = None, workers: int = 2, settings: dict | None = None,
                  extra_args: tuple[str, ...] = ()):
    port = free_port()
    cmd = [sys.executable, "-m", "reward_server", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
           "--settings-json", json.dumps({**FAST_SETTINGS, **(settings or {})}), *extra_args]
    if redis_url:
        cmd += ["--redis-url", redis_url]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"reward server exited: {log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"reward server not healthy in 90s: {log_path.read_text()[-3000:]}"
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
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


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with reward_server(tmp_path_factory.mktemp("rs") / "server.log") as (url, _):
        yield url


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server, timeout=60) as c:
        yield c
