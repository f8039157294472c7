"""Config loading and load-time validation (Hydra/OmegaConf, verl key names)."""

from am_rl.config.validate import ConfigError, validate_config

__all__ = ["ConfigError", "validate_config"]
