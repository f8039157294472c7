"""The whole CPU job, small: real vLLM servers behind the real balancer, the real reward service, GRPO steps."""

import asyncio
import os
import signal
import threading

import httpx
import psutil
import pytest
import torch

from am_rl.config.load import compose
from am_rl.cpu.run import resolve_model
from am_rl.cpu.services import start_services
from am_rl.cpu.trainer import GRPOTrainer
from am_rl.data.arithmetic import make_problems
from am_rl.rollout import RolloutClient

pytestmark = pytest.mark.vllm


def test_two_grpo_steps_then_failover_then_clean_shutdown(tmp_path):
    cfg = compose(
        "demo_cpu",
        [
            "trainer.total_training_steps=2",
            "trainer.test_freq=2",
            "trainer.save_freq=2",
            f"trainer.default_local_dir={tmp_path}",
            "data.train_batch_size=4",
            "actor_rollout_ref.rollout.n=4",
            "am_rl.val_size=8",
            "am_rl.reward.workers=1",
        ],
    )
    model_dir = resolve_model(cfg)
    with start_services(cfg, model_dir, tmp_path / "logs") as endpoints:
        trainer = GRPOTrainer(cfg, model_dir, endpoints)
        initial = {k: v.clone() for k, v in trainer.actor.state_dict().items()}
        summary = asyncio.run(trainer.fit())

        # Rewards were computed for every sample, an update happened, the weights reached every server.
        assert [h["step"] for h in summary["history"]] == [1, 2]
        for h in summary["history"]:
            assert 0.0 <= h["reward/mean"] <= 1.0 and h["timing/reward_s"] > 0
            assert h["onpolicy/max_logprob_diff"] < 1e-3  # the engines sampled from the trainer's policy
        assert any(h["reward/mean"] > 0 for h in summary["history"]), "warm model should solve some problems"
        changed = [k for k, v in trainer.actor.state_dict().items() if not torch.equal(v, initial[k])]
        assert changed, "no parameter changed: no update happened"
        for url in endpoints.vllm_urls:
            assert httpx.get(f"{url}/weight_info", timeout=10).json()["weight_version"] == "step-2"
        assert (tmp_path / "global_step_2" / "state.json").exists()
        assert (tmp_path / "learning_curve.png").stat().st_size > 0
        assert summary["final_val_accuracy"] is not None

        # Kill one engine while a rollout batch streams: the balancer continues its samples on the other one.
        victim = psutil.Process(endpoints.engines.servers[1].proc.pid)
        problems = make_problems(8, seed=5, max_operand=cfg.am_rl.max_operand)

        async def rollout_with_a_kill():
            trainer.client = RolloutClient(endpoints.balancer_url, endpoints.model_name)
            killer = threading.Timer(0.3, lambda: os.killpg(victim.pid, signal.SIGKILL))
            killer.start()
            try:
                return await trainer.rollout(99, problems, 8, 1.0, 1.0)
            finally:
                killer.cancel()
                await trainer.client.aclose()

        results, stats = asyncio.run(rollout_with_a_kill())
        assert len(results) == 64 and all(r.finish_reason in ("stop", "length") for r in results)
        assert stats.wall_s > 0.3, "the batch finished before the kill: nothing was failed over"
        assert not victim.is_running() or victim.status() == psutil.STATUS_ZOMBIE
        children = psutil.Process().children(recursive=True)
        assert len(children) >= 3  # the surviving engine's processes, the reward service and its worker

    # Every child process (engines, reward service and its workers) is gone.
    _, alive = psutil.wait_procs(children, timeout=30)
    assert alive == []
