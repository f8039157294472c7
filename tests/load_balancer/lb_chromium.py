"""A headless Chromium driven over the DevTools protocol (websocket JSON-RPC), for the dashboard test.

Hand-written on ``websockets`` (already installed) rather than Playwright/Selenium: those download their own
browser builds, which CI here cannot; we need three calls (navigate, evaluate, screenshot) on Debian's chromium.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from websockets.sync.client import connect

# --disable-dev-shm-usage: a container's /dev/shm is often 64 MB, and Debian's launcher, which adds this flag
# when /dev/shm is small, misreads its size where findmnt prints two lines ("[: unexpected operator").
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--remote-debugging-port=0", "--window-size=1280,900",
]  # fmt: skip


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Chromium:
    """One headless browser with one page. A start that fails is retried once with a fresh profile (a loaded CI
    machine has been seen to lose one); the error says how chromium ended and the tail of what it printed."""

    def __init__(self, timeout_s: float = 60.0, attempts: int = 2) -> None:
        for attempt in range(1, attempts + 1):
            try:
                port = self._launch(timeout_s)
                break
            except RuntimeError:
                if attempt == attempts:
                    raise
        pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json", timeout=10).json() if t["type"] == "page"]
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(
            connect(pages[0]["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024, open_timeout=timeout_s)
        )
        self._ids = itertools.count(1)

    def _launch(self, timeout_s: float) -> int:
        """Start chromium in a private HOME (nothing read from or written to the user's), return its DevTools port."""
        self._stack = None
        self.profile = Path(tempfile.mkdtemp(prefix="lb-chromium-"))
        home = self.profile / "home"
        home.mkdir()
        env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home), "XDG_CACHE_HOME": str(home)}
        self.log = tempfile.NamedTemporaryFile(prefix="lb-chromium-", suffix=".log")  # noqa: SIM115  (see close())
        self.proc = subprocess.Popen(
            [chromium_path(), *FLAGS, f"--user-data-dir={self.profile / 'data'}", "about:blank"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
        port_file = self.profile / "data" / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                exited = self.proc.poll() is not None
                how = f"exited with {self.proc.returncode}" if exited else f"silent {timeout_s:.0f} s"
                tail = self._log_tail()
                self.close()
                raise RuntimeError(f"chromium did not open its DevTools port ({how}); it printed:\n{tail}")
            time.sleep(0.1)
        return int(port_file.read_text().split()[0])

    def _log_tail(self, lines: int = 30) -> str:
        self.log.flush()
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-lines:])

    def call(self, method: str, timeout_s: float = 30.0, **params) -> dict:
        call_id = next(self._ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def navigate(self, url: str) -> None:
        self.call("Page.enable")
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        if self._stack is not None:
            self._stack.close()
        with contextlib.suppress(ProcessLookupError):  # the renderer and GPU processes go with the browser
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)
