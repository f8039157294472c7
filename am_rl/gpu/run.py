"""Launch the GPU shape: the balancer and reward service when no URL is given, then verl's ``run_ppo`` with
am_rl's task runner. ``trainer.dry_run=true`` prints the placement plan instead and starts nothing."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig, OmegaConf

from am_rl.config.schema import balancer_config
from am_rl.config.validate import ConfigError
from am_rl.gpu.plan import dry_run

logger = logging.getLogger(__name__)

REWARD_URL_ENV = "AM_RL_REWARD_URL"  # read by am_rl.rewards' reward managers in verl's reward workers


def with_service_urls(cfg: DictConfig, balancer_url: str, reward_url: str) -> DictConfig:
    """The config verl runs with: both URLs set, and the reward URL in every Ray worker's environment."""
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)
    cfg.am_rl.balancer.url = balancer_url
    cfg.am_rl.reward.url = reward_url
    env = OmegaConf.select(cfg, "ray_kwargs.ray_init.runtime_env.env_vars") or {}
    cfg.ray_kwargs.ray_init.runtime_env.env_vars = {**env, REWARD_URL_ENV: reward_url}
    return cfg


@contextlib.contextmanager
def started_balancer(cfg: DictConfig) -> Iterator[str]:
    """A balancer in this process (the driver, on the head node), reachable from the other nodes."""
    import ray

    from load_balancer.server import BalancerServer

    section = cfg.am_rl.balancer
    server = BalancerServer(balancer_config(section, host=section.host, port=section.port))
    with server:
        url = f"http://{ray.util.get_node_ip_address()}:{server.port}"
        logger.info("load balancer at %s (dashboard: %s/dashboard)", url, url)
        try:
            yield url
        finally:
            totals = server.balancer.snapshot().totals
            # One line that says the samples really went through the balancer (scripts/gpu_smoke.sh checks it).
            print(f"balancer totals: requests={totals.requests} tokens_relayed={totals.tokens_relayed}", flush=True)


@contextlib.contextmanager
def started_reward_service(cfg: DictConfig) -> Iterator[str]:
    from reward_server.launcher import reward_service

    if cfg.trainer.nnodes > 1:
        raise ConfigError(
            "am_rl.reward.url is null on a multi-node run: start the reward service (recipes/slurm/reward.sbatch) "
            "and pass its URL; a service started here listens on 127.0.0.1 only"
        )
    log_dir = Path(cfg.trainer.default_local_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    with reward_service(log_dir / "reward_service.log", workers=cfg.am_rl.reward.workers) as (url, _):
        logger.info("reward service at %s", url)
        yield url


def run(cfg: DictConfig) -> None:
    if cfg.trainer.dry_run:
        print(dry_run(cfg).report())
        return
    from verl.trainer.main_ppo import run_ppo

    from am_rl.gpu.task_runner import AMTaskRunner

    dry_run(cfg)  # the same checks and lookups before any process starts
    with contextlib.ExitStack() as stack:
        balancer_url = cfg.am_rl.balancer.url or stack.enter_context(started_balancer(cfg))
        reward_url = cfg.am_rl.reward.url or stack.enter_context(started_reward_service(cfg))
        run_ppo(with_service_urls(cfg, balancer_url, reward_url), task_runner_class=AMTaskRunner)
