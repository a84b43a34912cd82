"""Two-stage distillation: screening, teacher MD, external teachers and the pipeline stages."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import argon_lattice, random_liquid
from hydra import compose, initialize_config_dir

# isort: off
from cgkd.simulation.export import export_torchscript  # torch before openmm
import openmm
import openmm.unit as unit
# isort: on

from cgkd.io.frames import Frames
from cgkd.simulation.sampling import SamplerSettings, sample_md
from cgkd.simulation.teachers import OpenMMTeacher, TorchScriptTeacher
from cgkd.stages import Context, Pipeline, run_command
from cgkd.stages.data import reference_splits
from cgkd.stages.distill import student_loss
from cgkd.training.screening import (
    farthest_point_sampling,
    frame_descriptors,
    select_frames,
)
from cgkd.training.targets import label_frames

FORCE_UNIT = unit.kilojoule_per_mole / unit.nanometer
CONF = Path(__file__).resolve().parent.parent / "conf"


# --- screening -------------------------------------------------------------------------------


def test_fps_visits_every_cluster_before_revisiting_one():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    points = np.concatenate([c + 0.1 * rng.normal(size=(25, 2)) for c in centres])
    picked = farthest_point_sampling(points, 4)
    assert sorted(set(picked // 25)) == [0, 1, 2, 3]
    assert len(set(picked.tolist())) == 4


def test_random_and_disagreement_selection():
    random = select_frames("random", 10, n_candidates=50, seed=3)
    assert len(set(random.tolist())) == 10 and random.max() < 50
    assert np.array_equal(random, select_frames("random", 10, n_candidates=50, seed=3))
    scores = np.array([0.1, 5.0, 0.3, 2.0, 0.2])
    assert select_frames("disagreement", 2, scores=scores).tolist() == [1, 3]
    with pytest.raises(ValueError, match="cannot select 6 of 5"):
        select_frames("disagreement", 6, scores=scores)
    with pytest.raises(ValueError, match=r"screening.method='best' is unknown"):
        select_frames("best", 1, n_candidates=5)


def test_descriptors_of_an_ideal_gas_are_flat_and_closest_distance_is_brute_force():
    """Uniform random points: the g(r)-normalised histograms average 1; the closest distance
    of each species pair equals a brute-force minimum-image search."""
    rng = np.random.default_rng(1)
    edge, n = 3.0, 300
    positions = rng.uniform(0, edge, size=(20, n, 3))
    boxes = np.repeat(np.eye(3)[None] * edge, 20, axis=0)
    types = np.arange(n) % 2
    frames = Frames(
        positions=positions,
        forces=np.zeros_like(positions),
        boxes=boxes,
        times=np.arange(20.0),
        masses=np.ones(n),
        types=types,
        type_names=["A", "B"],
    )
    result = frame_descriptors(frames, r_max=1.2, n_bins=6)
    assert len(result.names) == 3 * 7 and result.names[6] == "closest A-A nm"
    histograms = np.asarray([k for k, name in enumerate(result.names) if name.startswith("g")])
    outer = result.values[:, histograms].reshape(20, 3, 6)[:, :, 2:]  # r > 0.4 nm
    assert outer.mean() == pytest.approx(1.0, abs=0.03)
    x = positions[0]
    delta = x[:, None] - x[None]
    delta -= edge * np.round(delta / edge)
    distance = np.linalg.norm(delta, axis=-1) + np.eye(n) * 1e9
    a, b = types == 0, types == 1
    assert result.values[0, 6] == pytest.approx(distance[np.ix_(a, a)].min())
    assert result.values[0, 13] == pytest.approx(distance[np.ix_(a, b)].min())
    assert result.values[0, 20] == pytest.approx(distance[np.ix_(b, b)].min())


# --- teacher MD and external teachers ----------------------------------------------------------


def _argon() -> tuple[openmm.System, np.ndarray, np.ndarray]:
    """The test's argon lattice (see conftest.argon_lattice)."""
    return argon_lattice(4, 0.38, 0.6)


def _potential_energy(system: openmm.System, positions: np.ndarray, box: np.ndarray) -> float:
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    context.setPositions(positions)
    state = context.getState(getEnergy=True)
    return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def test_teacher_md_samples_every_temperature_and_hotter_runs_have_higher_energy():
    system, positions, box = _argon()
    settings = SamplerSettings(
        temperature=100.0,
        temperature_factors=(1.0, 3.0),
        starts=2,
        steps=400,
        equilibration=200,
        save_interval=40,
        timestep=0.004,
        platform="Reference",
    )
    starts = np.stack([positions, positions + 0.01])
    boxes = np.stack([box, box])
    sampled = sample_md(system, starts, boxes, settings, seed=2, progress=False)
    assert sampled.n_frames == 2 * 2 * 10 and not sampled.failures
    assert sorted(set(sampled.temperatures.tolist())) == [100.0, 300.0]
    assert sorted(set(sampled.runs.tolist())) == [0, 1, 2, 3]
    frames = zip(sampled.positions, sampled.boxes, strict=True)
    energy = np.array([_potential_energy(system, x, b) for x, b in frames])
    cold, hot = energy[sampled.temperatures == 100.0], energy[sampled.temperatures == 300.0]
    assert hot.mean() > cold.mean() + 3 * cold.std() / np.sqrt(len(cold))
    again = sample_md(system, starts, boxes, settings, seed=2, progress=False)
    assert np.array_equal(again.positions, sampled.positions)  # seeded


def test_teacher_md_that_goes_bad_keeps_nothing_and_says_why():
    system, positions, box = _argon()
    settings = SamplerSettings(
        temperature=100.0,
        temperature_factors=(1.0,),
        starts=1,
        steps=20,
        save_interval=10,
        equilibration=0,
        platform="Reference",
        max_temperature_factor=0.01,
    )
    with pytest.raises(
        RuntimeError, match=r"kept no frame: run 0 at 100.0 K, step 10: .*temperature ran away"
    ):
        sample_md(system, positions[None], box[None], settings, progress=False)


def test_openmm_teacher_labels_in_bead_order_with_molecules_made_whole():
    """Bonded pairs (OpenMM's bonds ignore periodic images), beads listed in another order
    than the System's particles and positions wrapped atom by atom, splitting molecules: the
    labels are the System's forces on whole molecules, in bead order."""
    system, positions, box = _argon()
    bond = openmm.HarmonicBondForce()
    for i in range(0, len(positions), 2):
        bond.addBond(i, i + 1, 0.38, 5000.0)
    system.addForce(bond)
    order = np.random.default_rng(0).permutation(len(positions))
    rank = np.argsort(order)  # bead of each particle
    bonds = np.sort(rank[np.arange(len(positions)).reshape(-1, 2)], axis=1)
    teacher = OpenMMTeacher(system, order, bonds=bonds, platform="Reference")
    rng = np.random.default_rng(5)
    whole = positions[None] + 0.02 * rng.normal(size=(2, *positions.shape)) - 0.05
    boxes = np.repeat(box[None], 2, axis=0)
    edge = box[0, 0]
    wrapped = whole - edge * np.floor(whole / edge)
    split = np.linalg.norm(wrapped[:, 0::2] - wrapped[:, 1::2], axis=-1) > 1.0
    assert split.any()  # some molecules cross the boundary
    targets = teacher.label(wrapped[:, order], boxes, progress=False)
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    for k in range(2):
        context.setPositions(whole[k])
        state = context.getState(getForces=True, getEnergy=True)
        forces = state.getForces(asNumpy=True).value_in_unit(FORCE_UNIT)
        assert np.allclose(targets.forces[k], np.asarray(forces)[order])
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        assert targets.energies[k] == pytest.approx(energy)
    assert np.allclose(targets.bead_energies.sum(1), targets.energies)
    assert not targets.force_std.any()
    with pytest.raises(ValueError, match="not a one-to-one map"):
        OpenMMTeacher(system, order[:-1])


def test_torchscript_teacher_labels_like_the_batched_labeller(potential, tmp_path):
    """A cgkd model exported to TorchScript and read back as an external teacher: its forces
    (autograd of the scripted energy, float64) equal the batched labeller's of the same model."""
    liquid = random_liquid(40, 1.6, seed=4)
    species = torch.as_tensor(np.arange(40) % 2)
    path = export_torchscript(potential.float(), species, tmp_path / "teacher.ts")
    teacher = TorchScriptTeacher(path)
    assert teacher.has_bead_energies
    rng = np.random.default_rng(2)
    frames = liquid[None] + 0.01 * rng.normal(size=(3, 40, 3))
    boxes = np.repeat(np.eye(3)[None] * 1.6, 3, axis=0)
    external = teacher.label(frames, boxes, progress=False)
    batched = label_frames(potential.float(), frames, boxes, species.numpy(), progress=False)
    scale = np.abs(batched.forces).max()
    assert np.abs(external.forces - batched.forces).max() < 1e-4 * scale
    assert np.allclose(external.energies, batched.energies, rtol=1e-5, atol=1e-3)
    assert np.allclose(external.bead_energies, batched.bead_energies, rtol=1e-4, atol=1e-3)
    with pytest.raises(FileNotFoundError, match=r"teacher.path=.*missing.ts does not exist"):
        TorchScriptTeacher(tmp_path / "missing.ts")


# --- the pipeline stages -------------------------------------------------------------------------


TINY = [
    "experiment=quick",
    "system.production=4.0",
    "system.equilibration=1.0",
    "teacher.train.epochs=1",
    "student.train.epochs=2",
    "schedule=two_stage",
    "sampler.steps=100",
    "sampler.equilibration=0",
    "sampler.save_interval=20",
    "sampler.threads=1",
    "screening.fraction=0.2",
    "screening.r_max=0.5",
    "progress=false",
]


def _config(tmp: Path, *extra: str):
    with initialize_config_dir(str(CONF), version_base=None):
        return compose("config", overrides=[*TINY, f"cache_dir={tmp / 'cache'}", *extra])


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory):
    """The two-stage distill stage of a tiny water run, stage 2 at learning rate 0 with one
    soft frame mixed in per hard frame."""
    tmp = tmp_path_factory.mktemp("two_stage")
    cfg = _config(tmp, "schedule.hard.learning_rate_factor=0.0", "schedule.hard.soft_per_hard=1.0")
    with warnings.catch_warnings():  # a learning rate of 0 has no log-scale loss-curve axis
        warnings.filterwarnings("ignore", "Data has no positive values")
        pipeline = Pipeline(cfg)
        names = {"targets": "sample", "selection": "screen", "soft_student": "soft_student"}
        models = {name: pipeline.run(stage) for name, stage in names.items()}
        return tmp, cfg, {**models, **run_command(cfg, "distill")}


@pytest.mark.slow
def test_two_stage_records_soft_frames_and_an_auditable_selection(two_stage):
    _, cfg, models = two_stage
    soft = np.load(models["targets"]["soft"])
    assert len(soft["positions"]) == models["targets"]["n_frames"] == 3 * 2 * 5
    assert sorted(set(soft["temperatures"].round(6).tolist())) == pytest.approx(
        [300.0, 345.0, 390.0]
    )
    assert soft["force_std"].mean() > 0  # two members: a spread
    splits = reference_splits(Context.unchecked(cfg), _reference(cfg).n_frames)
    selection = json.loads(Path(models["selection"]["selection"]).read_text())
    indices = selection["indices"]
    assert len(indices) == len(set(indices)) == round(0.2 * len(splits.train))
    assert set(indices) <= set(splits.train.tolist())
    assert np.array_equal(
        np.asarray(selection["descriptors"]),
        _descriptors(models["selection"], indices),
    )
    assert models["student"]["n_hard"] == len(indices) == models["student"]["n_soft_mixed"]


@pytest.mark.slow
def test_fine_tuning_starts_from_the_soft_stage_model(two_stage):
    """At learning rate 0 the fine-tuned student is the stage-1 student: same held-out error
    (so fine-tuning neither re-initialises nor rescales it), and nothing forgotten of the soft
    stage's held-out frames, whose error is the stage-1 student's own test error."""
    _, _, models = two_stage
    student = models["student"]
    assert student["force_rmse_mapped"] == pytest.approx(student["start_force_rmse_mapped"])
    soft_test_error = models["soft_student"]["force_rmse_teacher"]
    assert student["start_force_rmse_soft"] == pytest.approx(soft_test_error)
    assert student["force_rmse_soft"] == pytest.approx(soft_test_error)
    # The baseline never saw the teacher: it is measured on the same frames, and is further off.
    assert models["baseline"]["force_rmse_soft"] > 1.2 * soft_test_error
    assert student["force_rmse_mapped"] != pytest.approx(models["baseline"]["force_rmse_mapped"])


@pytest.mark.slow
def test_external_torchscript_teacher_samples_and_labels_like_the_ensemble(two_stage):
    """The ensemble's own TorchScript file as an external teacher: the same teacher MD (same
    file, same seed), and labels equal the ensemble's batched ones."""
    tmp, cfg, models = two_stage
    ensemble = Path(Pipeline(cfg).run("teach")["dir"]) / "ensemble.ts"
    external = Pipeline(_config(tmp, "teacher.source=torchscript", f"teacher.path={ensemble}")).run(
        "sample"
    )
    assert external["key"] != models["targets"]["key"]
    mine, theirs = np.load(models["targets"]["soft"]), np.load(external["soft"])
    assert np.allclose(theirs["positions"], mine["positions"], atol=1e-5)
    scale = np.abs(mine["forces"]).max()
    assert np.abs(theirs["forces"] - mine["forces"]).max() < 1e-4 * scale
    assert not theirs["force_std"].any()


def test_two_stage_config_errors_are_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"teacher.source='nope' is unknown"):
        Pipeline(_config(tmp_path, "teacher.source=nope")).plan("teacher")
    with pytest.raises(ValueError, match=r"needs teacher.path"):
        Pipeline(_config(tmp_path, "teacher.source=torchscript")).plan("teacher")
    with pytest.raises(ValueError, match=r"loss.w_F=1.0: with schedule=two_stage"):
        student_loss(Context.unchecked(_config(tmp_path, "loss.w_F=1.0")))
    with pytest.raises(ValueError, match=r"schedule.kind='three' is unknown"):
        run_command(_config(tmp_path, "schedule.kind=three"), "distill")
    assert not (tmp_path / "cache").exists()  # refused before any stage ran


def _reference(cfg):
    from cgkd.io.h5md import read_h5md

    return read_h5md(Pipeline(cfg).run("map")["dataset"])


def _descriptors(selection: dict, indices: list[int]) -> np.ndarray:
    stored = np.load(Path(selection["selection"]).with_name("descriptors.npz"))
    rows = [int(np.flatnonzero(stored["frames"] == index)[0]) for index in indices]
    return stored["values"][rows]
