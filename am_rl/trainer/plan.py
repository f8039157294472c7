"""The placement plan of a GPU run, and the dry run: everything verl would build, short of GPU workers.

``trainer.dry_run=true`` resolves and validates the whole config (ours and verl's checks), builds the objects verl
looks up from it (advantage estimator, reward manager class, agent-loop manager with its balancer client,
checkpoint manager class, task runner) and prints where everything goes, how big a step is, and the per-GPU memory
plan of its phases; a config whose plan does not fit is refused here, before any process starts.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, replace
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from am_rl.config.validate import ConfigError
from am_rl.trainer.external_engines import ROLLOUT_NAME
from am_rl.trainer.memory_plan import MemoryPlan, checked_memory_plan, format_memory_plan


@dataclass(frozen=True)
class PlacementPlan:
    nodes: int
    gpus_per_node: int
    actor: str  # strategy and parallel layout of the training workers
    rollout_tp: int  # GPUs per vLLM engine (tensor parallel)
    rollout_replicas: int  # vLLM engines registered with the balancer
    rollout_mode: str  # "hybrid" (verl's replicas on the training GPUs) or "external" (am_rl.trainer.external_engines)
    agent_loop_workers: int  # CPU actors that send the samples
    balancer_url: str
    reward_url: str
    prompts_per_step: int  # B
    samples_per_prompt: int  # n
    max_prompt_length: int  # P
    max_response_length: int  # R
    max_model_len: int
    lr: float
    optimizer_steps_per_rollout: int
    adv_estimator: str
    shuffle: bool

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def samples_per_step(self) -> int:
        return self.prompts_per_step * self.samples_per_prompt

    @property
    def tokens_per_step(self) -> int:
        """Upper bound of the tokens a step holds: B·n·(P+R) (every prompt and response at its cap)."""
        return self.samples_per_step * (self.max_prompt_length + self.max_response_length)

    @property
    def generated_tokens_per_step(self) -> int:
        """Upper bound of the tokens a step generates: B·n·R."""
        return self.samples_per_step * self.max_response_length


def actor_layout(cfg: DictConfig) -> str:
    actor = cfg.actor_rollout_ref.actor
    gpus = cfg.trainer.nnodes * cfg.trainer.n_gpus_per_node
    if actor.strategy == "megatron":
        m = actor.megatron
        dp = gpus // (m.tensor_model_parallel_size * m.pipeline_model_parallel_size * m.context_parallel_size)
        return (
            f"megatron TP{m.tensor_model_parallel_size} PP{m.pipeline_model_parallel_size} "
            f"CP{m.context_parallel_size} DP{dp}"
        )
    sp = actor.get("ulysses_sequence_parallel_size", 1)
    return f"{actor.strategy} over {gpus} GPUs, Ulysses SP{sp}, DP{gpus // sp}"


def default_balancer_url(cfg: DictConfig) -> str:
    return f"http://{socket.gethostname()}:{cfg.am_rl.balancer.port}"


def reward_default(cfg: DictConfig) -> str:
    if cfg.trainer.nnodes > 1:
        return "MISSING: set am_rl.reward.url (a multi-node run needs the reward service's URL; recipes/slurm sets it)"
    return "started by the trainer on this node (127.0.0.1)"


def placement_plan(cfg: DictConfig) -> PlacementPlan:
    """The plan of a resolved, validated GPU config (pure: reads ``cfg`` only)."""
    rollout = cfg.actor_rollout_ref.rollout
    external = rollout.name == ROLLOUT_NAME
    per_replica = rollout.tensor_model_parallel_size * rollout.data_parallel_size * rollout.pipeline_model_parallel_size
    gpus = cfg.trainer.nnodes * cfg.trainer.n_gpus_per_node
    batch, mini = cfg.data.train_batch_size, cfg.actor_rollout_ref.actor.ppo_mini_batch_size
    return PlacementPlan(
        nodes=cfg.trainer.nnodes,
        gpus_per_node=cfg.trainer.n_gpus_per_node,
        actor=actor_layout(cfg),
        rollout_tp=rollout.tensor_model_parallel_size,
        rollout_replicas=(len(cfg.am_rl.vllm.urls) or cfg.am_rl.vllm.num_servers) if external else gpus // per_replica,
        rollout_mode="external" if external else "hybrid",
        agent_loop_workers=rollout.agent.num_workers,
        balancer_url=cfg.am_rl.balancer.url or f"{default_balancer_url(cfg)} (started by the trainer)",
        reward_url=cfg.am_rl.reward.url or reward_default(cfg),
        prompts_per_step=batch,
        samples_per_prompt=rollout.n,
        max_prompt_length=cfg.data.max_prompt_length,
        max_response_length=cfg.data.max_response_length,
        max_model_len=rollout.max_model_len or cfg.data.max_prompt_length + cfg.data.max_response_length,
        lr=float(cfg.actor_rollout_ref.actor.optim.lr),
        optimizer_steps_per_rollout=(batch // mini) * cfg.actor_rollout_ref.actor.ppo_epochs,
        adv_estimator=cfg.algorithm.adv_estimator,
        shuffle=bool(cfg.am_rl.shuffle),
    )


def format_plan(plan: PlacementPlan, components: dict[str, str] | None = None) -> str:
    lines = [
        f"cluster        {plan.nodes} node(s) x {plan.gpus_per_node} GPUs = {plan.gpus} GPUs ("
        + ("hybrid engine: actor and rollout share every GPU)" if plan.rollout_mode == "hybrid" else
           "the actor's; the vLLM engines run outside the trainer)"),
        f"actor          {plan.actor}; lr {plan.lr:g}; {plan.optimizer_steps_per_rollout} optimizer step(s) per "
        "rollout; no reference model, no KL",
        f"rollout        {plan.rollout_replicas} {plan.rollout_mode} vLLM engine(s) x TP{plan.rollout_tp}, behind the "
        "balancer; "
        f"{plan.agent_loop_workers} agent-loop workers",
        f"balancer       {plan.balancer_url}  (dashboard: /dashboard)",
        f"reward         {plan.reward_url}",
        f"step           {plan.prompts_per_step} prompts x {plan.samples_per_prompt} samples = "
        f"{plan.samples_per_step} samples, {'shuffled' if plan.shuffle else 'NOT shuffled'} before dispatch; "
        f"~{plan.samples_per_step / plan.rollout_replicas:.0f} per engine",
        f"lengths        prompt <= {plan.max_prompt_length}, response <= {plan.max_response_length}, "
        f"max_model_len {plan.max_model_len}",
        f"tokens/step    <= {plan.tokens_per_step:,} (B*n*(P+R)); generated <= {plan.generated_tokens_per_step:,} "
        "(B*n*R)",
        f"advantage      {plan.adv_estimator} (overlong responses -> advantage 0)",
    ]
    for name, value in (components or {}).items():
        lines.append(f"{name:<14} {value}")
    return "\n".join(lines)


@dataclass
class DryRun:
    """What verl would instantiate from the config (all built here, on CPU, with no Ray cluster)."""

    config: DictConfig  # resolved
    plan: PlacementPlan
    adv_estimator_fn: Callable
    reward_manager_cls: type
    agent_loop_manager: Any  # an AMAgentLoopManager with no workers started
    checkpoint_manager_cls: type
    task_runner_cls: Any  # the Ray actor class handed to run_ppo
    replica_cls: Any  # verl's rollout replica class for rollout.name (None: verl's own vLLM replica, needs vllm)
    rollout_config: Any  # verl's RolloutConfig dataclass, as every agent-loop worker builds it
    memory: MemoryPlan  # per-GPU peak of each phase (am_rl.trainer.memory_plan)

    def components(self) -> dict[str, str]:
        def name(obj: Any) -> str:
            return f"{obj.__module__}.{obj.__qualname__}"

        return {
            "estimator fn": name(self.adv_estimator_fn),
            "reward mgr": name(self.reward_manager_cls),
            "agent loop": name(type(self.agent_loop_manager)),
            "server client": name(type(self.agent_loop_manager.llm_client)),
            "weight sync": name(self.checkpoint_manager_cls),
            "task runner": name(self.task_runner_cls.__ray_actor_class__),
            "replicas": name(self.replica_cls) if self.replica_cls else "verl's vLLMReplica (hybrid)",
        }

    def report(self) -> str:
        return format_plan(self.plan, self.components()) + "\n" + format_memory_plan(self.memory)


def external_replica_cls() -> type:
    """The class verl's LLMServerManager builds for ``rollout.name=am_external``, looked up as verl looks it up."""
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    from am_rl.trainer.external_engines import register

    register()
    return RolloutReplicaRegistry.get(ROLLOUT_NAME)


def dry_run(cfg: DictConfig) -> DryRun:
    """Resolve, validate with verl's own checks, and build everything short of GPU workers."""
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn
    from verl.trainer.ppo.reward import resolve_reward_manager_cls
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass
    from verl.utils.config import validate_config as verl_validate_config
    from verl.utils.import_utils import load_class_from_fqn

    import am_rl.algos.am_grpo  # noqa: F401  (registers am_grpo, as the task runner does in verl's driver)
    from am_rl.trainer.task_runner import AMTaskRunner

    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)
    balancer_started = not cfg.am_rl.balancer.url
    if balancer_started:
        cfg.am_rl.balancer.url = default_balancer_url(cfg)
    OmegaConf.resolve(cfg)
    if need_reference_policy(cfg) or need_critic(cfg):
        raise ConfigError("verl would build a reference model or a critic; am_grpo runs with neither")
    verl_validate_config(cfg, use_reference_policy=False, use_critic=False)
    rollout = cfg.actor_rollout_ref.rollout
    agent_loop_cls = load_class_from_fqn(rollout.agent.agent_loop_manager_class, "AgentLoopManager")
    plan = placement_plan(cfg)
    if balancer_started:
        plan = replace(plan, balancer_url=f"{plan.balancer_url} (started by the trainer)")
    return DryRun(
        config=cfg,
        plan=plan,
        adv_estimator_fn=get_adv_estimator_fn(cfg.algorithm.adv_estimator),
        reward_manager_cls=resolve_reward_manager_cls(cfg),
        agent_loop_manager=agent_loop_cls(cfg, llm_client=None),
        checkpoint_manager_cls=load_class_from_fqn(rollout.checkpoint_manager_class, "CheckpointEngineManager"),
        task_runner_cls=AMTaskRunner,
        replica_cls=external_replica_cls() if rollout.name == ROLLOUT_NAME else None,
        rollout_config=omega_conf_to_dataclass(rollout),
        memory=checked_memory_plan(cfg),
    )
