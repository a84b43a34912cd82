"""The run report and result line name the system from its input, say "n/a" for what is
unknown, and show the first shell, the settings taken from it and the observables skipped."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from cgkd.observables import Trajectory
from cgkd.observables.suite import evaluate
from cgkd.report import REFERENCE, analysis_facts, render_report, result_line, system_name

CONF = Path(__file__).resolve().parent.parent / "conf"


def config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def fcc_crystal() -> Trajectory:
    """20 frames, 1 ps apart, of a jittered fcc crystal (a = 0.5 nm, 4^3 cells, 256 beads):
    12 neighbours at 0.354 nm, then 6 at 0.5 nm."""
    rng = np.random.default_rng(3)
    basis = [(0.0, 0.0, 0.0), (0.5, 0.5, 0.0), (0.5, 0.0, 0.5), (0.0, 0.5, 0.5)]
    cells = np.array(list(itertools.product(range(4), repeat=3)), dtype=float)
    sites = (cells[:, None] + np.asarray(basis)[None]).reshape(-1, 3) * 0.5
    positions = sites + rng.normal(0.0, 0.01, (20, len(sites), 3))
    return Trajectory(positions, np.tile(np.eye(3) * 2.0, (20, 1, 1)), dt=1.0)


def test_the_system_is_named_from_its_input():
    assert system_name(config()) == "water"
    assert system_name(config("system=reline")) == "reline"
    imported = ("input.topology=/data/ar.pdb", "input.trajectory=/data/argon_nvt.trr")
    assert system_name(config(*imported)) == "argon_nvt"
    assert system_name(config(*imported, "input.name=liquid argon")) == "liquid argon"


def test_report_of_imported_data_names_it_and_says_what_is_unknown_or_skipped():
    cfg = config("input.topology=ar.pdb", "input.trajectory=argon.trr")
    settings = OmegaConf.to_container(cfg.analysis, resolve=True)
    settings["rdf"].update(r_max=0.95, n_bins=95)
    analysis = evaluate(settings, fcc_crystal())
    assert set(analysis.skipped) == {"msd"}  # 4-frame blocks: lags 0 and 1 ps only
    metrics = {
        "system": {"name": system_name(cfg), "n_beads": 256, "n_frames": 20},
        "analysis": analysis_facts({REFERENCE: analysis}),
        "observables": {},
        "scalars": {},
        "stability": {},
        "forces": {"student": {"force_rmse_mapped": 1.5}, "ensemble_mean_force_std": 2.0},
        "timings": {
            "aa_ns_per_day": None,  # imported: not simulated here
            "cg_ns_per_day": {},
            "cg_ms_per_step": {},
            "ms_per_force_evaluation": {"student": 0.25},
        },
    }
    report = render_report(cfg, metrics, {})
    assert report.startswith("# cgkd report: argon\n")
    assert "| AA MD | n/a |" in report and "None" not in report
    r1 = analysis.shell["radius"]
    assert 0.36 < r1 < 0.49  # between the fcc shells at 0.354 and 0.5 nm
    assert f"r1 = {r1:.4g} nm" in report and "with 12 beads within it" in report
    assert f"| analysis.adf.cutoff | {r1:.4g} nm |" in report
    assert "| analysis.tetrahedral.enabled | off (1 bead species, 12 beads within r1" in report
    assert (
        f"| msd | {REFERENCE} | msd: fit range" in report and "(settings: analysis.msd) |" in report
    )

    line = result_line(cfg, metrics, keys={})
    assert line["system"] == "argon" and line["first_shell"] == r1
    assert line["auto"]["coordination.cutoff"] == r1
    assert "fit range" in line["skipped"]["msd"][REFERENCE]
    json.dumps(line)
