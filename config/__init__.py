"""Sluice configuration: pydantic models and the YAML loader.

A YAML path (or None for the embedded default) flows into `load_config`, a frozen
`SluiceConfig` flows out; problems come back as `ConfigError` naming file lines.
"""

from config.loader import ConfigError, check_config, load_config
from config.models import SluiceConfig

__all__ = ["ConfigError", "SluiceConfig", "check_config", "load_config"]
