"""Starts the service's local workers as separate processes and replaces any that die."""

import asyncio
import logging
import os
import subprocess
import sys

from reward_server.auth import API_KEY_ENV
from reward_server.config import WorkerSettings
from reward_server.redis_url import REDIS_URL_ENV

logger = logging.getLogger(__name__)

CHECK_EVERY_S = 1.0
STOP_GRACE_S = 5.0


class WorkerSupervisor:
    def __init__(self, redis_url: str, settings: WorkerSettings, num_workers: int, log_level: str = "INFO"):
        self._cmd = [
            sys.executable,
            "-m",
            "reward_server.worker",
            "--settings-json",
            settings.model_dump_json(),
            "--log-level",
            log_level,
        ]
        # The URL in the environment, not on the command line: it may carry a password. Workers never need the API key.
        self._env = {k: v for k, v in os.environ.items() if k != API_KEY_ENV} | {REDIS_URL_ENV: redis_url}
        self.procs: list[subprocess.Popen] = [None] * num_workers  # type: ignore[list-item]
        self.restarts = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        for i in range(len(self.procs)):
            self.procs[i] = self._spawn()
        self._task = asyncio.get_running_loop().create_task(self._watch())

    def _spawn(self) -> subprocess.Popen:
        return subprocess.Popen(self._cmd, env=self._env)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(CHECK_EVERY_S)
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None:
                    logger.warning("worker pid %d exited with %s; starting a replacement", proc.pid, proc.returncode)
                    self.procs[i] = self._spawn()
                    self.restarts += 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        loop = asyncio.get_running_loop()
        for proc in self.procs:
            if proc is None:
                continue
            try:
                await loop.run_in_executor(None, proc.wait, STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                await loop.run_in_executor(None, proc.wait, STOP_GRACE_S)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p is not None]
