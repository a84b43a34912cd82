"""The config schema: every group option and experiment composes into a typed config whose
sections convert to the settings classes; typos and wrong types are refused naming the key;
each default is written once (in its settings class), and the YAML files repeat none."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf

from cgkd.config import SYSTEM_SCHEMAS, to_settings, valid_keys
from cgkd.config import schema as schemas
from cgkd.mapping.definition import MappingSpec
from cgkd.models.force_matching import TableSettings
from cgkd.models.hipnn import HipnnTS
from cgkd.observables.settings import AnalysisSettings
from cgkd.simulation.md import MDSettings
from cgkd.simulation.sampling import SamplerSettings
from cgkd.stages import Context
from cgkd.stages.distill import student_loss
from cgkd.stages.sample import sampler_settings
from cgkd.stages.simulate import md_settings
from cgkd.systems import SYSTEM_KINDS
from cgkd.systems.reline import RelineSpec
from cgkd.systems.water import WaterBoxSpec
from cgkd.training.losses import LossSettings, LossWeights
from cgkd.training.screening import ScreeningSettings
from cgkd.training.trainer import TrainSettings

CONF = Path(__file__).resolve().parent.parent / "conf"
#: Each config group, the override that picks an option and the schema of its node.
GROUPS = {
    "system": ("system={}", None),  # by kind: SYSTEM_SCHEMAS
    "mapping": ("mapping={}", schemas.MappingSchema),
    "model": ("model@student.model={}", schemas.NetworkSchema),
    "train": ("train@student.train={}", schemas.TrainSchema),
    "loss": ("loss={}", LossSettings),
    "schedule": ("schedule={}", schemas.ScheduleSettings),
    "sampler": ("sampler={}", schemas.SamplerSchema),
    "screening": ("screening={}", ScreeningSettings),
    "simulate": ("simulate={}", schemas.MDSchema),
    "analysis": ("analysis={}", AnalysisSettings),
}
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]
EXPERIMENTS = sorted(path.stem for path in (CONF / "experiment").glob("*.yaml"))


def config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def check_sections(cfg: DictConfig) -> None:
    """Every section converts to its settings class with the config's values, and the stages'
    builders run on it."""
    assert isinstance(to_settings(cfg.system, seed=7), SYSTEM_KINDS[cfg.system.kind])
    assert to_settings(cfg.system, seed=7).seed == 7
    assert isinstance(to_settings(cfg.mapping), MappingSpec)
    for role in (cfg.teacher, cfg.student):
        train = dataclasses.asdict(to_settings(role.train, seed=3))
        assert train == {**OmegaConf.to_container(role.train, resolve=True), "seed": 3}
        HipnnTS(n_species=2, **OmegaConf.to_container(role.model, resolve=True))
    settings = to_settings(cfg.simulate, seed=cfg.seed)
    assert isinstance(settings, MDSettings) and settings.models == tuple(cfg.simulate.models)
    context = Context.unchecked(cfg)
    assert md_settings(context) == settings
    assert sampler_settings(context).temperatures[0] == pytest.approx(cfg.simulate.temperature)
    assert isinstance(to_settings(cfg.classical), TableSettings)
    loss, train = to_settings(cfg.loss), cfg.student.train
    assert loss.weights(train.error, train.hierarchicality) == student_loss(context)
    assert isinstance(to_settings(cfg.screening), ScreeningSettings)
    assert isinstance(to_settings(cfg.analysis), AnalysisSettings)
    assert OmegaConf.to_container(cfg.analysis, resolve=True)["rdf"]["r_max"] > 0


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_every_group_option_composes_and_converts(group: str, option: str) -> None:
    check_sections(config(GROUPS[group][0].format(option)))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_converts_and_pickles(experiment: str) -> None:
    cfg = config(f"experiment={experiment}")
    check_sections(cfg)
    again = pickle.loads(pickle.dumps(cfg))  # what the joblib and submitit launchers do
    assert OmegaConf.to_container(again, resolve=True) == OmegaConf.to_container(cfg, resolve=True)
    assert OmegaConf.get_type(again.simulate) is schemas.MDSchema


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("teacher.train.learnin_rate=1", "Key 'learnin_rate' not in 'TrainSettings'"),
        ("simulate.stepz=5", "Key 'stepz' not in 'MDSettings'"),
        ("system.n_choline_chloride=3", "Key 'n_choline_chloride' not in 'WaterBoxSpec'"),
        ("mapping.optimal.ridg=1", "Key 'ridg' not in 'OptimalMapSettings'"),
        ("analysis.rdf.nbins=3", "Key 'nbins' not in 'RDFSettings'"),
        ("simulate.steps=many", "'many' of type 'str' could not be converted to Integer"),
        ("teacher.n_members=2.5", "'2.5' of type 'float' could not be converted to Integer"),
        ("loss.w_f=strong", "'strong' of type 'str' could not be converted to Float"),
        ("simulate.minimize=perhaps", "'perhaps' is not a valid bool"),
    ],
)
def test_typos_and_wrong_types_are_refused_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigCompositionException) as error:
        config(override)
    key = override.lstrip("+").split("=")[0]
    assert key in str(error.value)
    assert message in str(error.value.__cause__)


def test_an_unknown_key_error_names_the_valid_keys() -> None:
    with pytest.raises(ConfigCompositionException) as error:
        config("simulate.stepz=5")
    hint = valid_keys(error.value)
    assert hint is not None and hint.startswith(
        "simulate takes: calibration_frictions, calibration_refinements, calibration_steps"
    )
    assert "steps" in hint and "seed" not in hint  # the seed is the code's
    with pytest.raises(ConfigCompositionException) as error:
        config("simulate.steps=many")
    assert valid_keys(error.value) is None


def test_values_are_typed() -> None:
    cfg = config("loss.w_E=1", "simulate.steps=600", "teacher.member=2")
    assert type(cfg.loss.w_E) is float and cfg.simulate.steps == 600 and cfg.teacher.member == 2
    with pytest.raises(Exception, match="Key 'stepz' not in 'MDSettings'"):
        cfg.simulate.stepz = 5


def test_system_schemas_cover_every_kind_and_follow_data_seed() -> None:
    assert set(SYSTEM_SCHEMAS) == set(SYSTEM_KINDS)
    cfg = config("system=reline", "seed=4")
    assert to_settings(cfg.system, seed=cfg.data_seed) == RelineSpec(seed=4)


def test_dataclass_defaults_are_the_composed_defaults() -> None:
    """The options that only name their settings class compose to its defaults."""
    cfg = config("model@student.model=hipnn_ts", "train@teacher.train=student")
    assert to_settings(cfg.system, seed=0) == WaterBoxSpec()
    assert to_settings(config("system=reline").system, seed=0) == RelineSpec()
    assert to_settings(cfg.teacher.train, seed=0) == TrainSettings()
    assert to_settings(cfg.student.train, seed=0) == TrainSettings()
    network = {
        name: p.default
        for name, p in inspect.signature(HipnnTS).parameters.items()
        if name not in ("n_species", "energy_scale")
    }
    assert OmegaConf.to_container(cfg.student.model) == network
    assert to_settings(cfg.loss) == LossSettings()
    assert to_settings(cfg.loss).weights("rmse_mae", 0.0) == LossWeights(
        mapped_forces=0.0, teacher_forces=1.0
    )
    assert to_settings(cfg.screening) == ScreeningSettings()
    assert to_settings(cfg.analysis) == AnalysisSettings()
    assert to_settings(cfg.simulate, seed=0) == MDSettings(temperature=300.0)
    conditions = {"temperature": 300.0, "timestep": 0.005, "platform": "auto", "threads": None}
    assert to_settings(cfg.sampler) == SamplerSettings(**conditions)
    assert to_settings(cfg.classical) == TableSettings(cutoff=cfg.student.model.cutoff)
    mapping = to_settings(cfg.mapping)
    assert mapping == MappingSpec("molecule_com", mapping.beads)
    assert cfg.schedule == OmegaConf.structured(schemas.ScheduleSettings)


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        found = {}
        for key, value in node.items():
            found.update(_leaves(value, f"{prefix}{key}."))
        return found
    return {prefix.rstrip("."): node}


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_no_yaml_file_repeats_a_default(group: str, option: str) -> None:
    """Each value a group option sets differs from its schema's default (or is an
    interpolation): the default is written once, in the settings class."""
    written = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{option}.yaml"))
    written = written or {}
    written.pop("defaults", None)
    schema = GROUPS[group][1]
    if schema is None:
        schema = SYSTEM_SCHEMAS[config(f"system={option}").system.kind]
    defaults = _leaves(OmegaConf.to_container(OmegaConf.structured(schema)))
    for key, value in _leaves(written).items():
        if isinstance(value, str) and value.startswith("${"):
            continue
        if key in ("name", "kind", "method", "beads"):  # what tells the options apart
            continue
        assert defaults.get(key) != value, f"{group}/{option}.yaml repeats {key}: {value}"


def test_mappings_by_name_are_set_from_the_command_line() -> None:
    """Values by atom or bead name (input.masses, simulate.frictions) take a whole mapping as
    one override, as the docs show."""
    cfg = config("input.masses={OW: 16.0, HW: 1.008}", "simulate.frictions={W: 5.0}")
    assert OmegaConf.to_container(cfg.input.masses) == {"OW": 16.0, "HW": 1.008}
    assert to_settings(cfg.simulate, seed=0).frictions == {"W": 5.0}
    assert to_settings(config().simulate, seed=0).frictions is None
