"""Failures mid-flight: a worker killed mid-job, Redis restarted mid-batch, Redis down then back."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
import redis

from reward_server import keys
from reward_server.embedded_redis import EmbeddedRedis
from reward_server.launcher import free_port, reward_service

SETTINGS = {"heartbeat_ttl_s": 2.0, "code_test_timeout_s": 10.0}


def slow_code_item(seconds: float, answer: int) -> dict:
    code = f"import time\ntime.sleep({seconds})\nprint(int(input()) + {answer})"
    return {
        "reward_type": "code",
        "response": f"```python\n{code}\n```",
        "ground_truth": {
            "language": "python",
            "test_type": "stdin_stdout",
            "tests": [{"input": "0", "output": str(answer)}],
        },
    }


def post_in_thread(url: str, path: str, body: dict) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def call():
        try:
            out["response"] = httpx.post(url + path, json=body, timeout=120)
        except Exception as e:
            out["error"] = e

    thread = threading.Thread(target=call)
    thread.start()
    return thread, out


@pytest.fixture
def tcp_redis(tmp_path):
    (tmp_path / "redis").mkdir()
    server = EmbeddedRedis(port=free_port(), data_dir=str(tmp_path / "redis")).start()
    yield server
    server.stop()


def test_worker_killed_mid_job_loses_nothing(tmp_path, tcp_redis):
    r = redis.Redis.from_url(tcp_redis.url)
    with reward_service(tmp_path / "server.log", redis_url=tcp_redis.url, workers=2, settings=SETTINGS) as (url, _):
        thread, out = post_in_thread(url, "/score", slow_code_item(3, 7))
        victim = None
        deadline = time.monotonic() + 20
        while victim is None and time.monotonic() < deadline:
            for key in r.scan_iter(match=keys.processing("*")):
                if r.llen(key):
                    victim = key.decode().removeprefix(keys.processing(""))
            time.sleep(0.05)
        assert victim is not None, "no worker picked the job up"
        victim_pid = int(victim.split(":")[1])
        orphans = psutil.Process(victim_pid).children()  # its verifier process, mid-job
        os.kill(victim_pid, signal.SIGKILL)
        thread.join(timeout=60)
        assert not thread.is_alive()
        response = out["response"]
        assert response.status_code == 200, response.text
        assert response.json()["score"] == 1.0
        assert r.zscore(keys.WORKERS, victim) is None  # reaped
        _, alive = psutil.wait_procs(orphans, timeout=30)  # it finishes its run, sees its worker gone, exits
        assert not alive
        assert r.llen(keys.JOBS) == 0 and not list(r.scan_iter(match=keys.attempts("*")))
        deadline = time.monotonic() + 30
        while len(httpx.get(url + "/healthz", timeout=5).json().get("workers", [])) < 2:  # the supervisor replaced it
            assert time.monotonic() < deadline
            time.sleep(0.3)


def test_redis_restart_mid_batch(tmp_path, tcp_redis):
    items = [slow_code_item(1.0, i) for i in range(6)]
    with reward_service(tmp_path / "server.log", redis_url=tcp_redis.url, workers=2, settings=SETTINGS) as (url, _):
        thread, out = post_in_thread(url, "/score_batch", {"items": items})
        time.sleep(1.5)
        tcp_redis.stop()  # started with --save "": the restarted Redis is empty
        time.sleep(1.0)
        tcp_redis.start()
        thread.join(timeout=100)
        assert not thread.is_alive()
        response = out["response"]
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [res["score"] for res in results] == [1.0] * 6, results


def test_redis_down_is_503_and_recovers(tmp_path, tcp_redis):
    item = {"reward_type": "math", "response": r"\boxed{1}", "ground_truth": "1"}
    with reward_service(tmp_path / "server.log", redis_url=tcp_redis.url, workers=1, settings=SETTINGS) as (url, _):
        assert httpx.post(url + "/score", json=item, timeout=30).json()["score"] == 1.0
        tcp_redis.stop()
        t0 = time.monotonic()
        down = httpx.post(url + "/score", json={**item, "response": r"\boxed{2}"}, timeout=60)
        assert down.status_code == 503 and "redis" in down.json()["error"]
        assert time.monotonic() - t0 < 30
        assert httpx.get(url + "/healthz", timeout=30).status_code == 503
        tcp_redis.start()
        deadline = time.monotonic() + 30
        while True:
            up = httpx.post(url + "/score", json={**item, "response": r"\boxed{2}"}, timeout=60)
            if up.status_code == 200:
                break
            assert time.monotonic() < deadline, up.text
            time.sleep(0.5)
        assert up.json()["score"] == 0.0


def test_no_worker_is_an_error_then_a_remote_worker_serves(tmp_path, tcp_redis):
    item = {"reward_type": "math", "response": r"\boxed{6}", "ground_truth": "6"}
    with reward_service(
        tmp_path / "server.log",
        redis_url=tcp_redis.url,
        workers=0,
        settings=SETTINGS,
        extra_args=("--no-worker-grace", "2"),
        require_workers=False,
    ) as (url, _):
        assert httpx.get(url + "/healthz", timeout=10).json()["status"] == "no_workers"
        t0 = time.monotonic()
        r = httpx.post(url + "/score", json=item, timeout=60)
        assert r.status_code == 503 and "no live reward worker" in r.json()["error"], r.text
        assert time.monotonic() - t0 < 30
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]),
        }
        with open(tmp_path / "worker.log", "wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "reward_server.worker", "--redis-url", tcp_redis.url],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            r = httpx.post(url + "/score", json=item, timeout=120)
            assert r.status_code == 200 and r.json()["score"] == 1.0, r.text
        finally:
            worker.terminate()
            worker.wait(timeout=30)
        assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-2000:]
