"""Built-in all-atom reference systems, by the ``kind`` named in ``conf/system/*.yaml``."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from cgkd.systems.base import AASpec
from cgkd.systems.reline import RelineSpec
from cgkd.systems.water import WaterBoxSpec

#: System kinds and their spec classes.
SYSTEM_KINDS: dict[str, type[AASpec]] = {"water": WaterBoxSpec, "reline": RelineSpec}


def spec_from_config(system: dict[str, Any], *, seed: int) -> AASpec:
    """The spec of a ``conf/system`` section: ``kind`` picks the class, ``name`` is a label."""
    values = {k: v for k, v in system.items() if k not in ("kind", "name")}
    kind = system.get("kind")
    if kind not in SYSTEM_KINDS:
        raise ValueError(f"system.kind {kind!r} is unknown; use one of {sorted(SYSTEM_KINDS)}")
    spec_class = SYSTEM_KINDS[kind]
    known = {f.name for f in fields(spec_class)} - {"seed"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"system.{unknown[0]} is not a setting of a {kind} system; valid: {sorted(known)}"
        )
    return spec_class(**values, seed=seed)
