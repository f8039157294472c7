import pytest
from omegaconf import OmegaConf

from am_rl.config import ConfigError, validate_config
from am_rl.config.load import compose

STAGE1 = compose("stage1_32b")  # B=256, n=16: the recipe's values


def base(**overrides):
    cfg = STAGE1.copy()
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def test_recipe_values_pass():
    assert validate_config(base()) is not None


@pytest.mark.parametrize(
    "key", ["algorithm.use_kl_in_reward", "actor_rollout_ref.actor.use_kl_loss"]
)
def test_am_grpo_with_kl_fails_naming_the_key(key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(base(**{key: True}))


def test_every_violation_is_listed_at_once():
    cfg = base(**{"algorithm.use_kl_in_reward": True, "actor_rollout_ref.actor.use_kl_loss": True,
                  "actor_rollout_ref.actor.ppo_epochs": 2})
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    message = str(info.value)
    for key in ("use_kl_in_reward", "use_kl_loss", "ppo_epochs=2"):
        assert key in message


def test_kl_is_allowed_for_estimators_that_use_it():
    validate_config(base(**{"algorithm.adv_estimator": "gae", "algorithm.use_kl_in_reward": True}))


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("actor_rollout_ref.actor.ppo_mini_batch_size", 64, "ppo_mini_batch_size=64"),
        ("actor_rollout_ref.actor.ppo_epochs", 2, "ppo_epochs=2"),
        ("actor_rollout_ref.rollout.n", 1, "rollout.n=1"),
    ],
)
def test_off_policy_or_degenerate_settings_fail(key, value, needle):
    with pytest.raises(ConfigError, match=needle):
        validate_config(base(**{key: value}))


def test_strict_on_policy_can_be_switched_off_explicitly():
    cfg = base(**{"actor_rollout_ref.actor.ppo_epochs": 2})
    OmegaConf.update(cfg, "am_rl.strict_on_policy", False, force_add=True)
    validate_config(cfg)
