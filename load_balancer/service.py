"""Everything one balancer process holds, built once at startup and torn down at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import load_balancer.policies  # noqa: F401  (registers the routing policies by name)
from load_balancer.config import BalancerConfig
from load_balancer.metrics import BalancerMetrics
from load_balancer.migration import Migrator
from load_balancer.policy import make_policy
from load_balancer.proxy import Proxy
from load_balancer.registry import MemoryStore, RedisStore, Registry
from load_balancer.scraper import Scraper
from load_balancer.timeline import Timeline
from load_balancer.types import DashboardSnapshot, InstanceView, Totals
from load_balancer.upstream import make_session

logger = logging.getLogger(__name__)


class Balancer:
    def __init__(self, cfg: BalancerConfig) -> None:
        self.cfg = cfg
        self.policy = make_policy(cfg.policy, **cfg.policy_options)
        store = RedisStore(cfg.redis_url, cfg.registry_key) if cfg.redis_url else MemoryStore()
        self.registry = Registry(
            store,
            cfg.rate_window_s,
            cfg.eject_after_failures,
            cfg.readmit_backoff_s,
            cfg.readmit_backoff_max_s,
            cfg.hung_after_s,
        )
        self.metrics = BalancerMetrics(self.registry)
        self.session = make_session(cfg)  # so a Balancer is built inside the server's running loop (lifespan)
        self.timeline = Timeline(cfg.timeline, self.registry)
        self.proxy = Proxy(cfg, self.registry, self.session, self.policy, self.metrics, self.timeline)
        self.scraper = Scraper(cfg, self.registry, self.session, self.metrics)
        self.migrator = Migrator(cfg, self.registry, self.proxy, self.policy)
        self.registry.on_eject.append(lambda url, why: self.metrics.ejections.inc())
        self.registry.on_hung.append(self.proxy.interrupt_streams_on)
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        for url in self.cfg.instances:
            await self.registry.add(url.rstrip("/"))
        await self.registry.sync()
        await self.scraper.scrape_all()  # route on real numbers from the first request on
        self._tasks.append(asyncio.create_task(self.scraper.run(), name="lb-scraper"))
        self._tasks.append(asyncio.create_task(self.timeline.run(), name="lb-timeline"))
        if self.cfg.migrate:
            self._tasks.append(asyncio.create_task(self.migrator.run(), name="lb-migrator"))
        logger.info(
            "balancer up: policy %s, migration %s, %d instance(s)",
            self.policy.name,
            "on" if self.cfg.migrate else "off",
            len(self.registry.instances),
        )

    async def stop_background(self) -> None:
        """Stop scraping and migrating; idempotent. Called before the server drains its open connections, so that
        nothing scrapes, ejects or moves work on instances that are being torn down beside the balancer."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop(self) -> None:
        await self.stop_background()
        await self.proxy.drain_background()
        await self.session.close()
        await self.registry.store.close()

    def instance_views(self) -> list[InstanceView]:
        now = time.monotonic()
        running = [relay.running_request() for relay in self.proxy.relays.values() if relay.url is not None]
        estimates = self.policy.estimates(self.registry.states(now), running, now)
        views = []
        for inst in self.registry.instances.values():
            estimate = estimates.get(inst.url)
            views.append(
                InstanceView(
                    url=inst.url,
                    healthy=inst.healthy,
                    draining=inst.draining,
                    paused=inst.paused,
                    in_flight=inst.in_flight,
                    running=inst.running,
                    waiting=inst.waiting,
                    remaining_tokens=estimate.remaining_tokens if estimate is not None else None,
                    tokens_per_s=inst.throughput(now, self.registry.window_s),
                    kv_cache_usage=inst.kv_cache_usage,
                    drain_s=estimate.drain_s if estimate is not None else None,
                    last_scrape_age_s=None if inst.last_scrape == float("-inf") else now - inst.last_scrape,
                    consecutive_failures=inst.consecutive_failures,
                    migrations_in=inst.migrations_in,
                    migrations_out=inst.migrations_out,
                    tokens_relayed=inst.tokens_relayed,
                )
            )
        return views

    def snapshot(self) -> DashboardSnapshot:
        views = self.instance_views()
        sample = self.metrics.prometheus.get_sample_value
        return DashboardSnapshot(
            now=time.time(),
            policy=self.policy.name,
            instances=views,
            totals=Totals(
                requests=self.proxy.requests_total,
                in_flight=len(self.proxy.relays),
                tokens_relayed=int(sample("lb_tokens_relayed_total") or 0),
                tokens_per_s=sum(v.tokens_per_s for v in views),
                migrations=int(sample("lb_migrations_total") or 0),
                failovers=int(sample("lb_failovers_total") or 0),
                ejections=int(sample("lb_ejections_total") or 0),
            ),
            shard=self.cfg.shard,
            shards=self.cfg.shards,
            peers=self.cfg.peers,
        )
