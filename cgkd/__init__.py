"""cgkd: coarse-grained neural-network force fields by knowledge distillation."""

# torch is imported before any cgkd module can import openmm: OpenMM loads its plugins on
# import, and the openmmtorch plugin needs the libraries that torch loads.
import torch  # noqa: F401

__version__ = "0.1.0"

# The config schema (cgkd.config) is in Hydra's ConfigStore whenever cgkd is used.
import cgkd.config  # noqa: F401
