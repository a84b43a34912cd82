"""Every conf/loss/*.yaml preset composes into valid student loss weights; the teacher count
and the simulated models are checked before anything is trained."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from cgkd.models.checkpoint import build_potential
from cgkd.stages import Context, run_command
from cgkd.stages.distill import SCHEDULES, student_loss
from cgkd.stages.sample import sampler_settings
from cgkd.stages.teacher import n_teachers
from cgkd.training.screening import METHODS

CONF = Path(__file__).resolve().parent.parent / "conf"
PRESETS = sorted(path.stem for path in (CONF / "loss").glob("*.yaml"))
EXPERIMENTS = sorted(path.stem for path in (CONF / "experiment").glob("*.yaml"))
SCREENINGS = sorted(path.stem for path in (CONF / "screening").glob("*.yaml"))


def config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def loss(*overrides: str):
    """The student loss weights of a config."""
    return student_loss(Context.unchecked(config(*overrides)))


def teachers(cfg: DictConfig) -> int:
    """How many teachers label the student's frames."""
    return n_teachers(cfg.teacher.n_members, cfg.loss.n_teachers)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_loss_preset_builds_student_weights(preset: str) -> None:
    cfg = config(f"loss={preset}")
    weights = student_loss(Context.unchecked(cfg))
    assert weights.needs_teacher  # a student learns from its teachers
    assert weights.error == cfg.student.train.error
    assert 1 <= n_teachers(cfg.teacher.n_members, cfg.loss.n_teachers) <= cfg.teacher.n_members


def test_table_rows_differ_only_in_their_targets() -> None:
    single = loss("loss=single_teacher_forces")
    forces = loss("loss=teacher_forces")
    energies = loss("loss=teacher_forces_bead_energies")
    total = loss("loss=distill")
    assert single == forces and forces.bead_energies == 0 and forces.energy == 0
    assert energies.bead_energies > 0 and energies.energy == 0
    assert total.bead_energies > 0 and total.energy > 0
    assert teachers(config("loss=single_teacher_forces")) == 1
    assert teachers(config("loss=teacher_forces")) == 4


def test_bad_teacher_count_and_models_are_one_line_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"loss.n_teachers=5 is not between 1 and"):
        teachers(config("loss.n_teachers=5"))
    with pytest.raises(ValueError, match=r"unknown ones \['teachers'\]; choose from"):
        run_command(
            config("simulate.models=[student,teachers]", f"cache_dir={tmp_path}"), "simulate"
        )
    with pytest.raises(ValueError, match="uncertainty weighting applies"):
        loss("loss.w_f=0", "loss.w_F=1", "loss.uncertainty_weighting=true")
    assert not list(tmp_path.iterdir())  # refused before any stage ran


def test_data_seed_follows_seed_unless_set() -> None:
    assert config("seed=3").data_seed == 3
    assert config("seed=3", "data_seed=0").data_seed == 0


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("screening", SCREENINGS)
def test_every_experiment_composes_the_two_stage_groups(experiment: str, screening: str) -> None:
    """Each experiment with each screening preset: valid sampler settings, a known screening
    method and schedule, student weights, and a student network that builds."""
    cfg = config(f"experiment={experiment}", "schedule=two_stage", f"screening={screening}")
    settings = sampler_settings(Context.unchecked(cfg))
    assert settings.temperatures[0] == pytest.approx(cfg.simulate.temperature)
    assert settings.timestep == cfg.simulate.timestep
    assert cfg.screening.method in METHODS and 0 < cfg.screening.fraction <= 1
    assert cfg.schedule.kind in SCHEDULES and cfg.schedule.hard.learning_rate_factor > 0
    assert student_loss(Context.unchecked(cfg)).teacher_forces > 0
    model = build_potential([{**cfg.student.model, "n_species": 2}])
    assert sum(p.numel() for p in model.parameters()) > 0


def test_amoeba_experiment_is_all_atom_with_an_openmm_teacher() -> None:
    cfg = config("experiment=amoeba_water")
    assert cfg.teacher.source == "openmm" and cfg.mapping.name == "identity_water"
    assert cfg.system.water_model == "amoeba2018" and cfg.schedule.kind == "two_stage"
    assert cfg.simulate.min_distance < 0.096  # O-H bonds are not a collapse


def test_external_teachers_refuse_models_they_do_not_have(tmp_path) -> None:
    for source, model in (("openmm", "teacher"), ("torchscript", "ensemble")):
        with pytest.raises(ValueError, match=rf"has \['{model}'\] but teacher.source={source}"):
            run_command(
                config(
                    f"teacher.source={source}",
                    f"simulate.models=[student,{model}]",
                    f"cache_dir={tmp_path}",
                ),
                "simulate",
            )
    assert not list(tmp_path.iterdir())
