"""Launch a run: the services verl's trainer talks to, then verl's ``run_ppo`` with am_rl's task runner.

Started here when the config gives no URL (a Slurm launch gives URLs instead): the load balancer (in this process,
reachable from every node), the reward service, and with ``rollout.name=am_external`` the vLLM servers (from the vLLM
virtualenv). Every Ray process of the run gets their URLs and am_rl's verl registrations through its environment.
The vLLM servers start first and are waited for by the replicas inside verl, so their startup overlaps Ray's.

``trainer.dry_run=true`` prints the placement plan instead and starts nothing. Whatever happens (an error, Ctrl-C,
SIGTERM), Ray, the vLLM servers and the services are stopped on the way out.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time

from omegaconf import DictConfig, OmegaConf

from am_rl.rewards.scorer import URL_ENV as REWARD_URL_ENV  # read there, in verl's reward workers
from am_rl.trainer.balancer_control import BALANCER_URL_ENV, CONTROL_TIMEOUT_ENV
from am_rl.trainer.external_engines import ENGINE_URLS_ENV, ROLLOUT_NAME, STARTUP_TIMEOUT_ENV
from am_rl.trainer.plan import dry_run
from am_rl.trainer.services import launched_engines, run_dir, started_balancer, started_reward_service

logger = logging.getLogger(__name__)

PLUGINS_MODULE = "am_rl.trainer.verl_plugins"


def ray_environment(cfg: DictConfig, balancer_url: str, reward_url: str, engine_urls: list[str]) -> dict[str, str]:
    """What every Ray process of the run needs in its environment (verl hands our classes its own config only)."""
    out = run_dir(cfg).resolve()
    env = {
        "VERL_USE_EXTERNAL_MODULES": PLUGINS_MODULE,  # `import verl` imports our registrations in every process
        BALANCER_URL_ENV: balancer_url,
        CONTROL_TIMEOUT_ENV: str(cfg.am_rl.balancer.control_timeout_s),
        REWARD_URL_ENV: reward_url,
        # verl's file logger truncates its file: one file per launch, so a resumed run keeps the earlier steps.
        "VERL_FILE_LOGGER_PATH": str(out / "metrics" / f"{time.strftime('%Y%m%d-%H%M%S')}.jsonl"),
        "TENSORBOARD_DIR": str(out / "tensorboard"),
    }
    if engine_urls:
        env[ENGINE_URLS_ENV] = ",".join(engine_urls)
        env[STARTUP_TIMEOUT_ENV] = str(cfg.am_rl.vllm.startup_timeout_s)
    (out / "metrics").mkdir(exist_ok=True)
    return env


def for_verl(cfg: DictConfig, balancer_url: str, reward_url: str, env: dict[str, str]) -> DictConfig:
    """The config verl runs with: the services' URLs set, ``env`` in every Ray process's environment (the recipe's
    entries win)."""
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)
    cfg.am_rl.balancer.url = balancer_url
    cfg.am_rl.reward.url = reward_url
    recipe_env = OmegaConf.select(cfg, "ray_kwargs.ray_init.runtime_env.env_vars") or {}
    cfg.ray_kwargs.ray_init.runtime_env.env_vars = {**env, **recipe_env}
    return cfg


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run(cfg: DictConfig) -> None:
    if cfg.trainer.dry_run:
        print(dry_run(cfg).report())
        return
    from verl.trainer.main_ppo import run_ppo

    from am_rl.trainer.preflight import check_machine
    from am_rl.trainer.task_runner import AMTaskRunner

    check_machine(cfg)
    if cfg.am_rl.demo_inputs:
        from am_rl.demo.inputs import with_demo_inputs

        cfg = with_demo_inputs(cfg)
    dry_run(cfg)  # the same checks and lookups before any process starts
    # SIGTERM (Slurm, `kill`) unwinds like Ctrl-C, so every child process is stopped on the way out. SIGINT too, even
    # when inherited as ignored (a launcher started in the background: `nohup ... &`, `&` in a script): Ctrl-C and
    # the vLLM startup watch (am_rl.trainer.services.StartupWatch) stop the run through it.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import ray

    with contextlib.ExitStack() as stack:
        engine_urls = list(cfg.am_rl.vllm.urls or [])
        if cfg.actor_rollout_ref.rollout.name == ROLLOUT_NAME and not engine_urls:
            engine_urls = stack.enter_context(launched_engines(cfg))
        reward_url = cfg.am_rl.reward.url or stack.enter_context(started_reward_service(cfg))
        balancer_url = cfg.am_rl.balancer.url or stack.enter_context(started_balancer(cfg))
        env = ray_environment(cfg, balancer_url, reward_url, engine_urls)
        stack.callback(ray.shutdown)  # first on the way out: no worker outlives the services it talks to
        run_ppo(for_verl(cfg, balancer_url, reward_url, env), task_runner_class=AMTaskRunner)
    if cfg.am_rl.demo_inputs:
        from am_rl.demo.report import write_run_report

        write_run_report(run_dir(cfg))
