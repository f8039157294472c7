"""Helpers shared by the load-balancer tests (imported as a plain module: pytest puts this folder on sys.path)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def loadgen_process(tokens_per_s: float = 200.0):
    """A load generator in its own process, so a test can SIGKILL it mid-stream like a crashed engine."""
    port = free_port()
    env = os.environ | {"PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "load_balancer.loadgen", "--port", str(port), "--tokens-per-s", str(tokens_per_s)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "load generator process exited at startup"
            assert time.monotonic() < deadline, "load generator process did not come up"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        yield proc, url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def sse_chunks(text: str) -> list[dict]:
    """The JSON chunks of an SSE body (no [DONE]); asserts it ended with [DONE]."""
    events = [e for e in text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]", events[-3:]
    return [orjson.loads(e[len("data: ") :]) for e in events[:-1]]


def without_ids(chunks: list[dict]) -> list[dict]:
    """Chunks with the per-request ``id``/``created`` removed: the only fields two generations may differ in."""
    return [{k: v for k, v in c.items() if k not in ("id", "created")} for c in chunks]


def metric_value(lb_url: str, sample: str) -> float:
    """The value of one sample (``name{labels}`` exactly as exposed) from the balancer's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(httpx.get(f"{lb_url}/metrics", timeout=10).text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in s.labels.items())
            if (f"{s.name}{{{labels}}}" if labels else s.name) == sample:
                return s.value
    raise KeyError(sample)
