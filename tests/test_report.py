"""The analysis computed from stage records and rendered: the report and result line name the
system from its input, say "n/a" for what is unknown, show the first shell, the settings taken
from it and the observables skipped, number teachers from 0, and report, compare and
summarize label every metric alike."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from cgkd.analysis import AnalysisSettings, Computed, StageRecords, compute, named
from cgkd.comparison import compare_runs
from cgkd.io.frames import Frames
from cgkd.report import run_facts, system_name, write_run
from cgkd.results import METRICS, REFERENCE, ResultLine, RunResult, measured
from cgkd.summary import markdown_table, summarize

CONF = Path(__file__).resolve().parent.parent / "conf"


def config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def fcc_crystal(seed: int = 3, jitter: float = 0.01) -> Frames:
    """20 frames, 1 ps apart, of a jittered fcc crystal (a = 0.5 nm, 4^3 cells, 256 argon
    beads): 12 neighbours at 0.354 nm, then 6 at 0.5 nm."""
    rng = np.random.default_rng(seed)
    basis = [(0.0, 0.0, 0.0), (0.5, 0.5, 0.0), (0.5, 0.0, 0.5), (0.0, 0.5, 0.5)]
    cells = np.array(list(itertools.product(range(4), repeat=3)), dtype=float)
    sites = (cells[:, None] + np.asarray(basis)[None]).reshape(-1, 3) * 0.5
    positions = sites + rng.normal(0.0, jitter, (20, len(sites), 3))
    return Frames(
        positions=positions,
        forces=np.zeros_like(positions),
        boxes=np.tile(np.eye(3) * 2.0, (20, 1, 1)),
        times=np.arange(20.0),
        masses=np.full(len(sites), 39.948),
        types=np.zeros(len(sites), dtype=np.int64),
        type_names=["AR"],
    )


def save_dcd(frames: Frames, directory: Path) -> dict[str, str]:
    """The frames as a CG MD replica saves them: a DCD trajectory and a PDB topology."""
    import mdtraj

    topology = mdtraj.Topology()
    residue = topology.add_residue("AR", topology.add_chain())
    for _ in range(frames.n_particles):
        topology.add_atom("AR", mdtraj.element.argon, residue)
    lengths = np.diagonal(frames.boxes, axis1=1, axis2=2)
    md = mdtraj.Trajectory(
        frames.positions,
        topology,
        unitcell_lengths=lengths,
        unitcell_angles=np.full_like(lengths, 90.0),
    )
    md.save_dcd(str(directory / "replica_0.dcd"))
    md[0].save_pdb(str(directory / "replica_0.pdb"))
    return {
        "trajectory": str(directory / "replica_0.dcd"),
        "topology": str(directory / "replica_0.pdb"),
    }


def history(loss: float) -> list[dict[str, float]]:
    return [
        {"epoch": k, "train_loss": loss / (k + 1), "val_loss": loss, "lr": 1e-3} for k in range(3)
    ]


def records(directory: Path) -> StageRecords:
    """Stage records as the stages return them: two teachers, a student simulated from a
    more jittered crystal (one replica that saved frames, one that went unstable at once)."""
    saved = save_dcd(fcc_crystal(seed=4, jitter=0.02), directory)
    replicas = [
        {
            **saved,
            "n_frames": 20,
            "seed": 0,
            "stable": True,
            "steps_completed": 200,
            "message": None,
            "platform": "CPU",
            "threads": 2,
        },
        {"n_frames": 0, "seed": 1, "stable": False, "steps_completed": 0, "message": "NaN"},
    ]
    members = [
        {
            "member": k,
            "seed": 1000 * (k + 1),
            "model": f"t{k}.pt",
            "history": history(2.0),
            "force_rmse_mapped": 150.0 + k,
        }
        for k in range(2)
    ]
    return StageRecords(
        aa={"key": "aa", "ns_per_day": None},  # imported: not simulated here
        cg={"dataset": str(directory / "cg.h5md"), "n_beads": 256, "n_frames": 20},
        teachers={
            "members": members,
            "ensemble": {"force_rmse_mapped": 149.0},
            "dir": str(directory),
        },
        models={
            "student": {
                "model": "student.ts",
                "key": "s0",
                "history": history(1.0),
                "force_rmse_mapped": 1.5,
                "force_rmse_teacher": 0.5,
                "best_epoch": 2,
            },
            "baseline": {
                "model": "baseline.ts",
                "key": "b0",
                "history": history(1.2),
                "force_rmse_mapped": 1.6,
            },
            "targets": {"mean_force_std": 2.0},
        },
        runs={
            "student": {
                "replicas": replicas,
                "stable_fraction": 0.5,
                "ns_per_day": 100.0,
                "ms_per_step": 0.8,
                "model_key": "s0",
            }
        },
    )


@pytest.fixture(scope="module")
def computed(tmp_path_factory):
    """The analysis of :func:`records` for imported argon, rendered into a directory."""
    directory = tmp_path_factory.mktemp("run")
    cfg = config("input.topology=ar.pdb", "input.trajectory=argon.trr")
    observables = OmegaConf.to_container(cfg.analysis, resolve=True)
    observables["rdf"].update(r_max=0.95, n_bins=95)
    settings = AnalysisSettings(observables, reference_stride=1, frame_interval=1.0)
    ms = {"student": 0.25, "teacher": 0.5, "ensemble": 1.0}
    measured = compute(records(directory), fcc_crystal(), settings, ms)
    result = Computed(named(measured.result, run_facts(cfg)), measured.curves, measured.histories)
    write_run(result, directory)
    return result, directory


def test_the_system_is_named_from_its_input():
    assert system_name(config()) == "water"
    assert system_name(config("system=reline")) == "reline"
    imported = ("input.topology=/data/ar.pdb", "input.trajectory=/data/argon_nvt.trr")
    assert system_name(config(*imported)) == "argon_nvt"
    assert system_name(config(*imported, "input.name=liquid argon")) == "liquid argon"


def test_report_of_imported_data_names_it_and_says_what_is_unknown_or_skipped(computed):
    result, directory = computed
    report = (directory / "report.md").read_text()
    assert report.startswith("# cgkd report: argon\n")
    assert "| AA MD | n/a |" in report and "None" not in report
    assert "| CG MD, student (CPU, 2 threads) | 100 ns/day (0.8 ms/step) |" in report
    r1 = result.result.analysis.first_shell["radius"]
    assert 0.36 < r1 < 0.49  # between the fcc shells at 0.354 and 0.5 nm
    assert f"r1 = {r1:.4g} nm" in report and "with 12 beads within it" in report
    assert f"| analysis.adf.cutoff | {r1:.4g} nm |" in report
    assert "| analysis.tetrahedral.enabled | off (1 bead species, 12 beads within r1" in report
    assert f"| msd | {REFERENCE} | msd: fit range" in report
    assert "(settings: analysis.msd) |" in report
    assert "| student | 1 | 1 | False | 0 | NaN |" in report  # the unstable replica
    # Teachers are numbered from 0, as their files (teacher_0.ts) and teacher.member are.
    assert "| teacher 0 | 150 | |" in report and "| teacher 1 | 151 | |" in report
    assert "teacher 2" not in report
    line = json.loads((directory / "result.json").read_text())
    assert line["system"] == "argon" and line["first_shell"] == r1
    assert line["auto"]["coordination.cutoff"] == r1
    assert "fit range" in line["skipped"]["msd"][REFERENCE]


def test_the_computed_record_is_what_the_files_hold(computed):
    result, directory = computed
    record = RunResult.from_json(json.loads((directory / "metrics.json").read_text()))
    assert record == result.result
    line = ResultLine.from_json(json.loads((directory / "result.json").read_text()))
    assert line == record.line()
    student = line.models["student"]
    # Independently: the deviations, stability and speed the record's sections hold.
    assert student.rdf_mad == record.observables["rdf"]["student"]["MAD"] > 0
    assert student.adf_jsd == record.observables["adf"]["student"]["JSD"] > 0
    assert (student.key, student.stable_fraction, student.force_rmse_teacher) == ("s0", 0.5, 0.5)
    assert student.speedup_vs_ensemble == 4.0 and student.speedup_vs_teacher is None
    assert [t.facts["member"] for t in record.forces.teachers] == [0, 1]
    assert record.forces.models["teacher"].force_rmse_mapped == 150.0  # member 0
    assert set(record.forces.models) == {"teacher", "ensemble", "student", "baseline"}
    assert "model" not in record.forces.models["student"].facts
    for name in ("training.png", "structure.png", "observables.json"):
        assert (directory / name).is_file(), name


def test_a_run_that_trained_nothing_has_no_training_figure(computed, tmp_path):
    """The classical model simulated alone: no loss curves to draw."""
    result, directory = computed
    assert "![training](training.png)" in (directory / "report.md").read_text()
    assert not (directory / "refinement.png").exists()
    write_run(dataclasses.replace(result, histories={}), tmp_path)
    assert (tmp_path / "report.md").is_file() and not (tmp_path / "training.png").exists()
    assert "training.png" not in (tmp_path / "report.md").read_text()


def test_a_refined_model_has_its_rounds_drawn_not_its_loss_curve(computed, tmp_path):
    """The refined model's history is per round: drawn as refinement.png, not as a loss curve
    (whose per-epoch keys it lacks), also when it is the only model simulated."""
    result, _ = computed
    rounds = [
        {"round": r, "energy_gap": 50.0 / (r + 1), "gradient_norm": 1.0, "seconds": r}
        for r in range(5)
    ]
    write_run(dataclasses.replace(result, histories={"refined": rounds}), tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert (tmp_path / "refinement.png").is_file() and not (tmp_path / "training.png").exists()
    assert "![refinement](refinement.png)" in report and "training.png" not in report


def test_report_compare_and_summarize_label_every_metric_alike(computed, tmp_path):
    result, directory = computed
    shown = measured(result.result.line().models.values())
    assert {m.name for m in shown} >= {"rdf_mad", "adf_jsd", "force_rmse_mapped", "stable_fraction"}
    report = (directory / "report.md").read_text()
    comparison = compare_runs([directory], tmp_path / "cmp").read_text()
    summary = "\n".join(markdown_table(summarize([directory])))

    def headers(markdown: str, first: str) -> list[str]:
        row = next(line for line in markdown.splitlines() if line.startswith(f"| {first} |"))
        return [cell.strip() for cell in row.strip("|").split("|")]

    expected = [m.header for m in shown]
    assert headers(report, "model")[1:] == expected
    assert headers(comparison, "run")[2:] == expected
    assert headers(summary, "model")[2:] == expected
    rows = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    line = json.loads((directory / "result.json").read_text())
    assert rows[0]["model"] == "student"
    for m in METRICS:  # the same key and value in comparison.json as in result.json
        assert rows[0].get(m.name) == line["models"]["student"].get(m.name), m.name


def test_a_run_without_teachers_says_so(computed):
    """A run of the baseline alone trains no teacher: its report claims none and no spread."""
    from cgkd.report import render_report
    from cgkd.results import Forces

    result = computed[0].result
    forces = Forces(models={"baseline": result.forces.models["baseline"]})
    report = render_report(dataclasses.replace(result, forces=forces), {})
    assert "; no teacher; single schedule" in report
    assert "teachers" not in report.split("## Forces")[1].split("##")[0]
    assert "; 4 teachers;" in render_report(result, {})


def test_a_model_whose_bonds_drift_is_named_in_the_report(computed):
    """A model with more than BOND_DRIFT of its bond lengths outside AA's range is named under
    the stability table although its runs stayed finite; one that keeps its bonds is not."""
    import dataclasses

    from cgkd.report import BOND_DRIFT, render_report

    result = computed[0].result
    (model,) = result.stability

    def stability_section(outside: float) -> str:
        observables = {**result.observables, "bonds": {model: {"outside AA range": outside}}}
        report = render_report(dataclasses.replace(result, observables=observables), {})
        return report.split("## Stability of the CG runs")[1].split("##")[0]

    assert f"{model}: {3 * BOND_DRIFT:.1%} of its bond lengths lie outside" in (
        stability_section(3 * BOND_DRIFT)
    )
    assert "lie outside" not in stability_section(BOND_DRIFT / 2)
