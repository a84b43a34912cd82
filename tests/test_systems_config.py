"""Every conf/system/*.yaml composes with Hydra into a valid system spec; bad ones are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from cgkd.systems import SYSTEM_KINDS, spec_from_config
from cgkd.systems.reline import RelineSpec
from cgkd.systems.water import WaterBoxSpec

CONF = Path(__file__).resolve().parent.parent / "conf"
SYSTEMS = sorted(path.stem for path in (CONF / "system").glob("*.yaml"))


def system_section(name: str, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"system={name}", *overrides])
    return dict(cfg.system)


@pytest.mark.parametrize("name", SYSTEMS)
def test_every_system_config_builds_a_spec(name: str) -> None:
    section = system_section(name)
    spec = spec_from_config(section, seed=5)
    assert isinstance(spec, SYSTEM_KINDS[section["kind"]])
    assert spec.seed == 5 and section["name"] == name
    assert spec.production_steps >= spec.save_interval


def test_system_configs_say_what_they_are() -> None:
    assert set(SYSTEMS) >= {"water", "water_tip4pew", "water_opc", "water_amoeba", "reline"}
    assert spec_from_config(system_section("water_opc"), seed=0).water_model == "opc"
    amoeba = spec_from_config(system_section("water_amoeba"), seed=0)
    assert (amoeba.water_model, amoeba.polarization, amoeba.timestep) == (
        "amoeba2018",
        "mutual",
        0.0005,
    )
    assert amoeba.build().system.getNumConstraints() == 0  # the box fits the 0.6 nm cutoff
    assert spec_from_config(system_section("water_tip4pew"), seed=0).npt_equilibration > 0
    reline = spec_from_config(system_section("reline"), seed=0)
    assert isinstance(reline, RelineSpec) and reline.temperature == 328.0
    small = system_section("water", "system.n_molecules=50", "system.nonbonded_cutoff=0.5")
    assert spec_from_config(small, seed=0) == WaterBoxSpec(
        n_molecules=50, nonbonded_cutoff=0.5, seed=0
    )


def test_bad_system_sections_are_one_line_errors() -> None:
    section = system_section("water")
    with pytest.raises(ValueError, match=r"system.kind 'ice' is unknown; use one of"):
        spec_from_config({**section, "kind": "ice"}, seed=0)
    with pytest.raises(ValueError, match=r"system.n_choline_chloride is not a setting of a water"):
        spec_from_config({**section, "n_choline_chloride": 3}, seed=0)
    with pytest.raises(ValueError, match=r"WaterBoxSpec.production of 0.1 ps is shorter"):
        spec_from_config({**section, "production": 0.1}, seed=0)
