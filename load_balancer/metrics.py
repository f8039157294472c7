"""The balancer's Prometheus metrics, in a registry of its own so several balancers can live in one process."""

from __future__ import annotations

import time
from typing import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric

from load_balancer.registry import Registry


class InstanceCollector:
    """Per-instance gauges read from the registry at scrape time, so removed instances disappear with them."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        now = time.monotonic()
        gauges = {
            "in_flight": GaugeMetricFamily("lb_instance_in_flight", "Requests relayed from the instance now", labels=["instance"]),
            "rate": GaugeMetricFamily("lb_instance_tokens_per_second", "Measured generation rate", labels=["instance"]),
            "healthy": GaugeMetricFamily("lb_instance_healthy", "1 when the instance receives traffic", labels=["instance"]),
            "waiting": GaugeMetricFamily("lb_instance_waiting", "vllm:num_requests_waiting at last scrape", labels=["instance"]),
            "kv": GaugeMetricFamily("lb_instance_kv_cache_usage", "vllm:kv_cache_usage_perc at last scrape", labels=["instance"]),
        }  # fmt: skip
        for inst in list(self.registry.instances.values()):
            gauges["in_flight"].add_metric([inst.url], inst.in_flight)
            gauges["rate"].add_metric([inst.url], inst.throughput(now, self.registry.window_s))
            gauges["healthy"].add_metric([inst.url], float(inst.routable()))
            gauges["waiting"].add_metric([inst.url], inst.waiting)
            gauges["kv"].add_metric([inst.url], inst.kv_cache_usage)
        yield from gauges.values()


class BalancerMetrics:
    def __init__(self, registry: Registry) -> None:
        self.prometheus = CollectorRegistry()
        r = self.prometheus
        self.requests = Counter("lb_requests", "Client requests by endpoint and status", ["endpoint", "status"], registry=r)
        self.tokens = Counter("lb_tokens_relayed", "Generated tokens relayed to clients", registry=r)
        self.routed = Counter("lb_routing_decisions", "Requests routed per instance", ["instance"], registry=r)
        self.migrations = Counter("lb_migrations", "Sequences moved between instances", registry=r)
        self.failovers = Counter("lb_failovers", "Requests continued elsewhere after an instance failed", registry=r)
        self.retries = Counter("lb_retries", "Upstream attempts repeated before the first byte", registry=r)
        self.stale_connections = Counter(
            "lb_stale_connections", "Requests resent because a reused keep-alive connection was closed", registry=r
        )
        self.ejections = Counter("lb_ejections", "Instances ejected after repeated failures", registry=r)
        self.scrape_failures = Counter("lb_scrape_failures", "Failed /metrics scrapes", ["instance"], registry=r)
        self.client_aborts = Counter("lb_client_disconnects", "Streams whose client went away", registry=r)
        self.length_hints = Counter(
            "lb_length_hints", "Expected-length hints (am_rl_expected_tokens) by outcome: accepted or why ignored",
            ["outcome"], registry=r,
        )  # fmt: skip
        r.register(InstanceCollector(registry))
