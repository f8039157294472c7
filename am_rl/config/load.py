"""Compose a recipe (Hydra), apply the typed schema to ``am_rl:``, and run the load-time checks."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from am_rl.config.schema import AMRLSection
from am_rl.config.validate import ConfigError, validate_config

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"


def finalize_config(cfg: DictConfig) -> DictConfig:
    """Type-check the ``am_rl`` section against the schema, then validate the whole config. Returns a new config."""
    cfg = cfg.copy()
    try:
        section = OmegaConf.merge(OmegaConf.structured(AMRLSection), cfg.get("am_rl") or {})
    except OmegaConfBaseException as e:
        # OmegaConf names the key relative to the section and appends its own type dump: name it as a user writes it.
        key = f"am_rl.{e.full_key}" if getattr(e, "full_key", None) else "am_rl"
        raise ConfigError(f"invalid am_rl section: {key}: {str(e).splitlines()[0]}") from None
    OmegaConf.set_struct(cfg, False)
    cfg.am_rl = section
    return validate_config(cfg)


def compose(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The config ``python -m am_rl.main_grpo --config-name NAME overrides...`` would run with."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(RECIPES_DIR), version_base="1.3"):
        return finalize_config(hydra_compose(config_name=config_name, overrides=list(overrides)))
