"""Configuration: the typed run schema, validation of ``_target_`` nodes, and instantiation helpers.

The Hydra config tree itself lives in ``experiments/`` at the repository root (see README).
"""

from fitdiff.config.errors import ConfigError
from fitdiff.config.schema import EvaluateConfig, TrainConfig, register_configs
from fitdiff.config.validate import validate_config

__all__ = ["ConfigError", "TrainConfig", "EvaluateConfig", "register_configs", "validate_config"]
