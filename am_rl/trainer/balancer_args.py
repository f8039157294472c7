"""The command-line flags of a standalone balancer that runs with a recipe's ``am_rl.balancer`` settings:
``python -m am_rl.trainer.balancer_args --config-name RECIPE [overrides...]`` prints them, one per line, after one
line with the number of balancer processes (``am_rl.balancer.processes``).

recipes/slurm/train.sbatch starts that many balancers (shards, each with ``--shard I/K``) as job steps and passes
their URLs to the trainer; these flags make them route as the ones the trainer would have started itself
(``am_rl.trainer.services``), from the same ``balancer_config``. The API key is not among them: a flag shows in
``ps``; the balancer reads it from its environment.
"""

from __future__ import annotations

import argparse
import json

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from am_rl.config.load import compose
from am_rl.config.schema import balancer_config
from am_rl.config.validate import ConfigError


def balancer_flags(section) -> list[str]:
    """Flags of ``python -m load_balancer`` for the settings that ``balancer_config(section)`` gives."""
    cfg = balancer_config(section)
    flags = ["--policy", cfg.policy, "--migrate" if cfg.migrate else "--no-migrate"]
    for key, value in cfg.policy_options.items():
        flags += ["--policy-option", f"{key}={json.dumps(value)}"]
    return flags


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m am_rl.trainer.balancer_args", description=__doc__.split("\n")[0])
    p.add_argument("--config-name", required=True, help="the recipe, as for am_rl.main_grpo")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as for am_rl.main_grpo")
    args = p.parse_args(argv)
    try:
        section = compose(args.config_name, args.overrides).am_rl.balancer
        flags = balancer_flags(section)
    except (ConfigError, HydraException, OmegaConfBaseException) as e:
        p.exit(2, f"{p.prog}: recipe {args.config_name}: {e}\n")
    print("\n".join([str(section.processes), *flags]))


if __name__ == "__main__":
    main()
