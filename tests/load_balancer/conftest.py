"""Fixtures: in-process balancers and load generators (synthetic vLLM-shaped streaming servers, not engines)."""

from __future__ import annotations

import pytest

from load_balancer.config import BalancerConfig
from load_balancer.loadgen import LoadGenSettings, build_loadgen_app
from load_balancer.server import BalancerServer, ThreadedServer


@pytest.fixture
def loadgens():
    """``loadgens(n, **settings)`` → n started in-process load generators, stopped after the test."""
    started: list[ThreadedServer] = []

    def make(n: int = 1, **settings) -> list[ThreadedServer]:
        servers = [ThreadedServer(build_loadgen_app(LoadGenSettings(**settings))).start() for _ in range(n)]
        started.extend(servers)
        return servers

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def balancer():
    """``balancer(instances, **config)`` → a started in-process BalancerServer, stopped after the test."""
    started: list[BalancerServer] = []

    def make(instances: list[str] = (), **cfg) -> BalancerServer:
        server = BalancerServer(BalancerConfig(port=0, instances=list(instances), **cfg)).start()
        started.append(server)
        return server

    yield make
    for s in started:
        s.stop()
