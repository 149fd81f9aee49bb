"""Configs made from the shipped example, for tests of validation."""

from __future__ import annotations

from pathlib import Path

from bridge import resources
from bridge.config import Config
from demo.bridge_process import edit_config


def example_config_with(directory: Path, values: dict[str, object]) -> Config:
    """The example config with ``values`` (dotted keys) set, loaded."""
    path = directory / "config.yaml"
    path.write_text(resources.example_config())
    edit_config(path, values)
    config = Config(str(path))
    config.load()
    return config
