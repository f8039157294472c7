"""What verl actually instantiates from our GPU recipes (asserted on the objects verl builds), the dry run's
placement plan, and overlong samples reaching am_grpo through verl's own compute_advantage."""

import cloudpickle
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from verl import DataProto
from verl.trainer.main_ppo_v0 import BaseTaskRunner
from verl.trainer.ppo.core_algos import get_adv_estimator_fn
from verl.trainer.ppo.ray_trainer import compute_advantage
from verl.trainer.ppo.reward import load_reward_manager, resolve_reward_manager_cls
from verl.utils.import_utils import load_class_from_fqn
from verl.workers.config import RolloutConfig
from verl.workers.rollout.llm_server import LLMServerClient

from am_rl.algos.am_grpo import compute_am_grpo_advantage
from am_rl.config.load import compose
from am_rl.trainer.agent_loop import AMAgentLoopManager, TruncationMismatch, check_truncation
from am_rl.trainer.checkpoint_manager import BalancerPausingCheckpointManager
from am_rl.trainer.plan import dry_run, format_plan, placement_plan
from am_rl.trainer.run import REWARD_URL_ENV, for_verl
from am_rl.trainer.server_client import BalancerServerClient
from am_rl.rewards.loop_manager import RemoteServiceLoopRewardManager

GPU_RECIPES = ["stage1_32b", "stage1_32b_megatron", "stage2_32b", "stage1_7b_1node", "eval_32b", "gpu_smoke"]
LB = "http://10.0.0.1:8100"
RM = "http://10.0.0.2:8200"


def config(name: str, *overrides: str):
    extra = ["actor_rollout_ref.model.path=/models/x"] if name == "gpu_smoke" else []
    cfg = compose(name, [*extra, *overrides])
    OmegaConf.set_struct(cfg, False)
    cfg.am_rl.balancer.url, cfg.am_rl.reward.url = LB, RM
    return cfg


@pytest.fixture(scope="module")
def stage1():
    return dry_run(config("stage1_32b", "trainer.nnodes=8", "trainer.n_gpus_per_node=8"))


def test_verl_builds_our_components(stage1):
    cfg = stage1.config
    assert get_adv_estimator_fn(cfg.algorithm.adv_estimator) is compute_am_grpo_advantage
    assert stage1.adv_estimator_fn is compute_am_grpo_advantage
    assert resolve_reward_manager_cls(cfg) is RemoteServiceLoopRewardManager
    manager_cls = load_class_from_fqn(cfg.actor_rollout_ref.rollout.agent.agent_loop_manager_class, "AgentLoopManager")
    assert manager_cls is AMAgentLoopManager
    client = stage1.agent_loop_manager.llm_client
    assert isinstance(client, LLMServerClient) and type(client) is BalancerServerClient
    assert client.balancer_url == LB
    shipped = cloudpickle.loads(cloudpickle.dumps(client))  # how Ray hands it to every agent-loop worker
    assert type(shipped) is BalancerServerClient and shipped.balancer_url == LB and shipped.max_concurrency == 512
    assert load_class_from_fqn(cfg.actor_rollout_ref.rollout.checkpoint_manager_class, "CheckpointEngineManager") is (
        BalancerPausingCheckpointManager
    )
    assert isinstance(stage1.rollout_config, RolloutConfig)
    assert stage1.rollout_config.agent.agent_loop_manager_class == "am_rl.trainer.agent_loop.AMAgentLoopManager"
    assert issubclass(stage1.task_runner_cls.__ray_actor_class__, BaseTaskRunner)


def test_verl_loads_the_remote_reward_manager_with_the_service_url(stage1, tiny_model, monkeypatch):
    cfg = for_verl(stage1.config, LB, RM, {REWARD_URL_ENV: RM})
    cfg.actor_rollout_ref.model.path = str(tiny_model)
    assert cfg.ray_kwargs.ray_init.runtime_env.env_vars[REWARD_URL_ENV] == RM
    monkeypatch.setenv(REWARD_URL_ENV, RM)  # what Ray's runtime_env gives every reward worker
    from transformers import AutoTokenizer

    manager = load_reward_manager(cfg, AutoTokenizer.from_pretrained(tiny_model))
    assert type(manager) is RemoteServiceLoopRewardManager
    assert manager.scorer.client.config.url == RM


def test_stage1_plan_on_8x8(stage1):
    plan = stage1.plan
    assert (plan.nodes, plan.gpus_per_node, plan.gpus) == (8, 8, 64)
    assert plan.rollout_tp == 4 and plan.rollout_replicas == 16
    assert plan.actor == "fsdp over 64 GPUs, Ulysses SP8, DP8"
    assert (plan.prompts_per_step, plan.samples_per_prompt, plan.samples_per_step) == (256, 16, 4096)
    assert plan.max_response_length == 24576 and plan.max_prompt_length == 2048
    assert plan.tokens_per_step == 4096 * (2048 + 24576) == 109_051_904
    assert plan.lr == 4e-6 and plan.optimizer_steps_per_rollout == 1
    assert plan.balancer_url == LB and plan.reward_url == RM
    text = stage1.report()
    for expected in ("64 GPUs", "16 hybrid vLLM engine(s) x TP4", "4096 samples", "109,051,904", LB, RM,
                     "am_rl.trainer.server_client.BalancerServerClient"):  # fmt: skip
        assert expected in text, expected


def test_megatron_and_stage2_and_eval_plans():
    mega = placement_plan(config("stage1_32b_megatron"))
    assert mega.actor == "megatron TP8 PP2 CP2 DP2"
    stage2 = placement_plan(config("stage2_32b"))
    assert stage2.max_response_length == 32768 and stage2.lr == 1e-6 and stage2.max_model_len == 34816
    evaluation = config("eval_32b")
    val = evaluation.actor_rollout_ref.rollout.val_kwargs
    assert (val.temperature, val.top_p, val.n, val.do_sample) == (0.6, 0.95, 64, True)
    assert evaluation.data.max_response_length == 49152 and evaluation.trainer.val_only
    small = placement_plan(config("stage1_7b_1node"))
    assert small.gpus == 8 and small.rollout_replicas == 8


def test_multi_node_plan_without_reward_url_says_it_is_missing():
    cfg = config("stage1_32b")
    cfg.am_rl.reward.url = None
    assert placement_plan(cfg).reward_url.startswith("MISSING")
    assert "MISSING" in format_plan(placement_plan(cfg))


@pytest.mark.parametrize("name", GPU_RECIPES)
def test_every_gpu_recipe_passes_verl_checks(name):
    built = dry_run(config(name))
    assert built.adv_estimator_fn is compute_am_grpo_advantage
    assert built.plan.optimizer_steps_per_rollout == 1


def agent_loop_output(lengths, truncated, width=8):
    """Rows as verl's agent loop returns them: response_mask of each generated length, our finish flags."""
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return DataProto.from_single_dict(
        {
            "response_mask": mask,
            "attention_mask": torch.cat([torch.ones(len(lengths), 2, dtype=torch.long), mask], dim=1),
            "truncated": np.array(truncated, dtype=bool),
        }
    )


def test_truncated_samples_get_zero_advantage_through_verls_compute_advantage(stage1):
    # Two groups of 4; in group a, one sample was cut at max_tokens (full width 8) with the best score.
    data = agent_loop_output([3, 8, 5, 2, 4, 6, 7, 1], [False, True, False, False, False, False, False, False])
    assert check_truncation(data).truncated == 1
    scores = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    rewards = torch.zeros(8, 8)
    rewards[torch.arange(8), data.batch["response_mask"].sum(-1) - 1] = scores  # score on the last token
    data.batch["token_level_rewards"] = rewards
    data.non_tensor_batch["uid"] = np.array(["a"] * 4 + ["b"] * 4, dtype=object)
    out = compute_advantage(data, adv_estimator=stage1.config.algorithm.adv_estimator, config=stage1.config.algorithm)
    adv = out.batch["advantages"]  # (8, 8)
    assert torch.all(adv[1] == 0), "the truncated sample moves nothing"
    # Group a's baseline is its 3 complete samples (scores 0, 1, 0), without the truncated one.
    mean, std = 1 / 3, torch.tensor([0.0, 1.0, 0.0]).std().item()
    assert adv[2, 0].item() == pytest.approx((1 - mean) / (std + 1e-6), rel=1e-5)
    assert adv[0, 0].item() == pytest.approx((0 - mean) / (std + 1e-6), rel=1e-5)
    assert torch.all(adv[4:].abs().sum(-1) > 0)


def test_truncated_sample_shorter_than_the_width_fails_the_step():
    data = agent_loop_output([3, 5], [False, True])  # cut at 5 < 8: am_grpo would read it as complete
    with pytest.raises(TruncationMismatch, match="max_model_len"):
        check_truncation(data)
