"""``/dashboard/all``: one view of a run's balancer shards, merged by any shard from its peers' ``/dashboard/data``.

Shards share nothing (docs/load_balancer.md, "More than one balancer process"), so the whole run is the union of
their views: every engine once (each belongs to one shard) and the totals summed. No extra process: the shard whose
page is open asks its peers (``BalancerConfig.peers``) when the page polls. A peer that does not answer in time is
listed as unreachable and the rest is shown: watching a run must never depend on every shard being up.
"""

from __future__ import annotations

import asyncio

import aiohttp

from load_balancer.types import ClusterSnapshot, DashboardSnapshot, Totals
from load_balancer.upstream import bounded


async def peer_snapshot(session: aiohttp.ClientSession, url: str, api_key: str | None,
                        timeout_s: float) -> DashboardSnapshot:  # fmt: skip
    """``url``'s own ``/dashboard/data`` (shards of a run share the balancer key)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with session.get(f"{url}/dashboard/data", headers=headers, timeout=bounded(timeout_s)) as resp:
        body = await resp.read()
        if resp.status != 200:
            raise ValueError(f"HTTP {resp.status}: {body[:200].decode(errors='replace')}")
    return DashboardSnapshot.model_validate_json(body)


def merge(snapshots: list[DashboardSnapshot], unreachable: dict[str, str]) -> ClusterSnapshot:
    """The run's view from its shards' (the first is the asking shard's own): instances of all, totals summed."""
    own = snapshots[0]
    totals = Totals(**{name: sum(getattr(s.totals, name) for s in snapshots) for name in Totals.model_fields})
    return ClusterSnapshot(
        now=own.now,
        policy=own.policy,
        instances=[view for s in snapshots for view in s.instances],
        totals=totals,
        shard=own.shard,
        shards=own.shards,
        peers=own.peers,
        shard_of={view.url: s.shard for s in snapshots for view in s.instances},
        unreachable=unreachable,
    )


async def cluster_snapshot(own: DashboardSnapshot, session: aiohttp.ClientSession, api_key: str | None,
                           timeout_s: float = 2.0) -> ClusterSnapshot:  # fmt: skip
    """``own`` merged with every peer's snapshot that arrives within ``timeout_s``."""
    results = await asyncio.gather(*(peer_snapshot(session, url, api_key, timeout_s) for url in own.peers),
                                   return_exceptions=True)  # fmt: skip
    reached = [r for r in results if isinstance(r, DashboardSnapshot)]
    unreachable = {url: repr(r) for url, r in zip(own.peers, results) if not isinstance(r, DashboardSnapshot)}
    return merge([own, *reached], unreachable)
