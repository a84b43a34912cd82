"""cgkd: coarse-grained neural-network force fields by knowledge distillation."""

__version__ = "0.1.0"
