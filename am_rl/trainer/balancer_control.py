"""The trainer's calls to the load balancer's control API: register engines, pause and resume routing to them.

verl builds the classes that make these calls (checkpoint manager, in-worker rollout) from its own config sections
only, so the balancer's URL and API key reach them through the environment of every Ray process
(``am_rl.trainer.run`` sets it): ``control_from_env()``. A comma-separated URL names several balancer processes
(shards, ``am_rl.balancer.processes``), each owning its own engines: ``ShardedBalancerControl``.
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


class ShardedBalancerControl:
    """The control calls of ``BalancerControl`` over balancer shards: a new engine is registered with the shard that
    owns the fewest (ties: the first), so engines spread round robin; every other call goes to the shard that owns
    the engine, since a shard answers 404 for engines it does not know."""

    def __init__(self, urls: list[str], timeout_s: float = 30.0, api_key: Optional[str] = None) -> None:
        self.shards = [BalancerControl(url, timeout_s, api_key) for url in urls]

    def owners(self) -> list[set[str]]:
        """The engines each shard has registered, in shard order."""
        return [shard.registered() for shard in self.shards]

    def register(self, engine_urls: list[str]) -> None:
        owners = self.owners()
        for engine in engine_urls:
            if any(engine in owned for owned in owners):
                continue  # registered already: it stays with its shard
            k = min(range(len(self.shards)), key=lambda s: (len(owners[s]), s))
            self.shards[k].register([engine])
            owners[k].add(engine)

    def deregister(self, engine_urls: list[str], missing_ok: bool = False) -> None:
        owners = self.owners()
        for engine in engine_urls:
            holders = [k for k, owned in enumerate(owners) if engine in owned]
            if not holders and not missing_ok:
                raise BalancerControlError(f"no balancer shard has {engine} registered")
            for k in holders:
                self.shards[k].deregister([engine], missing_ok=True)

    def registered(self) -> set[str]:
        return set().union(*self.owners())

    def set_paused(self, engine_urls: list[str], paused: bool) -> None:
        for shard, owned in zip(self.shards, self.owners()):
            mine = [engine for engine in engine_urls if engine in owned]
            if mine:
                shard.set_paused(mine, paused)


def control_for(url: str, timeout_s: float = 30.0, api_key: Optional[str] = None):
    """``BalancerControl`` for one balancer URL, ``ShardedBalancerControl`` for a comma-separated list of shards."""
    urls = [u.strip() for u in url.split(",") if u.strip()]
    if len(urls) == 1:
        return BalancerControl(urls[0], timeout_s, api_key)
    return ShardedBalancerControl(urls, timeout_s, api_key)


def control_from_env() -> BalancerControl | ShardedBalancerControl | None:
    """The balancer this Ray process's run uses, or None where no balancer is configured (a unit test)."""
    url = os.environ.get(BALANCER_URL_ENV)
    if not url:
        return None
    return control_for(url, float(os.environ.get(CONTROL_TIMEOUT_ENV, "30")), os.environ.get(API_KEY_ENV) or None)
