"""A standalone balancer (recipes/slurm) runs with the recipe's am_rl.balancer settings, and its key reaches the
trainer's balancer client through the environment only."""

import subprocess
import sys

from omegaconf import OmegaConf

from am_rl.config.load import compose
from am_rl.trainer.balancer_args import balancer_flags
from am_rl.trainer.balancer_control import API_KEY_ENV


def test_flags_follow_the_recipe():
    assert balancer_flags(compose("demo_cpu").am_rl.balancer) == ["--policy", "makespan", "--no-migrate"]
    cfg = compose("demo_cpu", ["am_rl.balancer.policy=least_requests", "am_rl.balancer.migrate=true"])
    assert balancer_flags(cfg.am_rl.balancer) == ["--policy", "least_requests", "--migrate"]


def test_cli_prints_the_processes_then_one_flag_per_line_and_names_a_bad_recipe():
    ok = subprocess.run([sys.executable, "-m", "am_rl.trainer.balancer_args", "--config-name", "demo_cpu",
                         "am_rl.balancer.processes=3"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert ok.returncode == 0 and ok.stdout.splitlines() == ["3", "--policy", "makespan", "--no-migrate"], ok.stderr
    bad = subprocess.run([sys.executable, "-m", "am_rl.trainer.balancer_args", "--config-name", "no_such_recipe"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "recipe no_such_recipe:" in bad.stderr and "Traceback" not in bad.stderr


def test_agent_loop_sends_the_key_from_the_environment(monkeypatch):
    from am_rl.trainer.agent_loop import AMAgentLoopManager

    cfg = compose("gpu_smoke", ["actor_rollout_ref.model.path=/unused"])
    OmegaConf.set_struct(cfg, False)
    cfg.am_rl.balancer.url = "http://127.0.0.1:1"  # never called
    monkeypatch.setenv(API_KEY_ENV, "k" * 64)
    assert AMAgentLoopManager(cfg, llm_client=None).llm_client.api_key == "k" * 64
    monkeypatch.delenv(API_KEY_ENV)
    assert AMAgentLoopManager(cfg, llm_client=None).llm_client.api_key is None
