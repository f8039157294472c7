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


@pytest.mark.parametrize("value", ["0", "-1", "abc", "2.5", "true"])
def test_balancer_processes_below_one_or_not_an_int_fails_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"am_rl\.balancer\.processes"):
        compose("demo_cpu", [f"am_rl.balancer.processes={value}"])


def test_balancer_processes_with_an_external_balancer_url_must_count_its_urls():
    """With a url the trainer starts no balancer: processes K > 1 must be the number of shards the url lists."""
    with pytest.raises(ConfigError, match=r"processes=2 with am_rl\.balancer\.url listing 1 balancer"):
        compose("demo_cpu", ["am_rl.balancer.processes=2", "am_rl.balancer.url=http://lb:8100"])
    # Running shards are named in the url (quoted: Hydra reads an unquoted comma as a sweep).
    cfg = compose("demo_cpu", ["am_rl.balancer.url='http://lb1:8100,http://lb2:8100'"])
    assert cfg.am_rl.balancer.url == "http://lb1:8100,http://lb2:8100" and cfg.am_rl.balancer.processes == 1
    cfg = compose("demo_cpu", ["am_rl.balancer.processes=2", "am_rl.balancer.url='http://lb1:8100,http://lb2:8100'"])
    assert cfg.am_rl.balancer.processes == 2  # what recipes/slurm passes after starting the recipe's 2 shards
    with pytest.raises(ConfigError, match=r"processes=3 with am_rl\.balancer\.url listing 2 balancer"):
        compose("demo_cpu", ["am_rl.balancer.processes=3", "am_rl.balancer.url='http://lb1:8100,http://lb2:8100'"])
    assert compose("demo_cpu", ["am_rl.balancer.processes=2"]).am_rl.balancer.processes == 2
