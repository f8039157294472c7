"""Ask the policy which sequences to move, and hand each move to the relay that owns the sequence.

The policy only plans (no I/O); each relay executes its own move in its own task (abort at the source, continue at
the target from prompt + generated ids), so a move never races with the relay writing to its client.
"""

from __future__ import annotations

import asyncio
import logging
import time

from load_balancer.config import BalancerConfig
from load_balancer.policy import RoutingPolicy
from load_balancer.proxy import Proxy
from load_balancer.registry import Registry

logger = logging.getLogger(__name__)


class Migrator:
    def __init__(self, cfg: BalancerConfig, registry: Registry, proxy: Proxy, policy: RoutingPolicy) -> None:
        self.cfg = cfg
        self.registry = registry
        self.proxy = proxy
        self.policy = policy

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.migration_interval_s)
            try:
                self.step()
            except Exception:  # a policy bug must not stop routing; it is logged with its traceback
                logger.exception("migration planning failed")

    def step(self) -> int:
        """Plan once and start the moves; returns how many were started."""
        now = time.monotonic()
        running = [
            r.running_request()
            for r in self.proxy.relays.values()
            if r.url is not None and r.can_continue() and r.interrupt_reason is None and not r.codec.finish_seen
        ]
        if not running:
            return 0
        started = 0
        for move in self.policy.plan_migrations(self.registry.states(now), running, now):
            relay = self.proxy.relays.get(move.request_id)
            target = self.registry.instances.get(move.target)
            if relay is None or relay.url != move.source or target is None or not target.routable():
                logger.debug("skipping stale migration %s", move)
                continue
            if move.target == move.source:
                continue
            if relay.interrupt("migrating", move_to=move.target):
                started += 1
                logger.info("request %s: moving %s -> %s", move.request_id, move.source, move.target)
        return started
