from pathlib import Path

import pytest

from am_rl.config import ConfigError
from am_rl.config.load import RECIPES_DIR, compose

# The RL recipes; the SFT ones (sft_*, verl's SFT trainer) are tested in tests/am_rl/sft.
RECIPES = sorted(p.stem for p in Path(RECIPES_DIR).glob("*.yaml") if not p.stem.startswith("sft_"))


def test_there_are_recipes():
    assert "demo_cpu" in RECIPES


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_composes_and_validates(name):
    cfg = compose(name)
    assert cfg.algorithm.adv_estimator == "am_grpo"
    assert cfg.actor_rollout_ref.actor.ppo_mini_batch_size == cfg.data.train_batch_size


def test_override_that_adds_kl_fails_at_load():
    with pytest.raises(ConfigError, match=r"actor_rollout_ref\.actor\.use_kl_loss"):
        compose("demo_cpu", ["actor_rollout_ref.actor.use_kl_loss=true"])


def test_unknown_am_rl_key_fails_at_load():
    with pytest.raises(ConfigError, match="vllm_servers"):
        compose("demo_cpu", ["+am_rl.vllm_servers=3"])


def test_wrong_type_in_am_rl_section_fails_at_load():
    with pytest.raises(ConfigError, match="num_servers"):
        compose("demo_cpu", ["am_rl.vllm.num_servers=many"])


def test_migration_is_off_where_engines_share_cores_and_on_for_gpu_recipes():
    from am_rl.config.schema import balancer_config

    demo = balancer_config(compose("demo_cpu").am_rl.balancer, port=0, instances=["http://127.0.0.1:1"])
    assert demo.migrate is False and demo.policy == "makespan" and demo.port == 0
    gpu = balancer_config(compose("stage1_32b").am_rl.balancer, port=8100)
    assert gpu.migrate is True
