"""Helpers shared by the load-balancer tests (imported as a plain module: pytest puts this folder on sys.path)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

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
    for family in text_string_to_metric_families(httpx.get(f"{lb_url}/metrics", timeout=10).text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in s.labels.items())
            if (f"{s.name}{{{labels}}}" if labels else s.name) == sample:
                return s.value
    raise KeyError(sample)


class TcpLink:
    """A TCP forwarder to an upstream port that a test can ``cut()``: every connection through it is reset and
    nothing listens any more — what the balancer sees when an engine dies, while the real engine behind it lives on
    for the other tests of the session."""

    def __init__(self, target: str, throttle_s: float = 0.0) -> None:
        """``throttle_s``: pause per 1 KiB forwarded back to the client, so streams through the link last long
        enough to be cut mid-way on any machine."""
        self._throttle_s = throttle_s
        parts = urlsplit(target)
        self._target = (parts.hostname, parts.port)
        self._loop = asyncio.new_event_loop()
        self._writers: set = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _listen(self):
        return await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def _handle(self, reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src, dst, size, pause):
            try:
                while data := await src.read(size):
                    dst.write(data)
                    await dst.drain()
                    if pause:
                        await asyncio.sleep(pause)
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(
            pipe(reader, up_writer, 65536, 0.0),
            pipe(up_reader, writer, 1024 if self._throttle_s else 65536, self._throttle_s),
        )

    def cut(self) -> None:
        async def close_all():
            self._server.close()
            for w in list(self._writers):
                w.transport.abort()

        asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(10)

    def close(self) -> None:
        self.cut()
        stop_loop_thread(self._loop, self._thread)


def stop_loop_thread(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    """Cancel every task of a test server's event loop, which runs on ``thread``; then stop the loop and join."""

    async def cancel_all():
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(cancel_all(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
