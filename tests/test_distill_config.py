"""Every conf/loss/*.yaml preset composes into valid student loss weights; the teacher count
and the simulated models are checked before anything is trained."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from cgkd import pipeline

CONF = Path(__file__).resolve().parent.parent / "conf"
PRESETS = sorted(path.stem for path in (CONF / "loss").glob("*.yaml"))


def config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_loss_preset_builds_student_weights(preset: str) -> None:
    cfg = config(f"loss={preset}")
    weights = pipeline.student_loss(cfg)
    assert weights.needs_teacher  # a student learns from its teachers
    assert weights.error == cfg.student.train.error
    assert 1 <= pipeline.n_teachers(cfg) <= cfg.teacher.n_members


def test_table_rows_differ_only_in_their_targets() -> None:
    single = pipeline.student_loss(config("loss=single_teacher_forces"))
    forces = pipeline.student_loss(config("loss=teacher_forces"))
    energies = pipeline.student_loss(config("loss=teacher_forces_bead_energies"))
    total = pipeline.student_loss(config("loss=distill"))
    assert single == forces and forces.bead_energies == 0 and forces.energy == 0
    assert energies.bead_energies > 0 and energies.energy == 0
    assert total.bead_energies > 0 and total.energy > 0
    assert pipeline.n_teachers(config("loss=single_teacher_forces")) == 1
    assert pipeline.n_teachers(config("loss=teacher_forces")) == 4


def test_bad_teacher_count_and_models_are_one_line_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"loss.n_teachers=5 is not between 1 and"):
        pipeline.n_teachers(config("loss.n_teachers=5"))
    with pytest.raises(ValueError, match=r"unknown ones \['teachers'\]; choose from"):
        pipeline.cg_models(config("simulate.models=[student,teachers]", f"cache_dir={tmp_path}"))
    with pytest.raises(ValueError, match="uncertainty weighting applies"):
        pipeline.student_loss(config("loss.w_f=0", "loss.w_F=1", "loss.uncertainty_weighting=true"))
    assert not list(tmp_path.iterdir())  # refused before any stage ran


def test_data_seed_follows_seed_unless_set() -> None:
    assert config("seed=3").data_seed == 3
    assert config("seed=3", "data_seed=0").data_seed == 0
