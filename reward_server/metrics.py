"""Prometheus metrics, all counted in the server process from the replies it receives (workers report
timeouts and sandbox kills in a result's details), so no multi-process registry is needed."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from reward_server.types import ScoreResult

REGISTRY = CollectorRegistry()

JOBS = Counter("reward_jobs", "Scored items by reward type and outcome", ["reward_type", "outcome"], registry=REGISTRY)
LATENCY = Histogram(
    "reward_item_latency_seconds",
    "Request arrival to result, per item",
    ["reward_type"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
CACHE_HITS = Counter("reward_cache_hits", "Items answered from the Redis cache", ["reward_type"], registry=REGISTRY)
TIMEOUTS = Counter("reward_timeouts", "Verifications hard-killed for overrunning", ["reward_type"], registry=REGISTRY)
SANDBOX_KILLS = Counter("reward_sandbox_kills", "Sandboxed runs killed, by reason", ["reason"], registry=REGISTRY)
REJECTED = Counter(
    "reward_rejected",
    "Requests (413) and batch items refused for exceeding an input limit, by field",
    ["field"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge("reward_queue_depth", "Jobs waiting in Redis (sampled at scrape)", registry=REGISTRY)
LIVE_WORKERS = Gauge("reward_live_workers", "Workers with a fresh heartbeat (sampled at scrape)", registry=REGISTRY)


def outcome(result: ScoreResult) -> str:
    if result.status != "ok":
        return result.status
    return "correct" if (result.score or 0.0) >= 1.0 else "incorrect" if result.score == 0.0 else "scored"


def observe(reward_type: str, result: ScoreResult, latency_s: float) -> None:
    JOBS.labels(reward_type, outcome(result)).inc()
    LATENCY.labels(reward_type).observe(latency_s)
    if result.status == "timeout":
        TIMEOUTS.labels(reward_type).inc()
    if not result.cached:
        for reason in result.details.get("sandbox_kills", []):
            SANDBOX_KILLS.labels(reason).inc()
