"""Wire types of the balancer's own API (what crosses HTTP to and from it), all pydantic.

Completion bodies are *not* modelled in full: every field goes to vLLM unchanged, so ``CompletionHead`` validates
only the few fields the balancer reads to route and continue a request, and keeps the rest as extras.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator


class InstanceRegistration(BaseModel):
    """Body of ``POST /instances`` and ``DELETE /instances``."""

    model_config = ConfigDict(extra="forbid")

    url: str  # base URL of a vLLM OpenAI server, e.g. http://10.0.0.5:8000

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError("url must be http(s)://host:port with no path")
        if parts.query or parts.fragment:
            raise ValueError("url must not carry a query or fragment")
        return url.rstrip("/")


class PauseRequest(BaseModel):
    """Body of ``POST /instances/pause`` and ``/instances/resume``: the instances to switch, or all of them."""

    model_config = ConfigDict(extra="forbid")

    urls: list[str] | None = None  # None or absent: every registered instance

    @field_validator("urls")
    @classmethod
    def _http_urls(cls, urls: list[str] | None) -> list[str] | None:
        return None if urls is None else [InstanceRegistration._http_url(u) for u in urls]


class InstanceView(BaseModel):
    """One entry of ``GET /instances`` (also what the dashboard polls)."""

    url: str
    healthy: bool
    draining: bool  # deregistered; finishes what it runs, gets nothing new
    paused: bool  # routing paused (engine asleep or taking new weights); resumed by POST /instances/resume
    in_flight: int  # requests the balancer relays from it now
    running: int  # vllm:num_requests_running, last scrape
    waiting: int  # vllm:num_requests_waiting, last scrape
    # The routing policy's own estimates (RoutingPolicy.estimates): output tokens its requests in flight are still
    # expected to generate, and seconds until it has finished them; None under a policy without a model of work.
    remaining_tokens: float | None
    tokens_per_s: float  # measured generation rate (scraped counter, else relayed tokens)
    kv_cache_usage: float  # 0..1, last scrape
    drain_s: float | None
    last_scrape_age_s: float | None  # None when never scraped successfully
    consecutive_failures: int
    migrations_in: int
    migrations_out: int
    tokens_relayed: int


class Totals(BaseModel):
    requests: int
    in_flight: int
    tokens_relayed: int
    tokens_per_s: float
    migrations: int
    failovers: int
    ejections: int


class DashboardSnapshot(BaseModel):
    """What ``GET /dashboard/data`` returns once per poll."""

    now: float  # wall-clock seconds since the epoch
    policy: str
    instances: list[InstanceView]  # the instances this process owns (all of them unless it is one of several shards)
    totals: Totals
    shard: int = 1  # this process is shard ``shard`` (1-based) of ``shards`` (BalancerConfig.shard)
    shards: int = 1
    peers: list[str] = []  # the run's other shards (BalancerConfig.peers): /dashboard/all merges their views


class ClusterSnapshot(DashboardSnapshot):
    """What ``GET /dashboard/all`` returns: every reachable shard's instances and their summed totals
    (load_balancer/cluster_view.py)."""

    shard_of: dict[str, int]  # instance URL -> the shard that owns it
    unreachable: dict[str, str]  # peer URL -> why its view is missing


class LaneView(BaseModel):
    """One row of a step on the timeline: one instance, or neighbours sharing a row beyond ``max_lanes``."""

    url: str  # the instance, or the first of the row's instances
    instances: list[str]  # every instance drawn in this row (moves between them stay inside it)
    points: list[tuple[float, int]]  # (s since the step began, sequences in flight from then on): a step function
    tokens: int  # tokens they relayed within the step
    peak_tokens_per_s: float  # the sum of their best rates over the timeline's rate window within the step


class MoveView(BaseModel):
    """A sequence that left one instance and continued on another (an arrow between lanes)."""

    t_s: float  # s since the step began
    source: str
    target: str
    migrated: bool  # True: moved by the migration loop; False: failed over after its instance broke
    tokens: int  # tokens it had generated before the move


class StepView(BaseModel):
    """One step (one burst of rollout requests); its definition and lower bound are in ``load_balancer/timeline.py``."""

    index: int  # 1 for the balancer's first step
    started_at: float  # wall-clock seconds since the epoch
    open: bool  # still running (its numbers are so far)
    closed_by: str | None  # "pause" (the trainer's weight sync) or "idle" (nothing new for idle_gap_s)
    makespan_s: float  # first placement to the last request's end (so far, while open)
    lower_bound_s: float | None  # tokens / sum of the instances' peak rates; None before any token
    tail_start_s: float | None  # s since the step began at which its tail began; None: no tail (yet)
    requests: int  # requests that ended within the step
    tokens: int
    peak_in_flight: int  # most sequences in flight at once, all instances together
    moves_total: int  # migrations and failovers, including those beyond the per-step cap (counted, not kept)
    detailed: bool  # the step asked for (GET /dashboard/timeline?step=N, default the newest): lanes and moves filled
    lanes: list[LaneView]  # one per instance, by URL; empty unless detailed
    moves: list[MoveView]  # in time order; empty unless detailed


class TimelineSnapshot(BaseModel):
    """What ``GET /dashboard/timeline`` returns: the recent steps, oldest first, the open one (if any) last."""

    now: float  # wall-clock seconds since the epoch
    tail_fraction: float  # the tail is where at most this share of the step's peak in-flight sequences still ran
    steps: list[StepView]


class ErrorBody(BaseModel):
    message: str
    type: str
    code: int


class ErrorResponse(BaseModel):
    """OpenAI/vLLM-shaped error, so clients parse the balancer's errors like the engine's."""

    error: ErrorBody


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: StrictBool | None = None


class CompletionHead(BaseModel):
    """The fields of a ``/v1/completions`` or ``/v1/chat/completions`` body the balancer reads (others pass through)."""

    model_config = ConfigDict(extra="allow")

    prompt: str | list[StrictInt] | list[str] | list[list[StrictInt]] | None = None
    messages: list[dict[str, Any]] | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: StrictInt | None = Field(default=None, ge=0)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=0)
    min_tokens: StrictInt | None = Field(default=None, ge=0)
    n: StrictInt = Field(default=1, ge=1)
    best_of: StrictInt | None = None
    echo: StrictBool = False
    return_token_ids: StrictBool | None = None
    logprobs: StrictInt | StrictBool | None = None
    prompt_logprobs: StrictInt | None = None


class GenerateHead(BaseModel):
    """The fields of vLLM's token-in/token-out ``/inference/v1/generate`` body the balancer reads."""

    model_config = ConfigDict(extra="allow")

    token_ids: list[StrictInt] = Field(min_length=1)
    stream: StrictBool | None = False
    sampling_params: dict[str, Any] | None = None
