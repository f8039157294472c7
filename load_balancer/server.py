"""Run the balancer in-process: uvicorn in a background thread, started and stopped by the caller (the trainer).

    with BalancerServer(BalancerConfig(port=0, instances=urls)) as lb:
        httpx.post(f"{lb.url}/v1/completions", json=...)
"""

from __future__ import annotations

import logging
import threading
import time

import uvicorn
from fastapi import FastAPI

from load_balancer.app import build_app
from load_balancer.config import BalancerConfig

logger = logging.getLogger(__name__)


class BalancerUvicorn(uvicorn.Server):
    """uvicorn waits for open connections (up to its graceful timeout) before the lifespan shutdown; meanwhile the
    balancer's scraper would go on scraping, and ejecting, instances being torn down beside it. Stop it first, after
    closing the listening sockets: a stopping balancer refuses new connections at once, however long its background
    tasks take to end (a CI run's stopped shard went on answering its peer for 20 s while they ended)."""

    async def shutdown(self, sockets=None) -> None:
        for server in self.servers:
            server.close()
        balancer = getattr(self.config.app.state, "balancer", None)
        if balancer is not None:
            await balancer.stop_background()
        await super().shutdown(sockets)


class ThreadedServer:
    """Any ASGI app served by uvicorn on a daemon thread; port 0 picks a free port."""

    def __init__(
        self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
        server_cls: type[uvicorn.Server] = uvicorn.Server,
    ) -> None:  # fmt: skip
        self.app = app
        self.host = host
        self._server = server_cls(
            uvicorn.Config(
                app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on",
                timeout_graceful_shutdown=2,  # streams still open at stop() are cut after 2 s, not waited for
            )  # fmt: skip
        )
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when started with port 0)."""
        return self._server.servers[0].sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0):
        self._thread = threading.Thread(target=self._server.run, name=f"uvicorn-{id(self)}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("server failed to start (see its log)")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server not up after {timeout_s:.0f}s")
            time.sleep(0.02)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout_s)
        if self._thread.is_alive():
            logger.error("server thread %s still running %.0f s after stop()", self._thread.name, 2 * timeout_s)
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class BalancerServer(ThreadedServer):
    def __init__(self, cfg: BalancerConfig, log_level: str = "warning") -> None:
        super().__init__(build_app(cfg), cfg.host, cfg.port, log_level, server_cls=BalancerUvicorn)
        self.cfg = cfg

    @property
    def balancer(self):
        return self.app.state.balancer
