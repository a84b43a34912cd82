"""The quick end-to-end run through the real command line, its caching, sweeps and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cgkd import ops

CGKD = [sys.executable, "-m", "cgkd.cli"]


def cgkd(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [*CGKD, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=900
    )


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One `cgkd run experiment=quick` in a fresh directory (about a minute on 2 cores)."""
    work = tmp_path_factory.mktemp("quick")
    result = cgkd("run", "experiment=quick", "progress=false", "hydra.run.dir=out", cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    return work


@pytest.mark.slow
def test_quick_run_produces_every_artifact(quick_run):
    out = quick_run / "out"
    for name in (
        "metrics.json",
        "observables.json",
        "report.md",
        "structure.png",
        "structure.svg",
        "angles.png",
        "order.png",
        "dynamics.png",
        "cdf.png",
        "training.png",
        "config.yaml",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    observables = metrics["observables"]
    for name, metric in [("rdf", "MAD"), ("adf", "JSD"), ("cdf", "JSD"), ("tetrahedral", "JSD")]:
        assert set(observables[name]) <= {"student", "baseline"}
        assert all(row[metric] >= 0 for row in observables[name].values())
    assert {"n(r)", "S(q)", "q4", "q6", "coordination numbers", "local density"} <= set(observables)
    assert all(row["D ratio"] > 0 for row in observables["msd"].values())
    assert metrics["scalars"]["D"]["AA (mapped)"]["value"] > 0
    assert metrics["timings"]["aa_ns_per_day"] > 0
    assert set(metrics["timings"]["ms_per_force_evaluation"]) == {
        "teacher",
        "ensemble",
        "student",
        "baseline",
    }
    result = json.loads((out / "result.json").read_text())
    assert set(result["models"]) == {"student", "baseline"}
    assert result["models"]["student"]["rdf_mad"] == metrics["observables"]["rdf"]["student"]["MAD"]
    assert set(metrics["stability"]) == {"student", "baseline"}
    assert len(metrics["forces"]["teachers"]) == 2
    stages = {path.name.rsplit("-", 1)[0] for path in (quick_run / "cache").glob("[!.]*")}
    assert stages == {
        "generate",
        "map",
        "prior",
        "member-0",
        "member-1",
        "teach",
        "teacher",
        "label",
        "student",
        "baseline",
        "simulate-student",
        "simulate-baseline",
        "analyze",
    }
    for stage in (quick_run / "cache").glob("[!.]*"):
        assert (stage / "done.json").is_file() and (stage / "config.yaml").is_file()
    for model in ("teacher_0.ts", "teacher_1.ts", "ensemble.ts", "loss.png"):
        assert next((quick_run / "cache").glob(f"teach-*/{model}")).is_file()
    for model in ("teacher_0_fused.ts", "ensemble_fused.ts"):
        assert next((quick_run / "cache").glob(f"teach-*/{model}")).is_file()
    # simulate.kernels=auto on the CPU platform ran the fused exports.
    for name in ("student", "baseline"):
        record = json.loads(
            next((quick_run / "cache").glob(f"simulate-{name}-*/done.json")).read_text()
        )
        assert record["model_file"].endswith(f"{name}_fused.ts")
    report = (out / "report.md").read_text()
    assert "### student vs AA" in report and "| rdf | MAD " in report


@pytest.mark.slow
def test_classical_model_runs_as_a_native_openmm_system(quick_run):
    result = cgkd(
        "simulate",
        "experiment=quick",
        "progress=false",
        "simulate.models=[classical]",
        cwd=quick_run,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    fitted = json.loads(next((quick_run / "cache").glob("classical-*/done.json")).read_text())
    assert fitted["model"].endswith("classical.xml") and fitted["n_knots"] > 10
    # Force matching on mapped forces lands near, not below, the labels' noise floor.
    assert (
        0.5 * fitted["mapped_force_rms"] < fitted["force_rmse_mapped"] < fitted["mapped_force_rms"]
    )
    run = json.loads(next((quick_run / "cache").glob("simulate-classical-*/done.json")).read_text())
    assert run["model_file"] == fitted["model"] and run["stable_fraction"] == 1.0
    assert run["replicas"][0]["n_frames"] == 60


@pytest.mark.slow
def test_refined_student_is_simulated_and_reported(quick_run):
    """The default models (quick leaves out the refined one): the cached student refined by
    relative entropy (a few rounds), simulated and reported beside the student and baseline."""
    refine = ["refine.rounds=3", "refine.walkers=2", "refine.steps=40", "refine.save_interval=20"]
    result = cgkd(
        "run",
        "experiment=quick",
        "progress=false",
        "simulate.models=[student,baseline,refined]",
        "refine.equilibration=20",
        *refine,
        "hydra.run.dir=refined",
        cwd=quick_run,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    refined = json.loads(next((quick_run / "cache").glob("refined-*/done.json")).read_text())
    student = json.loads(next((quick_run / "cache").glob("student-*/done.json")).read_text())
    assert refined["refined_from"] == student["key"]
    assert next((quick_run / "cache").glob("refined-*/refinement.png")).is_file()
    assert "![refinement](refinement.png)" in (quick_run / "refined" / "report.md").read_text()
    assert (quick_run / "refined" / "refinement.png").is_file()
    assert [h["round"] for h in refined["history"]] == [0, 1, 2]
    assert all(h["cg_frames"] == 4 for h in refined["history"])
    # Three small steps from the student: its held-out force error before, then near it.
    assert refined["start_force_rmse_mapped"] == pytest.approx(student["force_rmse_mapped"])
    assert refined["force_rmse_mapped"] == pytest.approx(student["force_rmse_mapped"], rel=0.05)
    metrics = json.loads((quick_run / "refined" / "metrics.json").read_text())
    assert set(metrics["observables"]["rdf"]) == {"student", "baseline", "refined"}
    assert metrics["stability"]["refined"]["stable_fraction"] == 1.0
    assert "refined" in metrics["forces"]
    assert "| refined |" in (quick_run / "refined" / "report.md").read_text()


@pytest.mark.slow
def test_stages_are_cached_and_a_loss_sweep_retrains_only_students(quick_run):
    generated = next((quick_run / "cache").glob("generate-*/done.json"))
    stamp = generated.stat().st_mtime
    again = cgkd("generate", "experiment=quick", "progress=false", cwd=quick_run)
    assert again.returncode == 0, again.stderr[-2000:]
    assert generated.stat().st_mtime == stamp
    sweep = cgkd(
        "distill",
        "--multirun",
        "experiment=quick",
        "progress=false",
        "loss.w_eps=0.5,1.0",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=1",
        cwd=quick_run,
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    cache = quick_run / "cache"
    assert len(list(cache.glob("teach-*"))) == 1
    assert len(list(cache.glob("student-*"))) == 3  # the default weights plus two new ones
    assert len(list(cache.glob("baseline-*"))) == 1


@pytest.mark.slow
def test_members_train_as_launcher_jobs_and_teach_reuses_them(quick_run):
    """Teacher members as jobs of a multirun: two through submitit's local executor, one
    through the joblib launcher, one in a worker process of `cgkd teach`; the ensemble is
    assembled from all four without retraining any. A new prior setting makes the two
    submitit jobs fit the same prior stage at once (the stage lock makes one wait)."""
    from cgkd.simulation.export import read_export_metadata

    common = (
        "experiment=quick",
        "progress=false",
        "teacher.n_members=4",
        "teacher.train.epochs=2",
        "prior.repulsion.epsilon_kt=1.5",
    )
    cache = quick_run / "cache"
    before = set(cache.glob("member-*"))
    submitit = cgkd(
        "teach-member",
        "--multirun",
        *common,
        "teacher.member=0,1",
        "hydra/launcher=local_submitit",
        cwd=quick_run,
    )
    assert submitit.returncode == 0, submitit.stderr[-3000:]
    assert list(quick_run.glob("multirun/*/*/.submitit/*/*_result.pkl"))  # really submitit
    joblib = cgkd(
        "teach-member",
        "--multirun",
        *common,
        "teacher.member=2",
        "hydra/launcher=local",
        cwd=quick_run,
    )
    assert joblib.returncode == 0, joblib.stderr[-3000:]
    new = set(cache.glob("member-*")) - before
    trained = {path: (path / "done.json").stat().st_mtime for path in new}
    assert len(trained) == 3
    assert len(list(cache.glob("prior-*"))) == 2  # the quick run's and the new setting's
    members = {json.loads((path / "done.json").read_text())["member"] for path in trained}
    assert members == {0, 1, 2}
    teach = cgkd("teach", *common, "teacher.n_jobs=2", cwd=quick_run)
    assert teach.returncode == 0, teach.stderr[-3000:]
    assert len(set(cache.glob("member-*")) - before) == 4  # member 3 trained by teach
    for path, stamp in trained.items():
        assert (path / "done.json").stat().st_mtime == stamp  # reused, not retrained
    record = max(cache.glob("teach-*/done.json"), key=lambda p: p.stat().st_mtime)
    assert read_export_metadata(record.parent / "ensemble.ts")["n_members"] == 4
    teach_record = json.loads(record.read_text())
    assert len(teach_record["members"]) == 4
    held_out = teach_record["ensemble"]
    assert 0 < held_out["force_rmse_mapped"] < 2 * held_out["mapped_force_rms"]


def quick_cache_without(quick_run: Path, work: Path, *rebuilt: str) -> Path:
    """A copy of the quick run's cache in ``work`` without the stages named by the glob
    patterns ``rebuilt``, which a command run there then builds again."""
    import shutil

    ignore = shutil.ignore_patterns(*rebuilt)
    return Path(shutil.copytree(quick_run / "cache", work / "cache", ignore=ignore))


def assert_quick_run_weights(cache: Path, quick_run: Path, pattern: str, atol: float) -> int:
    """Every rebuilt ``pattern`` stage of ``cache`` is keyed as one of the quick run's and
    holds its model's weights to ``atol`` (0: bit for bit); returns how many there are."""
    import torch

    rebuilt = sorted(cache.glob(pattern))
    assert rebuilt, f"nothing rebuilt matches {pattern}"
    for path in rebuilt:
        (model,) = [f for f in path.glob("*.pt") if f.name != "checkpoint.pt"]
        ours = torch.load(model, weights_only=False)["state_dict"]
        theirs = torch.load(quick_run / "cache" / path.name / model.name, weights_only=False)
        for name, value in ours.items():
            torch.testing.assert_close(
                value, theirs["state_dict"][name], rtol=0, atol=atol, msg=f"{path.name} {name}"
            )
    return len(rebuilt)


@pytest.mark.slow
def test_models_streamed_from_the_dataset_files_are_the_in_memory_ones(quick_run, tmp_path):
    """`stream=true`: the quick run's teachers, student and baseline, retrained reading their
    frames (and the student its labels) batch by batch from their files (upstream stages
    reused from a copy of its cache), have the very same weights; the setting enters no
    key."""
    rebuilt = ("member-*", "teach-*", "student-*", "baseline-*")
    cache = quick_cache_without(quick_run, tmp_path, *rebuilt)
    distill = cgkd("distill", "experiment=quick", "progress=false", "stream=true", cwd=tmp_path)
    assert distill.returncode == 0, distill.stderr[-3000:]
    assert assert_quick_run_weights(cache, quick_run, "member-*", atol=0.0) == 2
    for pattern in ("student-*", "baseline-*"):
        assert assert_quick_run_weights(cache, quick_run, pattern, atol=0.0) == 1


@pytest.mark.slow
def test_teacher_trained_by_two_torchrun_ranks_is_the_single_process_one(quick_run, tmp_path):
    """`torchrun --nproc-per-node 2 -m cgkd.cli teach-member` (gloo, one thread per rank) on a
    copy of the quick run's cache: rank 0 reuses the upstream stages and records the member
    under the quick run's key, with the single-process teacher's weights and validation
    losses; rank 1 leaves nothing behind."""
    cache = quick_cache_without(quick_run, tmp_path, "member-*")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node=2", "-m", "cgkd.cli", "teach-member", "experiment=quick"]
    command += ["progress=false", "teacher.member=0", "hydra.run.dir=out"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    launch = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert launch.returncode == 0, launch.stderr[-3000:]
    assert "rank 0 of 2 (gloo)" in (tmp_path / "out" / "cli.log").read_text()
    assert assert_quick_run_weights(cache, quick_run, "member-*", atol=1e-5) == 1
    (member,) = cache.glob("member-*")
    ours = json.loads((member / "done.json").read_text())
    theirs = json.loads((quick_run / "cache" / member.name / "done.json").read_text())
    for entry, other in zip(ours["history"], theirs["history"], strict=True):
        assert entry["val_loss"] == pytest.approx(other["val_loss"], rel=1e-5)
    assert not any((cache / ".ranks").iterdir())


@pytest.mark.slow
def test_submitit_job_of_two_tasks_trains_the_teacher_data_parallel(quick_run, tmp_path):
    """A multirun job through submitit's local executor with two tasks (what a SLURM job
    with tasks_per_node=2 gets): the tasks form a process group from submitit's environment
    and train the member as one process would."""
    cache = quick_cache_without(quick_run, tmp_path, "member-*")
    job = cgkd(
        "teach-member",
        "--multirun",
        "experiment=quick",
        "progress=false",
        "teacher.member=1",
        "hydra/launcher=local_submitit",
        "hydra.launcher.tasks_per_node=2",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
    )
    assert job.returncode == 0, job.stderr[-3000:]
    assert "rank 0 of 2 (gloo)" in (tmp_path / "sweep" / "0" / "cli.log").read_text()
    assert assert_quick_run_weights(cache, quick_run, "member-*", atol=1e-5) == 1


def test_stage_override_joins_the_other_overrides_whatever_the_flags():
    from cgkd.cli import _hydra_arguments

    args = ["--multirun", "a=1", "--cfg", "job", "b=2", "--package=x", "c=3"]
    assert _hydra_arguments(args, "teach") == [
        "--multirun",
        "--cfg",
        "job",
        "--package=x",
        "a=1",
        "b=2",
        "c=3",
        "stage=teach",
    ]


def test_slurm_launcher_preset_composes(tmp_path):
    result = cgkd(
        "teach-member",
        "teacher.member=0",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "--cfg",
        "hydra",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "SlurmLauncher" in result.stdout and "partition: gpu" in result.stdout
    assert "max_num_timeout: 3" in result.stdout


def test_unknown_config_key_is_one_line_naming_it(tmp_path):
    result = cgkd("run", "no_such_key=3", cwd=tmp_path)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "no_such_key" in last and "the config takes:" in last
    typo = cgkd("run", "simulate.stepz=5", cwd=tmp_path)
    last = typo.stderr.strip().splitlines()[-1]
    assert "stepz" in last and "simulate takes:" in last and "steps" in last


def test_unknown_stage_is_refused(tmp_path):
    result = cgkd("trian", cwd=tmp_path)
    assert result.returncode != 0 and "unknown stage 'trian'" in result.stderr


def test_missing_user_trajectory_names_the_file(tmp_path):
    result = cgkd("map", "input.topology=nope.pdb", "input.trajectory=nope.trr", cwd=tmp_path)
    assert result.returncode != 0
    assert "nope.trr" in result.stderr and "input.trajectory" in result.stderr


@pytest.mark.slow
def test_notebook_runs_on_the_quick_run(quick_run, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    notebook = Path(__file__).resolve().parent.parent / "notebooks" / "cg_vs_aa.ipynb"
    monkeypatch.setenv("CGKD_RUN_DIR", str(quick_run / "out"))
    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(quick_run)}}
    ).execute()
    outputs = "".join(
        o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
    )
    assert "RDF MAD" in outputs


@pytest.mark.slow
@pytest.mark.parametrize("flavour", ["plain", "fused"])
def test_plain_openmm_example_runs_an_exported_student(quick_run, flavour):
    script = Path(__file__).resolve().parent.parent / "examples" / "run_exported_model.py"
    name = "student.ts" if flavour == "plain" else "student_fused.ts"
    model = next((quick_run / "cache").glob(f"student-*/{name}"))
    start = next((quick_run / "cache").glob("simulate-student-*/replica_0/topology.pdb"))
    kernels = ["--kernels", str(ops.library_path())] if flavour == "fused" else []
    result = subprocess.run(
        [sys.executable, str(script), str(model), str(start), "5000", *kernels],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line and not line.startswith("#")]
    assert len(lines) == 5
    temperatures = np.array([float(line.split(",")[2]) for line in lines])
    # Started at a minimum, half the kinetic energy flows into the potential at first; after
    # 2 ps the Langevin thermostat (1/ps) has brought the beads back to 300 K. One reading of
    # 120 beads fluctuates by 300 K * sqrt(2 / 360 dof) = 22 K, so the four readings 2 ps apart
    # are averaged (11 K) and a blow-up is caught by any reading far above the thermostat.
    assert np.all(temperatures < 450), temperatures
    assert 250 < temperatures[1:].mean() < 350, temperatures


@pytest.mark.filterwarnings("ignore:Found no information for attr:UserWarning")
@pytest.mark.filterwarnings("ignore:Found missing chainIDs:UserWarning")
def test_user_trajectory_without_forces_is_one_line(tmp_path):
    import MDAnalysis as mda

    universe = mda.Universe.empty(3, n_residues=1, atom_resindex=[0, 0, 0], trajectory=True)
    universe.add_TopologyAttr("names", ["OW", "HW1", "HW2"])
    universe.add_TopologyAttr("resnames", ["HOH"])
    universe.atoms.positions = [[1.0, 1.0, 1.0], [1.9, 1.0, 1.0], [1.0, 1.9, 1.0]]
    universe.dimensions = [20.0, 20.0, 20.0, 90.0, 90.0, 90.0]
    universe.atoms.write(tmp_path / "w.pdb")
    universe.atoms.write(tmp_path / "w.dcd")
    result = cgkd("map", "input.topology=w.pdb", "input.trajectory=w.dcd", cwd=tmp_path)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "w.dcd" in last and "forces" in last
    assert not list((tmp_path / "cache").glob("import-*"))  # the failed import left nothing


TINY_WATER = (
    "system.n_molecules=80",
    "system.nonbonded_cutoff=0.6",
    "system.equilibration=0.2",
    "system.save_interval=10",
    "system.threads=1",
)


def test_interrupted_generation_leaves_nothing_and_reruns_cleanly(tmp_path):
    """Ctrl-C during production: no aa.h5md, no temporary file, no done.json; a rerun works."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = [*CGKD, "generate", *TINY_WATER, "system.production=200", "progress=true"]
    process = subprocess.Popen(
        args, cwd=tmp_path, stderr=subprocess.PIPE, text=True, env=env, bufsize=1
    )
    seen = ""
    while "production" not in seen:
        chunk = process.stderr.read(64)
        assert chunk, f"generation ended before production started: {seen[-2000:]}"
        seen += chunk
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    assert process.returncode != 0
    assert not list((tmp_path / "cache").glob("generate-*"))  # nothing half-written
    result = cgkd("generate", *TINY_WATER, "system.production=1", "progress=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    finished = [p for p in (tmp_path / "cache").glob("generate-*") if (p / "done.json").is_file()]
    assert len(finished) == 1
    assert {p.name for p in finished[0].iterdir()} >= {"aa.h5md", "aa_topology.pdb"}
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_user_trajectory_is_imported_then_mapped(tmp_path):
    """`cgkd map` on a user's LAMMPS dump: imported to H5MD (units converted, frames selected),
    then mapped; the import is cached and records where its data came from."""
    from formats import make_frames, write_lammps_dump, write_topology_pdb

    from cgkd.io.h5md import read_h5md, read_h5md_config

    frames = make_frames(n_frames=8, n_atoms=30, type_names=("HOH", "SOL"))
    write_topology_pdb(tmp_path / "top.pdb", frames)
    write_lammps_dump(tmp_path / "run.dump", frames, "real")
    args = (
        "input.topology=top.pdb",
        "input.trajectory=run.dump",
        "input.units=lammps-real",
        "input.timestep=1.0",
        "input.time_start=1.0",
        "input.temperature=300",  # the dump has no velocities to measure it from
        "progress=false",
    )
    result = cgkd("map", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = next((tmp_path / "cache").glob("import-*"))
    aa = read_h5md(imported / "aa.h5md")
    assert aa.n_frames == 6  # t = 1.0 ... 3.5 ps
    np.testing.assert_allclose(aa.forces, frames.forces[2:], rtol=1e-5, atol=1e-2)
    source = read_h5md_config(imported / "aa.h5md")["source"]
    assert source["units"]["force"] == "kcal/mol/angstrom"
    cg_path = next((tmp_path / "cache").glob("map-*")) / "cg.h5md"
    cg = read_h5md(cg_path)
    assert (cg.n_frames, cg.n_particles, cg.type_names) == (6, 10, ["HOH", "SOL"])
    np.testing.assert_allclose(cg.forces, aa.forces.reshape(6, 10, 3, 3).sum(axis=2), atol=1e-3)
    again = cgkd("map", *args, cwd=tmp_path)
    assert again.returncode == 0 and len(list((tmp_path / "cache").glob("[!.]*"))) == 2
    # The imported file has no constraint record: the rigid O-H distances are detected, which
    # makes each molecule one constraint group, so the optimal map equals the basic one.
    assert read_h5md_config(cg_path)["constraints"] == {"source": "detected", "count": 20}
    optimal = cgkd("map", *args, "mapping.force_map=optimal", cwd=tmp_path)
    assert optimal.returncode == 0, optimal.stderr[-2000:]
    (optimal_path,) = {p / "cg.h5md" for p in (tmp_path / "cache").glob("map-*")} - {cg_path}
    assert read_h5md_config(optimal_path)["force_map"] == "optimal"
    np.testing.assert_allclose(read_h5md(optimal_path).forces, cg.forces, atol=1e-6)


@pytest.mark.slow
def test_quick_reline_multibead_runs_end_to_end(tmp_path):
    """Reline (912 atoms) with choline in two beads through every stage to the report."""
    from cgkd.io.h5md import read_h5md, read_h5md_config

    result = cgkd(
        "run", "experiment=quick_reline", "progress=false", "hydra.run.dir=out", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "CHN            24 beads, 16 atoms x 24" in result.stdout + result.stderr  # summary
    cg_path = next((tmp_path / "cache").glob("map-*")) / "cg.h5md"
    cg = read_h5md(cg_path)
    assert (cg.n_particles, cg.type_names) == (120, ["CHN", "CHO", "CL", "UR"])
    stored = read_h5md_config(cg_path)
    assert stored["mapping"]["name"] == "reline_multibead" and stored["force_map"] == "basic"
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics["stability"]) == {"student", "baseline"}
    assert "reline" in (tmp_path / "out" / "report.md").read_text()
    # the choline bonds (CHN-CHO) are measured: their distribution and the share outside AA's
    bonds = metrics["observables"]["bonds"]["student"]
    assert 0.0 <= bonds["outside AA range"] <= 1.0 and bonds["JSD"] >= 0.0
    line = json.loads((tmp_path / "out" / "result.json").read_text())
    assert (
        line["models"]["baseline"]["bonds_outside"]
        == metrics["observables"]["bonds"]["baseline"]["outside AA range"]
    )
    assert (tmp_path / "out" / "bonds.png").is_file()


@pytest.mark.slow
def test_compare_builds_one_report_over_runs(quick_run, tmp_path):
    import shutil

    sweep = tmp_path / "sweep"
    for job, overrides in (("0", "- loss.w_E=0.0\n"), ("1", "- loss.w_E=1.0\n")):
        shutil.copytree(quick_run / "out", sweep / job)
        (sweep / job / ".hydra").mkdir(exist_ok=True)
        (sweep / job / ".hydra" / "overrides.yaml").write_text(overrides)
    result = cgkd("compare", str(sweep), "-o", str(tmp_path / "cmp"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert [(r["run"], r["model"]) for r in rows] == [
        ("loss.w_E=0.0", "student"),
        ("loss.w_E=0.0", "baseline"),
        ("loss.w_E=1.0", "student"),
        ("loss.w_E=1.0", "baseline"),
    ]
    metrics = json.loads((quick_run / "out" / "metrics.json").read_text())
    assert rows[0]["rdf_mad"] == pytest.approx(metrics["observables"]["rdf"]["student"]["MAD"])
    assert rows[1]["d_ratio"] == pytest.approx(metrics["observables"]["msd"]["baseline"]["D ratio"])
    for figure in ("comparison.md", "structure.png", "order.svg", "cdf.png"):
        assert (tmp_path / "cmp" / figure).is_file(), figure
    empty = cgkd("compare", str(tmp_path / "cmp"), cwd=tmp_path)
    assert empty.returncode != 0 and "no observables.json" in empty.stderr


@pytest.mark.slow
def test_seed_and_loss_sweep_is_summarized_with_the_teachers_simulated(quick_run):
    """A multirun over the student's loss and the seed (joblib launcher), the teachers
    simulated too: every job writes its one-line result, `cgkd summarize` groups them into
    mean +- std rows (each model counted once per seed), and the single-teacher labels are
    that teacher's own forces."""
    import torch
    from omegaconf import OmegaConf

    from cgkd.io.h5md import read_h5md
    from cgkd.models.checkpoint import load_potential
    from cgkd.training.dataset import Targets
    from cgkd.training.targets import predict_members

    sweep = cgkd(
        "run",
        "--multirun",
        "experiment=quick",
        "progress=false",
        "data_seed=0",
        "simulate.models=[student,baseline,teacher,ensemble]",
        "loss=single_teacher_forces,teacher_forces",
        "seed=0,1",
        "hydra.sweep.dir=sweep",
        "hydra/launcher=local",  # two joblib processes share the cached stages
        cwd=quick_run,
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    results = [
        json.loads(p.read_text()) for p in sorted((quick_run / "sweep").glob("*/result.json"))
    ]
    assert len(results) == 4
    assert len(list((quick_run / "cache").glob("generate-*"))) == 1  # data_seed kept it
    for result in results:
        assert set(result["models"]) == {"student", "baseline", "teacher", "ensemble"}
        assert result["models"]["ensemble"]["speedup_vs_ensemble"] == 1.0
        for entry in result["models"].values():
            assert 0.0 <= entry["stable_fraction"] <= 1.0 and entry["rdf_mad"] >= 0
    summary = cgkd("summarize", "sweep", "-o", "summary", cwd=quick_run)
    assert summary.returncode == 0, summary.stderr[-2000:]
    rows = {
        row["label"]: row for row in json.loads((quick_run / "summary/summary.json").read_text())
    }
    assert list(rows) == [
        "baseline",
        "teacher",
        "ensemble",
        "student (loss=single_teacher_forces)",
        "student (loss=teacher_forces)",
    ]
    for row in rows.values():
        assert sorted(row["seeds"]) == [0, 1]
    baselines = {
        r["seed"]: r["models"]["baseline"]["force_rmse_mapped"] for r in results
    }  # one baseline per seed, shared by both losses
    assert rows["baseline"]["force_rmse_mapped"]["mean"] == pytest.approx(
        np.mean(list(baselines.values()))
    )
    assert rows["baseline"]["force_rmse_mapped"]["std"] == pytest.approx(
        np.std(list(baselines.values()), ddof=1)
    )
    assert (quick_run / "summary" / "summary.png").is_file()
    single = [
        p.parent
        for p in (quick_run / "cache").glob("label-*/done.json")
        if json.loads(p.read_text()).get("n_teachers") == 1
    ]
    assert len(single) == 2  # one per seed
    for label in single:
        targets = Targets.load(label / "targets")
        assert np.all(targets.force_std == 0.0)
        cache = quick_run / "cache"  # label <- teacher <- teach, by their config.yaml
        teacher = OmegaConf.load(label / "config.yaml")["upstream"]["teacher"]
        teach = OmegaConf.load(cache / teacher / "config.yaml")["upstream"]["teach"]
        record = json.loads((cache / teach / "done.json").read_text())
        member, _ = load_potential(quick_run / record["members"][0]["model"])
        frames = read_h5md(next((quick_run / "cache").glob("map-*/cg.h5md")))
        forces, _ = predict_members(
            member,
            torch.as_tensor(frames.positions[:2], dtype=torch.float32),
            torch.as_tensor(frames.boxes[:2], dtype=torch.float32),
            torch.as_tensor(frames.types),
        )
        np.testing.assert_allclose(targets.forces[:2], forces[0].numpy(), rtol=1e-4, atol=1e-3)
    missing = cgkd("summarize", "cache", cwd=quick_run)
    assert missing.returncode != 0 and "no result.json" in missing.stderr


@pytest.mark.slow
def test_matched_friction_is_fitted_per_bead_type_then_used(quick_run):
    """simulate.friction=matched: a calibrate stage fits one friction per bead type from
    short runs, and the student's CG MD runs with them (recorded and in the report)."""
    from cgkd.simulation.friction import fit_friction

    result = cgkd(
        "run",
        "experiment=quick",
        "progress=false",
        "simulate.friction=matched",
        "simulate.calibration_steps=600",
        "simulate.models=[student]",
        "hydra.run.dir=matched",
        cwd=quick_run,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    calibration = json.loads(
        next((quick_run / "cache").glob("calibrate-student-*/done.json")).read_text()
    )
    assert set(calibration["frictions"]) == {"HOH"}
    assert set(calibration["runs"]) == {"1", "10", "30", "refine_1", "refine_2"}
    # the refinement run is made at the friction fitted from the first three
    first = [calibration["runs"][g]["observed"]["HOH"][0] for g in ("1", "10", "30")]
    reference = calibration["reference"]["HOH"][0]
    trial = fit_friction([1.0, 10.0, 30.0], first, reference).matched
    assert calibration["runs"]["refine_1"]["frictions"]["HOH"] == pytest.approx(trial)
    fit = calibration["fits"]["HOH"]
    assert fit["observed"][0] > fit["observed"][-1] > 0  # more friction, slower beads
    simulated = [
        json.loads(path.read_text())
        for path in (quick_run / "cache").glob("simulate-student-*/done.json")
    ]
    assert any(record.get("frictions") == calibration["frictions"] for record in simulated)
    report = (quick_run / "matched" / "report.md").read_text()
    assert "Friction per bead type (1/ps):" in report and "| student | HOH |" in report
    assert "matched to the AA reference's diffusion coefficient (MSD, nm^2/ps)" in report


@pytest.mark.slow
def test_friction_matched_to_the_vacf_uses_a_dense_aa_segment(quick_run):
    """simulate.calibration_target=vacf: the segment stage runs AA MD of the built-in water
    for calibration_steps CG steps' worth of time, a frame every 10 fs with velocities; the
    calibration matches each type's Green-Kubo D to it, and D falls with the friction. The
    segment's bead velocities are centre-of-mass velocities, so they hold equipartition."""
    from cgkd.io.h5md import read_h5md
    from cgkd.units import kt

    result = cgkd(
        "run",
        "experiment=quick",
        "progress=false",
        "simulate.friction=matched",
        "simulate.calibration_target=vacf",
        "simulate.vacf_max_lag=0.25",
        "simulate.calibration_steps=600",
        "simulate.calibration_refinements=1",
        "simulate.models=[student]",
        "hydra.run.dir=matched_vacf",
        cwd=quick_run,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    segment = json.loads(next((quick_run / "cache").glob("segment-*/done.json")).read_text())
    assert segment["picoseconds"] == pytest.approx(3.0) and segment["n_frames"] == 300
    # the beads' velocities are their molecules' centre-of-mass velocities: equipartition.
    # 120 beads over 3 ps: one frame's ratio scatters by sqrt(2/360) = 0.075 and the mean of
    # ~10 independent frames by about 0.02; 0.08 is about 4 of those, and still fails for the
    # oxygen's velocity in place of the centre of mass's (18/16 = 1.125).
    masses = read_h5md(next((quick_run / "cache").glob("map-*/cg.h5md"))).masses
    with np.load(quick_run / segment["segment"]) as dense:
        kinetic = (masses[:, None] * dense["velocities"] ** 2).sum(axis=-1).mean()
    assert kinetic / (3 * kt(300.0)) == pytest.approx(1.0, abs=0.08)
    calibrations = [
        json.loads(path.read_text())
        for path in (quick_run / "cache").glob("calibrate-student-*/done.json")
    ]
    calibration = next(record for record in calibrations if record["target"] == "vacf")
    assert calibration["lag_window"] == 0.25 and set(calibration["runs"]) == {
        "1",
        "10",
        "30",
        "refine_1",
    }
    observed = [calibration["runs"][g]["observed"]["HOH"][0] for g in ("1", "10", "30")]
    assert observed[0] > observed[1] > observed[2] > 0
    assert calibration["reference"]["HOH"][0] > 0 and calibration["frictions"]["HOH"] >= 0
