"""The trainer's calls to the load balancer's control API: register engines, pause and resume routing to them.

verl builds the classes that make these calls (checkpoint manager, in-worker rollout) from its own config sections
only, so the balancer's URL and API key reach them through the environment of every Ray process
(``am_rl.trainer.run`` sets it): ``control_from_env()``.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

import httpx

logger = logging.getLogger(__name__)

BALANCER_URL_ENV = "AM_RL_BALANCER_URL"
API_KEY_ENV = "AM_RL_BALANCER_API_KEY"
CONTROL_TIMEOUT_ENV = "AM_RL_BALANCER_CONTROL_TIMEOUT_S"


class BalancerControlError(RuntimeError):
    """The balancer refused or did not answer a control call; says which call and URL."""


class BalancerControl:
    def __init__(self, url: str, timeout_s: float = 30.0, api_key: Optional[str] = None) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _call(self, method: str, path: str, what: str, ok: tuple[int, ...] = (200,), **kwargs) -> httpx.Response:
        try:
            with httpx.Client(timeout=self.timeout_s, headers=self.headers) as http:
                resp = http.request(method, f"{self.url}{path}", **kwargs)
        except httpx.HTTPError as e:
            raise BalancerControlError(f"balancer {self.url}: {what}: {e!r}") from e
        if resp.status_code not in ok:
            raise BalancerControlError(f"balancer {self.url}: {what} -> HTTP {resp.status_code}: {resp.text[:500]}")
        return resp

    def register(self, engine_urls: list[str]) -> None:
        for engine in engine_urls:
            self._call("POST", "/instances", f"register {engine}", json={"url": engine})
        logger.info("registered %d engine(s) with the balancer at %s", len(engine_urls), self.url)

    def deregister(self, engine_urls: list[str], missing_ok: bool = False) -> None:
        ok = (200, 404) if missing_ok else (200,)
        for engine in engine_urls:
            self._call("DELETE", "/instances", f"deregister {engine}", ok=ok, json={"url": engine})

    def registered(self) -> set[str]:
        return {view["url"] for view in self._call("GET", "/instances", "list instances").json()}

    def set_paused(self, engine_urls: list[str], paused: bool) -> None:
        """Pause (or resume) routing to the engines; in-flight requests finish, new ones wait for the resume."""
        action = "pause" if paused else "resume"
        self._call("POST", f"/instances/{action}", f"{action} {len(engine_urls)} engine(s)", json={"urls": engine_urls})


def control_from_env() -> BalancerControl | None:
    """The balancer this Ray process's run uses, or None where no balancer is configured (a unit test)."""
    url = os.environ.get(BALANCER_URL_ENV)
    if not url:
        return None
    return BalancerControl(url, float(os.environ.get(CONTROL_TIMEOUT_ENV, "30")), os.environ.get(API_KEY_ENV) or None)
