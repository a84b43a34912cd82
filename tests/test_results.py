"""The result schema: every metric defined once, records that survive a JSON round trip, and
files of older runs that still read."""

from __future__ import annotations

import dataclasses
import json

import pytest

from cgkd.results import (
    METRICS,
    REFERENCE,
    AnalysisFacts,
    Forces,
    HeldOut,
    ModelResult,
    Replica,
    ResultLine,
    RunFacts,
    RunResult,
    Stability,
    SystemFacts,
    Timings,
    measured,
    metric,
    ran_on_words,
)
from cgkd.summary import summarize


def two_stage_run() -> RunResult:
    """A two-stage run of an ensemble teacher with every section filled."""
    member = {"member": 1, "seed": 2000, "model": "cache/t1/teacher.pt", "best_epoch": 3}
    return RunResult(
        run=RunFacts(
            system="water",
            seed=2,
            data_seed=0,
            loss={"w_F": 0.0, "w_f": 1.0, "w_E": 0.1, "w_eps": 1.0, "n_teachers": None},
            n_members=2,
            schedule="two_stage",
            screening="fps",
        ),
        system=SystemFacts("water", 120, 80),
        analysis=AnalysisFacts(
            first_shell={"radius": 0.37, "coordination": 6.6, "onset": 0.24, "pairs": {}},
            n_species=1,
            auto={"adf.cutoff": 0.37, "tetrahedral.enabled": True},
            skipped={"msd": {REFERENCE: "too few frames"}},
        ),
        observables={
            "rdf": {"student": {"MAD": 0.1, "rel. deviation": 0.2}},
            "adf": {"student": {"JSD": 0.007}, "baseline": {"JSD": 0.006}},
            "msd": {"baseline": {"D ratio": 1.1, "D ratio err": 0.1, "D rel. error": 0.1}},
            "tetrahedral": {"student": {"JSD": 0.011, "mean diff.": -0.046}},
        },
        scalars={"D": {REFERENCE: {"value": 0.2, "error": 0.01, "unit": "nm²/ps"}}},
        forces=Forces(
            models={
                "teacher": HeldOut(force_rmse_mapped=150.0, facts={"member": 0, "seed": 1000}),
                "ensemble": HeldOut(force_rmse_mapped=149.0, mapped_force_rms=225.0),
                "student": HeldOut(
                    force_rmse_mapped=157.0,
                    force_rmse_teacher=26.0,
                    force_rmse_soft=30.0,
                    start_force_rmse_mapped=160.0,
                    start_force_rmse_soft=20.0,
                    n_hard=8,
                    n_soft_mixed=4,
                    facts={"best_epoch": 2, "seconds": 0.6},
                ),
                "baseline": HeldOut(force_rmse_mapped=158.0, force_rmse_soft=40.0),
            },
            teachers=[HeldOut(force_rmse_mapped=150.0), HeldOut(153.0, facts=member)],
            ensemble_mean_force_std=15.3,
        ),
        timings=Timings(
            aa_ns_per_day=150.0,
            cg_ns_per_day={"student": 900.0, "baseline": 950.0},
            cg_ms_per_step={"student": 0.5, "baseline": 0.45},
            ms_per_force_evaluation={"student": 0.25, "baseline": 0.2, "ensemble": 1.0},
            ran_on={"aa": "CUDA", "student": "CPU, 1 thread"},
        ),
        stability={
            "student": Stability(1.0, [Replica(2, True, 2000, None)]),
            "baseline": Stability(0.5, [Replica(2, True, 2000), Replica(3, False, 10, "NaN")]),
        },
        keys={"student": "abc", "baseline": "def"},
        artifacts={"aa": {"key": "g"}, "cg": "cache/map/cg.h5md"},
    )


def test_every_metric_is_defined_once_with_one_label():
    names = [m.name for m in METRICS]
    headers = [m.header for m in METRICS]
    assert len(set(names)) == len(names) and len(set(headers)) == len(headers)
    fields = {f.name for f in dataclasses.fields(ModelResult)} - {"key"}
    assert set(names) == fields  # a ModelResult field per metric, nothing else
    assert metric("adf_jsd").header == "ADF JSD (bits)" and metric("rdf_mad").header == "RDF MAD"
    assert metric("force_rmse_mapped").format(157.1194) == "157.12"
    with pytest.raises(KeyError, match="no metric 'rdf'; known: force_rmse_mapped"):
        metric("rdf")


@pytest.mark.parametrize(
    ("record", "words"),
    [
        ({"platform": "CPU", "threads": 2}, "CPU, 2 threads"),
        ({"platform": "CPU", "threads": 1}, "CPU, 1 thread"),
        ({"platform": "CUDA", "threads": None}, "CUDA"),
        ({"ns_per_day": None}, None),  # imported data, or a cache from before the field
    ],
)
def test_where_a_stage_ran_in_words(record, words):
    assert ran_on_words(record) == words


def test_run_record_and_result_line_survive_a_json_round_trip():
    result = two_stage_run()
    text = json.dumps(result.to_json())
    again = RunResult.from_json(json.loads(text))
    assert again == result
    assert json.dumps(again.to_json()) == text
    line = result.line()
    assert ResultLine.from_json(json.loads(json.dumps(line.to_json()))) == line


def test_the_result_line_is_read_from_the_record_sections():
    line = two_stage_run().line().to_json()
    student, baseline = line["models"]["student"], line["models"]["baseline"]
    assert student == {
        "key": "abc",
        "force_rmse_mapped": 157.0,
        "force_rmse_teacher": 26.0,
        "force_rmse_soft": 30.0,
        "rdf_mad": 0.1,
        "adf_jsd": 0.007,
        "tetrahedral_jsd": 0.011,
        "tetrahedral_shift": -0.046,
        "stable_fraction": 1.0,
        "ms_per_force_evaluation": 0.25,
        "speedup_vs_ensemble": 4.0,
    }
    assert baseline["d_ratio"] == 1.1 and baseline["speedup_vs_ensemble"] == 5.0
    assert "rdf_mad" not in baseline  # not measured: left out, not null
    assert (line["screening"], line["n_hard"], line["n_soft_mixed"]) == ("fps", 8, 4)
    assert line["soft_only_force_rmse_mapped"] == 160.0
    assert line["soft_only_force_rmse_soft"] == 20.0
    assert line["first_shell"] == 0.37 and line["skipped"] == {"msd": {REFERENCE: "too few frames"}}
    assert "teacher_path" not in line  # the optional facts only when set


def test_an_external_teacher_is_the_speedup_reference_and_missing_errors_are_none():
    result = two_stage_run()
    result.timings.ms_per_force_evaluation = {"student": 0.25, "teacher": 0.5}
    result.stability["teacher"] = Stability(1.0)
    del result.forces.models["teacher"], result.forces.models["ensemble"]
    entry = result.model_result("student")
    assert entry.speedup_vs_teacher == 2.0 and entry.speedup_vs_ensemble is None
    teacher = result.model_result("teacher")  # simulated, but no held-out errors recorded
    assert teacher.force_rmse_mapped is None and teacher.speedup_vs_teacher == 1.0
    assert [m.name for m in measured([teacher])] == [
        "stable_fraction",
        "ms_per_force_evaluation",
        "speedup_vs_teacher",
    ]


def test_files_of_older_runs_still_read(tmp_path):
    """A metrics.json without run facts and keys, and result.json lines of the first sweeps
    (no teacher, schedule or analysis facts), which cgkd summarize still groups."""
    old = two_stage_run().to_json()
    del old["run"], old["keys"]
    record = RunResult.from_json(old)
    assert record.run is None and record.model_result("student").key is None
    with pytest.raises(ValueError, match="no run facts"):
        record.line()
    loss = {"w_F": 0.0, "w_f": 1.0, "w_E": 0.0, "w_eps": 0.0}
    for job, (seed, rmse) in enumerate([(0, 150.0), (1, 160.0)]):
        line = {
            "system": "water",
            "seed": seed,
            "data_seed": 0,
            "loss": loss,
            "n_members": 4,
            "models": {
                "student": {
                    "key": f"s{seed}",
                    "force_rmse_mapped": rmse,
                    "stable_fraction": 1.0,
                    "ms_per_force_evaluation": 0.3,
                    "speedup_vs_ensemble": 4.0,
                    "rdf_mad": 0.01 * (seed + 1),
                }
            },
        }
        (tmp_path / str(job) / ".hydra").mkdir(parents=True)
        (tmp_path / str(job) / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n")
        (tmp_path / str(job) / "result.json").write_text(json.dumps(line) + "\n")
        parsed = ResultLine.from_json(line)
        assert (parsed.run.teacher, parsed.run.schedule, parsed.two_stage) == (
            "ensemble",
            "single",
            None,
        )
    (row,) = summarize([tmp_path])
    assert (row.label, sorted(row.seeds)) == ("student", [0, 1])
    assert row.mean_std("force_rmse_mapped") == pytest.approx((155.0, 7.0710678))
    assert row.mean_std("rdf_mad")[0] == pytest.approx(0.015)
