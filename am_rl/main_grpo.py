"""The trainer entry point: ``python -m am_rl.main_grpo --config-name <recipe> key=value ...``.

Every recipe runs verl's Ray trainer through ``am_rl.trainer`` (DESIGN.md §5); a CPU demo and a 64-GPU run differ
only in config (``recipes/platform/cpu.yaml``, ``rollout.name``, the engine count).
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from am_rl.config.load import RECIPES_DIR, finalize_config


@hydra.main(config_path=str(RECIPES_DIR), config_name=None, version_base="1.3")
def main(cfg: DictConfig) -> None:
    # Hydra has configured logging; keep per-request HTTP lines out of the one-line-per-step output.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from am_rl.trainer.run import run

    run(finalize_config(cfg))


if __name__ == "__main__":
    main()
