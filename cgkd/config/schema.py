"""The schema of the whole configuration, registered in Hydra's ConfigStore.

``conf/config.yaml`` starts its defaults list with :data:`SCHEMA_NAME`, and the system
options with their kind's schema (``/schema/system/<kind>@_here_``), so that the composed
config is typed: an unknown key is refused naming it (``Key 'stepz' not in 'MDSettings'``)
and every value is checked against its field's type. Each default is written once: in the
settings class of its section (most are the classes the code runs with, see
:mod:`cgkd.config.derive`); the YAML files hold what differs between the options of a group.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from cgkd.config.derive import derive
from cgkd.mapping.definition import BeadKind, MappingSpec, OptimalMapSettings
from cgkd.models.force_matching import TableSettings
from cgkd.models.hipnn import HipnnTS
from cgkd.observables.settings import AnalysisSettings
from cgkd.simulation.md import MDSettings
from cgkd.simulation.sampling import SamplerSettings
from cgkd.systems import SYSTEM_KINDS
from cgkd.training.losses import LossSettings
from cgkd.training.relative_entropy import RefineSettings
from cgkd.training.screening import ScreeningSettings
from cgkd.training.trainer import TrainSettings

#: The name of the root schema in the ConfigStore (first in conf/config.yaml's defaults).
SCHEMA_NAME = "cgkd_schema"

#: The sections typed by the settings classes the code runs with.
TrainSchema = derive(TrainSettings, module=__name__, name="TrainSchema", runtime=("seed",))
NetworkSchema = derive(
    HipnnTS, module=__name__, name="NetworkSchema", runtime=("n_species", "energy_scale")
)
MDSchema = derive(MDSettings, module=__name__, name="MDSchema", runtime=("seed",))
SamplerSchema = derive(SamplerSettings, module=__name__, name="SamplerSchema")
RefineSchema = derive(RefineSettings, module=__name__, name="RefineSchema")
TableSchema = derive(TableSettings, module=__name__, name="TableSchema")
OptimalMapSchema = derive(OptimalMapSettings, module=__name__, name="OptimalMapSchema")
BeadKindSchema = derive(BeadKind, module=__name__, name="BeadKindSchema")
MappingSchema = derive(MappingSpec, module=__name__, name="MappingSchema")


def _system_schema(kind: str, name: str) -> type:
    """A system kind's spec class, seeded by the code (``data_seed``), with the kind and a
    name (the label of the data in reports)."""
    extra = (("kind", str, kind), ("name", str, kind))
    return derive(SYSTEM_KINDS[kind], module=__name__, name=name, runtime=("seed",), extra=extra)


WaterSchema = _system_schema("water", "WaterSchema")
RelineSchema = _system_schema("reline", "RelineSchema")
#: The schema of each system kind (``system.kind``).
SYSTEM_SCHEMAS = {"water": WaterSchema, "reline": RelineSchema}


@dataclass
class InputSettings:
    """Users' own AA data instead of the generated system: a topology and a trajectory with
    forces and a periodic box in any format MDAnalysis reads (TRR, TNG, H5MD, NetCDF, LAMMPS
    dump, ...).

    ``name``: the system's name in report.md, metrics.json and result.json (None: the
    trajectory file's stem). ``units``: the file's own units, only for formats that do not
    record them (LAMMPS dumps, H5MD without unit attributes): gromacs, openmm, amber,
    lammps-real, lammps-metal, or a mapping {length: angstrom|nm, force: kJ/mol/nm|
    kJ/mol/angstrom|kcal/mol/angstrom|eV/angstrom, time: fs|ps|ns}. ``format``: the
    MDAnalysis format when the suffix does not tell (e.g. LAMMPSDUMP for a .txt dump).
    ``timestep``: the MD time step in the file's time unit, for formats that store step
    numbers. Frames ``start:stop:step``, then times (ps) within [time_start, time_stop]. A
    frame with NaN/Inf or an atom force above ``max_force`` (kJ/mol/nm) is an error, or is
    left out with a warning when ``on_bad_frame`` is drop. ``masses``: amu by atom name or
    type, for topologies without (plausible) masses; a massless atom with zero force in every
    frame (a virtual site) gets no bead unless named here. ``temperature`` (K) of the data
    (None: measured from the velocities); the prior, simulate and sampler follow it.
    """

    topology: str | None = None
    trajectory: str | None = None
    name: str | None = None
    units: Any = None
    format: str | None = None
    timestep: float | None = None
    start: int | None = None
    stop: int | None = None
    step: int | None = None
    time_start: float | None = None
    time_stop: float | None = None
    max_force: float = 1.0e5
    on_bad_frame: str = "error"
    masses: Any = None  # {name: amu}; untyped, so that input.masses={...} can set it
    temperature: float | None = None


@dataclass
class TeacherSettings:
    """Who teaches: ``source`` ensemble (``n_members`` networks trained here on the mapped
    forces), torchscript (the file ``path``, forward(positions[N,3], box[3,3]) -> energy in nm
    and kJ/mol) or openmm (an all-atom OpenMM System of the same particles, identity mapping:
    ``path`` a serialized System XML, or None for the built-in system's own force field).
    Members differ in seed (seed + 1000 (k + 1)) and, with ``bootstrap``, in data (each its
    own resample of the training frames). ``n_jobs``: members trained in parallel processes
    by ``cgkd teach``; ``member``: the one ``cgkd teach-member`` trains (sweep it to train
    members as separate jobs)."""

    source: str = "ensemble"
    path: str | None = None
    n_members: int = 4
    bootstrap: bool = False
    n_jobs: int = 1
    member: int | None = None
    model: NetworkSchema = field(default_factory=NetworkSchema)  # type: ignore[valid-type]
    train: TrainSchema = field(default_factory=TrainSchema)  # type: ignore[valid-type]


@dataclass
class StudentSettings:
    """The student's (and the baseline's) network and training."""

    model: NetworkSchema = field(default_factory=NetworkSchema)  # type: ignore[valid-type]
    train: TrainSchema = field(default_factory=TrainSchema)  # type: ignore[valid-type]


@dataclass
class RepulsionPrior:
    """Pair repulsion eps (sigma_ab / r)^12, eps = ``epsilon_kt`` k_B T, sigma_ab the onset of
    the reference RDF of the species pair (the first r with g(r) > ``rdf_threshold``); switched
    off between sigma and ``switch_factor`` sigma. Bonded and 1-3 pairs are excluded."""

    enabled: bool = True
    rdf_threshold: float = 0.01
    epsilon_kt: float = 1.0
    switch_factor: float = 1.5


@dataclass
class TermPrior:
    """Harmonic terms (bonds or angles) between beads of one molecule, fitted by Boltzmann
    inversion of the reference distributions per bead-type combination."""

    enabled: bool = True


@dataclass
class PriorSettings:
    """Priors added to every model (teachers, students, baselines), fitted to the mapped
    reference."""

    repulsion: RepulsionPrior = field(default_factory=RepulsionPrior)
    bonds: TermPrior = field(default_factory=TermPrior)
    angles: TermPrior = field(default_factory=TermPrior)


@dataclass
class SoftStage:
    """Stage 1 of two-stage distillation: the student on the teacher's labels of
    teacher-sampled frames, for ``epochs``."""

    epochs: int = "${student.train.epochs}"  # type: ignore[assignment]


@dataclass
class HardStage:
    """Stage 2: the stage-1 student fine-tuned on the screened reference frames' mapped
    forces for ``epochs``, at ``learning_rate_factor`` times the learning rate, with
    ``soft_per_hard`` soft frames per hard frame mixed in."""

    epochs: int = "${student.train.epochs}"  # type: ignore[assignment]
    learning_rate_factor: float = 0.3
    soft_per_hard: float = 0.0


@dataclass
class ScheduleSettings:
    """``kind``: single (the student learns the teachers' labels of the reference frames) or
    two_stage (soft targets, then hard targets: ``soft`` and ``hard``)."""

    kind: str = "single"
    soft: SoftStage = field(default_factory=SoftStage)
    hard: HardStage = field(default_factory=HardStage)


@dataclass
class Config:
    """The whole configuration. ``stage``: the stage to run (set by ``cgkd <stage>``);
    ``seed``: of the models, the splits and the CG MD; ``data_seed``: of the generated AA
    reference; ``cache_dir``: where stage artifacts are cached; ``progress``: show progress
    bars; ``threads``: CPU threads of torch and the default of OpenMM's CPU platform (auto:
    the CPUs this process may use); ``device``: where networks train and label (auto: the
    first GPU torch sees, else the CPU; cpu, cuda or cuda:K); ``stream``: the networks read
    their training frames from the CG dataset's file batch by batch instead of loading it
    (auto: datasets over 2 GiB; true; false). None of the three changes a cache key.
    ``train_frames``: how many of the reference's training frames every model trains on
    (None: all), the first of a shuffle by ``seed`` (so smaller sets are subsets of larger
    ones); the validation and test frames stay the same."""

    stage: str = "run"
    seed: int = 0
    data_seed: int = "${seed}"  # type: ignore[assignment]
    cache_dir: str = "cache"
    progress: bool = True
    threads: Any = "auto"
    device: str = "auto"
    stream: Any = "auto"
    train_frames: int | None = None
    input: InputSettings = field(default_factory=InputSettings)
    system: Any = MISSING  # a schema of SYSTEM_SCHEMAS, chosen by the system option
    mapping: MappingSchema = MISSING  # type: ignore[valid-type]
    teacher: TeacherSettings = field(default_factory=TeacherSettings)
    student: StudentSettings = field(default_factory=StudentSettings)
    prior: PriorSettings = field(default_factory=PriorSettings)
    classical: TableSchema = field(default_factory=TableSchema)  # type: ignore[valid-type]
    refine: RefineSchema = field(default_factory=RefineSchema)  # type: ignore[valid-type]
    loss: LossSettings = field(default_factory=LossSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    sampler: SamplerSchema = field(default_factory=SamplerSchema)  # type: ignore[valid-type]
    screening: ScreeningSettings = field(default_factory=ScreeningSettings)
    simulate: MDSchema = field(default_factory=MDSchema)  # type: ignore[valid-type]
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)


def register() -> None:
    """Store the root schema and the system schemas in Hydra's ConfigStore."""
    store = ConfigStore.instance()
    store.store(name=SCHEMA_NAME, node=Config)
    for kind, schema in SYSTEM_SCHEMAS.items():
        store.store(group="schema/system", name=kind, node=schema)
