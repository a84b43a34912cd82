"""The configuration's schema: typed sections made from the settings classes, registered in
Hydra's ConfigStore when cgkd is imported, and the conversion back to settings objects.

For example, with ``cfg`` composed from ``conf/config.yaml``::

    to_settings(cfg.teacher.train, seed=seed)   # a TrainSettings
    to_settings(cfg.simulate, seed=cfg.seed)    # an MDSettings
    to_settings(cfg.system, seed=cfg.data_seed) # a WaterBoxSpec or RelineSpec
"""

from cgkd.config.compose import CONFIG_DIR, compose
from cgkd.config.derive import derive, to_settings, valid_keys
from cgkd.config.schema import SCHEMA_NAME, SYSTEM_SCHEMAS, Config, register

__all__ = [
    "CONFIG_DIR",
    "SCHEMA_NAME",
    "SYSTEM_SCHEMAS",
    "Config",
    "compose",
    "derive",
    "register",
    "to_settings",
    "valid_keys",
]

register()
