"""The configuration of a run from Python, composed as ``cgkd <command> [overrides]`` would."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig

#: The config files (``conf/`` next to the package).
CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The typed configuration with Hydra ``overrides`` (e.g. ``["experiment=quick"]``)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))
