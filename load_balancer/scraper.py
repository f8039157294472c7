"""Read every instance's vLLM ``/metrics`` concurrently, probe ejected ones, and have the registry look for hung
ones each round; the registry records what it finds.

Each round scrapes all instances at once, each with its own timeout, and the round itself never blocks routing:
routing reads whatever the last successful scrape left on the ``Instance``.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from load_balancer.config import BalancerConfig
from load_balancer.metrics import BalancerMetrics
from load_balancer.registry import Instance, Registry
from load_balancer.upstream import bounded

logger = logging.getLogger(__name__)

# Matched on sample names: family names depend on whether the exposition carries TYPE/HELP lines.
_WANTED = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:kv_cache_usage_perc": "kv",
    "vllm:generation_tokens_total": "gen",
}


def parse_vllm_metrics(text: str) -> dict[str, float]:
    """Sum each wanted metric over its label sets (one per engine when data-parallel)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = _WANTED.get(sample.name)
            if key is not None:
                out[key] = out.get(key, 0.0) + sample.value
    return out


class Scraper:
    def __init__(
        self, cfg: BalancerConfig, registry: Registry, session: aiohttp.ClientSession, metrics: BalancerMetrics
    ) -> None:
        self.cfg = cfg
        self.registry = registry
        self.session = session
        self.metrics = metrics
        self._pending: dict[str, asyncio.Task] = {}  # url -> its scrape or health check in progress

    async def run(self) -> None:
        """Forever: every interval, follow the shared registry and start a scrape (or health check) of each
        instance that has none in progress. Rounds never wait for a slow instance, so it cannot delay the others.

        The caller did the first round itself at startup."""
        started = time.monotonic()
        try:
            while True:
                await asyncio.sleep(max(0.0, self.cfg.scrape_interval_s - (time.monotonic() - started)))
                started = time.monotonic()
                try:
                    await asyncio.wait_for(self.registry.sync(), self.cfg.scrape_timeout_s)
                except Exception as e:  # a gone Redis must not stop scraping of the instances we know
                    logger.warning("registry sync failed: %r", e)
                self.registry.check_hung(time.monotonic())
                self.launch_round()
        finally:
            for task in list(self._pending.values()):
                task.cancel()

    async def scrape_all(self) -> None:
        """One round, awaited (startup, registration)."""
        await asyncio.gather(*self.launch_round())

    def launch_round(self) -> list[asyncio.Task]:
        now = time.monotonic()
        launched = []
        for inst in list(self.registry.instances.values()):
            if inst.url in self._pending:
                continue
            if inst.healthy:
                job = self.scrape(inst)
            elif now >= inst.next_health_check:
                job = self.health_check(inst)
            else:
                continue
            task = asyncio.create_task(job)
            self._pending[inst.url] = task
            task.add_done_callback(lambda _, url=inst.url: self._pending.pop(url, None))
            launched.append(task)
        return launched

    async def scrape(self, inst: Instance) -> None:
        started = time.monotonic()
        try:
            async with self.session.get(f"{inst.url}/metrics", timeout=bounded(self.cfg.scrape_timeout_s)) as resp:
                resp.raise_for_status()
                values = parse_vllm_metrics(await resp.text())
        except Exception as e:  # any failure (timeout, refused, 5xx, garbage) leaves no fresh data
            self.metrics.scrape_failures.labels(inst.url).inc()
            if isinstance(e, TimeoutError) and inst.last_relayed_at >= started:
                # Its tokens kept reaching clients while /metrics timed out: slow, not dead (vLLM serves /metrics
                # on the event loop that also serves its streams; a loaded host delays both). Ejecting it would
                # break all of its streams over to other instances for nothing.
                logger.debug("instance %s: /metrics timed out while it streams; not a failure", inst.url)
                return
            self.registry.failed(inst.url, f"scrape failed: {e!r}", time.monotonic())
            return
        self.registry.scraped(
            inst.url,
            running=int(values.get("running", 0)),
            waiting=int(values.get("waiting", 0)),
            kv=values.get("kv", 0.0),
            gen_total=values.get("gen"),
            now=time.monotonic(),
        )

    async def health_check(self, inst: Instance) -> None:
        try:
            async with self.session.get(f"{inst.url}/health", timeout=bounded(self.cfg.scrape_timeout_s)) as resp:
                ok = resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        self.registry.health_checked(inst.url, ok, time.monotonic())
