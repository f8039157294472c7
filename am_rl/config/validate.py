"""Load-time checks that keep a run faithful to the recipe (DESIGN.md §2).

They read verl's key names, so they apply to the CPU recipes and to verl's GPU trainer config alike. A failing
check raises ``ConfigError`` naming every offending key, before anything is started.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

# The estimators that must run without any KL term (no reference model, no KL loss, no KL in reward).
NO_KL_ESTIMATORS = frozenset({"am_grpo"})
GROUP_ESTIMATORS = frozenset({"am_grpo", "grpo"})


class ConfigError(ValueError):
    """The config asks for something the recipe forbids; the message names the keys."""


def _get(cfg: DictConfig, key: str, default: Any = None) -> Any:
    return OmegaConf.select(cfg, key, default=default)


def kl_violations(cfg: DictConfig) -> list[str]:
    """Keys that switch on a KL term, as ``key=value`` strings."""
    found = []
    if _get(cfg, "algorithm.use_kl_in_reward", False):
        found.append("algorithm.use_kl_in_reward=true")
    if _get(cfg, "actor_rollout_ref.actor.use_kl_loss", False):
        found.append("actor_rollout_ref.actor.use_kl_loss=true")
    return found


def on_policy_violations(cfg: DictConfig) -> list[str]:
    """Keys that would give more than one optimizer step per rollout batch."""
    found = []
    batch = _get(cfg, "data.train_batch_size")
    mini = _get(cfg, "actor_rollout_ref.actor.ppo_mini_batch_size")
    epochs = _get(cfg, "actor_rollout_ref.actor.ppo_epochs", 1)
    # verl counts the mini-batch in prompts, like data.train_batch_size; it is multiplied by rollout.n inside.
    if batch is not None and mini is not None and mini != batch:
        found.append(
            f"actor_rollout_ref.actor.ppo_mini_batch_size={mini} != data.train_batch_size={batch} "
            "(must be equal: one mini-batch per rollout batch)"
        )
    if epochs != 1:
        found.append(f"actor_rollout_ref.actor.ppo_epochs={epochs} (must be 1)")
    return found


AGENT_LOOP_MANAGER = "am_rl.trainer.agent_loop.AMAgentLoopManager"
CHECKPOINT_MANAGER = "am_rl.trainer.checkpoint_manager.BalancerPausingCheckpointManager"
ACTOR_STRATEGIES = frozenset({"fsdp", "fsdp2", "megatron"})


ROLLOUT_NAMES = frozenset({"vllm", "am_external"})  # verl's hybrid vLLM replicas, or external engines


def trainer_violations(cfg: DictConfig) -> list[str]:
    """Keys that would make verl's trainer bypass or break am_rl's rollout system."""
    found = []
    rollout = "actor_rollout_ref.rollout"
    if _get(cfg, "trainer.use_v1", False):
        found.append("trainer.use_v1=true (am_rl runs verl's DataProto trainer through am_rl.trainer.task_runner)")
    if _get(cfg, f"{rollout}.name") not in ROLLOUT_NAMES:
        found.append(f"{rollout}.name={_get(cfg, f'{rollout}.name')} (one of {sorted(ROLLOUT_NAMES)}: the balancer fronts vLLM)")
    if _get(cfg, f"{rollout}.agent.agent_loop_manager_class") != AGENT_LOOP_MANAGER:
        found.append(f"{rollout}.agent.agent_loop_manager_class must be {AGENT_LOOP_MANAGER} (shuffle + balancer)")
    if _get(cfg, f"{rollout}.checkpoint_manager_class") != CHECKPOINT_MANAGER:
        found.append(f"{rollout}.checkpoint_manager_class must be {CHECKPOINT_MANAGER} (balancer pause on sync)")
    if _get(cfg, f"{rollout}.disable_log_stats", True):
        found.append(f"{rollout}.disable_log_stats=true (the balancer routes on vLLM's /metrics)")
    strategy = _get(cfg, "actor_rollout_ref.actor.strategy")
    if strategy not in ACTOR_STRATEGIES:
        found.append(f"actor_rollout_ref.actor.strategy={strategy} (one of {sorted(ACTOR_STRATEGIES)})")
    prompt, response = _get(cfg, "data.max_prompt_length"), _get(cfg, "data.max_response_length")
    max_model_len = _get(cfg, f"{rollout}.max_model_len")
    if max_model_len is not None and max_model_len < prompt + response:
        # Then a long prompt gets max_tokens < max_response_length, and a response cut there looks complete to
        # am_grpo, which reads truncation from the response filling its width (am_rl.trainer.agent_loop).
        found.append(
            f"{rollout}.max_model_len={max_model_len} < max_prompt_length + max_response_length = {prompt + response}"
        )
    gpus = _get(cfg, "trainer.nnodes", 0) * _get(cfg, "trainer.n_gpus_per_node", 0)
    tp = _get(cfg, f"{rollout}.tensor_model_parallel_size", 1)
    if gpus % tp:
        found.append(f"{rollout}.tensor_model_parallel_size={tp} does not divide the {gpus} GPUs")
    samples = _get(cfg, "data.train_batch_size", 0) * _get(cfg, f"{rollout}.n", 1)
    workers = _get(cfg, f"{rollout}.agent.num_workers", 1)
    if samples % workers:
        found.append(f"{rollout}.agent.num_workers={workers} does not divide the {samples} samples of a step")
    return found


def balancer_violations(cfg: DictConfig) -> list[str]:
    """``am_rl.balancer`` settings that name no balancer to run (the rule is documented at the knobs, in
    ``am_rl.config.schema.BalancerSection``)."""
    processes = _get(cfg, "am_rl.balancer.processes", 1)
    if processes < 1:
        return [f"am_rl.balancer.processes={processes} (must be >= 1: the balancer processes the trainer starts)"]
    url = _get(cfg, "am_rl.balancer.url")
    listed = len([u for u in str(url).split(",") if u.strip()]) if url else 0
    if processes > 1 and url and listed != processes:
        return [
            f"am_rl.balancer.processes={processes} with am_rl.balancer.url listing {listed} balancer(s): with a url "
            "the trainer starts none, and processes must be 1 or the number of URLs listed (the shards a launcher "
            "such as recipes/slurm started, comma-separated in the url)"
        ]
    return []


def validate_config(cfg: DictConfig) -> DictConfig:
    """Raise ``ConfigError`` listing every violation; return ``cfg`` unchanged when it is valid."""
    estimator = _get(cfg, "algorithm.adv_estimator")
    errors = []
    if estimator in NO_KL_ESTIMATORS:
        errors += [f"{k} (adv_estimator={estimator} runs with no KL term at all)" for k in kl_violations(cfg)]
    if estimator in GROUP_ESTIMATORS:
        n = _get(cfg, "actor_rollout_ref.rollout.n")
        if n is not None and n < 2:
            errors.append(f"actor_rollout_ref.rollout.n={n} (a group-relative advantage needs n >= 2)")
    if _get(cfg, "am_rl.strict_on_policy", True):
        errors += on_policy_violations(cfg)
    errors += trainer_violations(cfg)
    errors += balancer_violations(cfg)
    if errors:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(errors))
    return cfg
