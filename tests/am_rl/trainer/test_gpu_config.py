"""Load-time checks of the trainer's config: what would bypass or break am_rl's rollout system fails with the key
named; the service URLs reach the config verl runs with and every Ray process's environment; the CLI dry run prints
the 8 x 8 stage-1 plan with its memory plan, and refuses a config that cannot fit; a GPU recipe on this GPU-less
machine fails before anything starts."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from am_rl.config import ConfigError
from am_rl.config.load import compose
from am_rl.trainer.run import REWARD_URL_ENV, for_verl, ray_environment

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    "override, message",
    [
        ("actor_rollout_ref.rollout.max_model_len=4096", "max_model_len=4096 < max_prompt_length"),
        ("actor_rollout_ref.rollout.agent.agent_loop_manager_class=null", "agent_loop_manager_class must be"),
        ("actor_rollout_ref.rollout.checkpoint_manager_class=null", "checkpoint_manager_class must be"),
        ("actor_rollout_ref.rollout.disable_log_stats=true", "disable_log_stats=true"),
        ("actor_rollout_ref.rollout.name=sglang", "rollout.name=sglang"),
        ("actor_rollout_ref.rollout.tensor_model_parallel_size=3", "tensor_model_parallel_size=3"),
        ("actor_rollout_ref.rollout.agent.num_workers=7", "num_workers=7"),
        ("actor_rollout_ref.actor.use_kl_loss=true", "use_kl_loss=true"),
        ("trainer.use_v1=true", "trainer.use_v1=true"),
        ("actor_rollout_ref.actor.ppo_mini_batch_size=64", "ppo_mini_batch_size=64"),
    ],
)
def test_gpu_config_violations_fail_at_load(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        compose("stage1_32b", [override])


def test_service_urls_reach_verls_config_and_ray_workers(tmp_path, monkeypatch):
    monkeypatch.setenv("AM_RL_BALANCER_API_KEY", "k")
    cfg = compose("demo_cpu", [f"trainer.default_local_dir={tmp_path}"])
    env = ray_environment(cfg, "http://h:8100", "http://r:8200", ["http://e1:1", "http://e2:2"])
    cfg = for_verl(cfg, "http://h:8100", "http://r:8200", env)
    assert cfg.am_rl.balancer.url == "http://h:8100" and cfg.am_rl.reward.url == "http://r:8200"
    env_vars = cfg.ray_kwargs.ray_init.runtime_env.env_vars
    assert env_vars[REWARD_URL_ENV] == "http://r:8200" and env_vars["AM_RL_BALANCER_URL"] == "http://h:8100"
    assert env_vars["AM_RL_ENGINE_URLS"] == "http://e1:1,http://e2:2"
    # The balancer's key reaches the workers through the environment they inherit, never the config verl prints.
    assert "AM_RL_BALANCER_API_KEY" not in env_vars and "'k'" not in str(OmegaConf.to_container(cfg))
    assert env_vars["VERL_USE_EXTERNAL_MODULES"] == "am_rl.trainer.verl_plugins"
    assert env_vars["VERL_PLATFORM"] == "cpu", "the recipe's platform entries are kept"


def test_gpu_recipe_on_a_machine_without_gpus_fails_before_anything_starts(tmp_path):
    cmd = [sys.executable, "-m", "am_rl.main_grpo", "--config-name", "stage1_7b_1node",
           f"trainer.default_local_dir={tmp_path}", "actor_rollout_ref.model.path=/nonexistent"]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "this recipe trains on GPUs, and this machine has none" in result.stderr
    assert "demo_cpu" in result.stderr and not (tmp_path / "logs").exists()


def test_cpu_recipe_without_the_vllm_virtualenv_says_what_to_run(tmp_path):
    cmd = [sys.executable, "-m", "am_rl.main_grpo", "--config-name", "demo_cpu",
           f"trainer.default_local_dir={tmp_path}", "am_rl.vllm.python=/nonexistent/python"]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "make setup" in result.stderr and "/nonexistent/python" in result.stderr


def test_cli_dry_run_prints_the_stage1_plan_on_8x8():
    cmd = [sys.executable, "-m", "am_rl.main_grpo", "--config-name", "stage1_32b", "trainer.dry_run=true",
           "trainer.nnodes=8", "trainer.n_gpus_per_node=8", "am_rl.reward.url=http://r:8200",
           "hydra.run.dir=/tmp/am_rl_dry_run_hydra"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "8 node(s) x 8 GPUs = 64 GPUs" in out and "16 hybrid vLLM engine(s) x TP4" in out
    assert "256 prompts x 16 samples = 4096 samples, shuffled before dispatch" in out
    assert "<= 109,051,904 (B*n*(P+R))" in out and "reward         http://r:8200" in out
    assert "memory plan    per cuda device of 79.6 GiB, limit 71.6 GiB; model qwen2.5-32b" in out
    for phase in ("actor update", "old log-prob", "weight sync", "rollout"):
        assert re.search(rf"^  {phase} +[0-9.]+ GiB  ok$", out, re.M), phase


def test_cli_refuses_a_recipe_that_cannot_fit_naming_the_setting():
    cmd = [sys.executable, "-m", "am_rl.main_grpo", "--config-name", "stage2_32b", "trainer.dry_run=true",
           "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=65536", "am_rl.reward.url=http://r:8200",
           "hydra.run.dir=/tmp/am_rl_dry_run_hydra"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "this config does not fit" in result.stderr and "the actor update phase plans" in result.stderr
    assert "change actor_rollout_ref.actor.ppo_max_token_len_per_gpu" in result.stderr


def test_trainer_started_balancer_advertises_the_node_ip_and_reports_its_totals(capsys):
    import httpx
    import ray
    from omegaconf import OmegaConf

    from am_rl.config.schema import BalancerSection
    from am_rl.trainer.services import started_balancer

    balancer = OmegaConf.structured(BalancerSection(host="0.0.0.0", port=0))  # every knob at its default otherwise
    cfg = OmegaConf.create({"am_rl": {"balancer": balancer}})
    with started_balancer(cfg) as url:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        assert host == ray.util.get_node_ip_address()
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()["status"] == "ok"
    assert "balancer totals: requests=0 tokens_relayed=0" in capsys.readouterr().out
