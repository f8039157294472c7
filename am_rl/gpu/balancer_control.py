"""The trainer's calls to the load balancer's control API: register engines, pause and resume routing to them."""

from __future__ import annotations

import logging
from typing import Optional

import httpx

logger = logging.getLogger(__name__)


class BalancerControlError(RuntimeError):
    """The balancer refused or did not answer a control call; says which call and URL."""


class BalancerControl:
    def __init__(self, url: str, timeout_s: float = 30.0, api_key: Optional[str] = None) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _check(self, what: str, resp: httpx.Response) -> dict:
        if resp.status_code != 200:
            raise BalancerControlError(f"balancer {self.url}: {what} -> HTTP {resp.status_code}: {resp.text[:500]}")
        return resp.json()

    def register(self, engine_urls: list[str]) -> None:
        with httpx.Client(timeout=self.timeout_s, headers=self.headers) as http:
            for engine in engine_urls:
                try:
                    resp = http.post(f"{self.url}/instances", json={"url": engine})
                except httpx.HTTPError as e:
                    raise BalancerControlError(f"balancer {self.url}: register {engine}: {e!r}") from e
                self._check(f"register {engine}", resp)
        logger.info("registered %d engine(s) with the balancer at %s", len(engine_urls), self.url)

    def deregister(self, engine_urls: list[str]) -> None:
        with httpx.Client(timeout=self.timeout_s, headers=self.headers) as http:
            for engine in engine_urls:
                try:
                    resp = http.request("DELETE", f"{self.url}/instances", json={"url": engine})
                except httpx.HTTPError as e:
                    raise BalancerControlError(f"balancer {self.url}: deregister {engine}: {e!r}") from e
                self._check(f"deregister {engine}", resp)

    async def set_paused(self, engine_urls: list[str], paused: bool) -> None:
        """Pause (or resume) routing to the engines; in-flight requests finish, new ones wait for the resume."""
        action = "pause" if paused else "resume"
        async with httpx.AsyncClient(timeout=self.timeout_s, headers=self.headers) as http:
            try:
                resp = await http.post(f"{self.url}/instances/{action}", json={"urls": engine_urls})
            except httpx.HTTPError as e:
                raise BalancerControlError(f"balancer {self.url}: {action} {len(engine_urls)} engine(s): {e!r}") from e
        self._check(f"{action} {len(engine_urls)} engine(s)", resp)
