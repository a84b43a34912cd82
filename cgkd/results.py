"""The one schema of what a run records: every metric once, with its label, unit and format,
and the typed records of ``metrics.json`` (:class:`RunResult`) and of the one-line
``result.json`` (:class:`ResultLine`) with their JSON round trips.

The run report, ``cgkd compare`` and ``cgkd summarize`` take their columns from
:data:`METRICS`, so a metric has the same name and label in all three. Units are OpenMM's
(nm, ps, kJ/mol; forces kJ/mol/nm). Files of older runs still read: fields added since are
optional and come back as ``None`` (or empty).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

#: The source label of the AA-mapped reference in curves, deviations and skipped observables.
REFERENCE = "AA (mapped)"
#: The models a run trains (their stage records hold their held-out force errors), in
#: report order: the distilled student, the baseline, the baseline or student refined by
#: relative entropy and the classical pair potential.
TRAINED_MODELS = ("student", "baseline", "refined", "classical")
#: A run's full record (:class:`RunResult`).
METRICS_FILE = "metrics.json"
#: A run's one-line result (:class:`ResultLine`), which ``cgkd summarize`` collects.
RESULT_FILE = "result.json"
#: A run's observables of every source (see :func:`cgkd.observables.sources.save_curves`).
CURVES_FILE = "observables.json"

#: Deviations from the reference: {observable: {source: {metric: value}}}.
Deviations = dict[str, dict[str, dict[str, float]]]


@dataclass(frozen=True)
class Metric:
    """One number recorded per model: its ``name`` (the key in ``result.json``,
    ``comparison.json`` and ``summary.json``), its ``label`` and ``unit`` in tables and figures,
    its format spec, and for a deviation from the reference the (observable, deviation metric)
    it is read from (see :func:`cgkd.observables.compare.deviation`)."""

    name: str
    label: str
    unit: str = ""
    fmt: str = ".4g"
    deviation: tuple[str, str] | None = None

    @property
    def header(self) -> str:
        """The column header: the label with its unit, e.g. "ADF JSD (bits)"."""
        return f"{self.label} ({self.unit})" if self.unit else self.label

    def format(self, value: float | None) -> str:
        """``value`` in this metric's format, "" when not measured (None)."""
        return "" if value is None else format(value, self.fmt)


#: Every metric recorded per model, in column order.
METRICS = (
    Metric("force_rmse_mapped", "force RMSE vs mapped", "kJ/mol/nm", ".2f"),
    Metric("force_rmse_teacher", "force RMSE vs teacher labels", "kJ/mol/nm", ".2f"),
    Metric("force_rmse_soft", "force RMSE vs teacher, soft frames", "kJ/mol/nm", ".2f"),
    Metric("rdf_mad", "RDF MAD", "", ".4f", ("rdf", "MAD")),
    Metric("adf_jsd", "ADF JSD", "bits", ".5f", ("adf", "JSD")),
    Metric("cdf_jsd", "CDF JSD", "bits", ".4f", ("cdf", "JSD")),
    Metric("q6_jsd", "q6 JSD", "bits", ".4f", ("q6", "JSD")),
    Metric("tetrahedral_jsd", "tetrahedral q JSD", "bits", ".4f", ("tetrahedral", "JSD")),
    Metric(
        "tetrahedral_shift", "mean tetrahedral q - AA's", "", ".3f", ("tetrahedral", "mean diff.")
    ),
    Metric("bond_jsd", "bond length JSD", "bits", ".4f", ("bonds", "JSD")),
    Metric("bonds_outside", "bonds outside AA range", "", ".3f", ("bonds", "outside AA range")),
    Metric("d_ratio", "D ratio CG/AA", "", ".2f", ("msd", "D ratio")),
    Metric("stable_fraction", "stable fraction", "", ".2f"),
    Metric("ms_per_force_evaluation", "force evaluation", "ms", ".2f"),
    Metric("speedup_vs_ensemble", "speedup vs ensemble", "", ".2f"),
    Metric("speedup_vs_teacher", "speedup vs teacher (TorchScript)", "", ".2f"),
)
_BY_NAME = {m.name: m for m in METRICS}


def metric(name: str) -> Metric:
    """The metric called ``name`` (KeyError naming the known ones otherwise)."""
    if name not in _BY_NAME:
        raise KeyError(f"no metric {name!r}; known: {', '.join(_BY_NAME)}")
    return _BY_NAME[name]


@dataclass
class ModelResult:
    """One simulated model's entry of ``result.json``: the cache key of the model and every
    :data:`METRICS` value measured (None otherwise): held-out force RMSEs (kJ/mol/nm) vs
    mapped forces, vs its teacher labels and vs the teacher on held-out soft frames, the
    deviations from the AA reference, the fraction of stable CG runs, ms per force evaluation
    and the speedup over the teacher's."""

    key: str | None = None
    force_rmse_mapped: float | None = None
    force_rmse_teacher: float | None = None
    force_rmse_soft: float | None = None
    rdf_mad: float | None = None
    adf_jsd: float | None = None
    cdf_jsd: float | None = None
    q6_jsd: float | None = None
    tetrahedral_jsd: float | None = None
    tetrahedral_shift: float | None = None
    bond_jsd: float | None = None
    bonds_outside: float | None = None
    d_ratio: float | None = None
    stable_fraction: float | None = None
    ms_per_force_evaluation: float | None = None
    speedup_vs_ensemble: float | None = None
    speedup_vs_teacher: float | None = None

    def value(self, name: str) -> float | None:
        """The value of the metric ``name``, None when not measured."""
        return getattr(self, metric(name).name)

    def to_json(self) -> dict[str, Any]:
        """{"key": ..., metric name: value} with only the metrics measured."""
        values = {m.name: self.value(m.name) for m in METRICS}
        return {"key": self.key, **{k: v for k, v in values.items() if v is not None}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelResult:
        """The entry :meth:`to_json` wrote (unknown keys ignored)."""
        return cls(key=data.get("key"), **{m.name: data.get(m.name) for m in METRICS})


def measured(results: Iterable[ModelResult]) -> list[Metric]:
    """The :data:`METRICS` that at least one of ``results`` has, in column order."""
    results = list(results)
    return [m for m in METRICS if any(r.value(m.name) is not None for r in results)]


@dataclass
class RunFacts:
    """What a run was: the system's name, the seeds (``data_seed``: the AA reference's), the
    student's loss settings, the teacher (``teacher.source``, its number of members and the
    file of an external one), the schedule and, for two_stage, how hard frames were picked."""

    system: str
    seed: int
    data_seed: int
    loss: dict[str, Any]
    n_members: int
    teacher: str = "ensemble"
    teacher_path: str | None = None
    schedule: str = "single"
    screening: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain data; the optional facts only when set."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v for k, v in data.items() if v is not None or k not in _OPTIONAL_FACTS}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunFacts:
        """The facts :meth:`to_json` wrote, or those of a ``result.json`` line."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


_OPTIONAL_FACTS = ("teacher_path", "screening")


@dataclass
class HeldOut:
    """One trained model's errors on its held-out frames (forces kJ/mol/nm, energies kJ/mol;
    see :func:`cgkd.training.trainer.evaluate`), for a fine-tuned student the numbers before
    fine-tuning (``start_*``) and its hard and mixed-in soft frames, and in ``facts`` what
    else its stage recorded (best epoch, seconds; a teacher's member index, seed, network)."""

    force_rmse_mapped: float | None = None
    mapped_force_rms: float | None = None
    force_rmse_teacher: float | None = None
    energy_rmse_per_bead: float | None = None
    bead_energy_rmse: float | None = None
    force_rmse_soft: float | None = None
    start_force_rmse_mapped: float | None = None
    start_force_rmse_soft: float | None = None
    n_hard: int | None = None
    n_soft_mixed: int | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The facts and the numbers recorded, in one flat object."""
        numbers = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "facts"}
        return {**self.facts, **{k: v for k, v in numbers.items() if v is not None}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HeldOut:
        """The record :meth:`to_json` wrote; keys that are not numbers go to ``facts``."""
        known = {f.name for f in fields(cls)} - {"facts"}
        numbers = {k: v for k, v in data.items() if k in known}
        return cls(**numbers, facts={k: v for k, v in data.items() if k not in known})


@dataclass
class Forces:
    """Held-out force errors: per model (``student``, ``baseline``, ``classical``; with an
    ensemble teacher also ``teacher``, its member 0, and ``ensemble``), every ensemble member
    in order of its index, and the mean spread of the teachers' labels (kJ/mol/nm)."""

    models: dict[str, HeldOut] = field(default_factory=dict)
    teachers: list[HeldOut] = field(default_factory=list)
    ensemble_mean_force_std: float | None = None

    def to_json(self) -> dict[str, Any]:
        """``metrics.json``'s "forces": {"teachers": [...], model: {...}, ...}."""
        teachers = {"teachers": [t.to_json() for t in self.teachers]} if self.teachers else {}
        return {
            **teachers,
            **{name: held.to_json() for name, held in self.models.items()},
            "ensemble_mean_force_std": self.ensemble_mean_force_std,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Forces:
        """The section :meth:`to_json` wrote."""
        return cls(
            models={
                name: HeldOut.from_json(entry)
                for name, entry in data.items()
                if name not in ("teachers", "ensemble_mean_force_std")
            },
            teachers=[HeldOut.from_json(entry) for entry in data.get("teachers", [])],
            ensemble_mean_force_std=data.get("ensemble_mean_force_std"),
        )


@dataclass
class Replica:
    """One CG MD replica: its seed, whether it stayed stable, the steps it ran and why not."""

    seed: int
    stable: bool
    steps_completed: int
    message: str | None = None


@dataclass
class Stability:
    """The CG runs of one model: the fraction that stayed stable, every replica, and the
    friction of each bead type (1/ps) when it was set per type (``simulate.frictions``, or
    fitted to the AA dynamics with ``simulate.friction=matched``; ``matched_to`` then names
    the quantity matched)."""

    stable_fraction: float
    replicas: list[Replica] = field(default_factory=list)
    frictions: dict[str, float] | None = None
    matched_to: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain data."""
        return {
            "stable_fraction": self.stable_fraction,
            "replicas": [r.__dict__.copy() for r in self.replicas],
            "frictions": self.frictions,
            "matched_to": self.matched_to,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Stability:
        """The section :meth:`to_json` wrote."""
        replicas = [Replica(**r) for r in data.get("replicas", [])]
        return cls(data["stable_fraction"], replicas, data.get("frictions"), data.get("matched_to"))


@dataclass
class Timings:
    """Speeds on the machine of the run: AA MD (ns/day; None for imported data), CG MD per
    model (ns/day and ms/step, medians over replicas) and ms per force evaluation per model
    (also the teachers: ``teacher``, ``ensemble``); ``ran_on``: where the AA MD (``aa``) and
    each model's CG MD ran, in words (``CPU, 2 threads``), where the stage recorded it."""

    aa_ns_per_day: float | None = None
    cg_ns_per_day: dict[str, float] = field(default_factory=dict)
    cg_ms_per_step: dict[str, float] = field(default_factory=dict)
    ms_per_force_evaluation: dict[str, float] = field(default_factory=dict)
    ran_on: dict[str, str] = field(default_factory=dict)


def ran_on_words(record: dict[str, Any]) -> str | None:
    """Where an MD stage ran, from its record's ``platform`` and ``threads``: ``CPU, 2
    threads``, ``CUDA``; None when the record does not say (imported data, older caches)."""
    platform = record.get("platform")
    if platform is None:
        return None
    threads = record.get("threads")
    return platform if threads is None else f"{platform}, {threads} thread{'s' * (threads != 1)}"


@dataclass
class SystemFacts:
    """The CG system: its name, number of beads and of mapped AA frames."""

    name: str
    n_beads: int
    n_frames: int


@dataclass
class AnalysisFacts:
    """What the analysis adapted to the system: the reference's first shell (``radius`` r1
    in nm, mean ``coordination`` within it, ``onset`` of g(r) in nm, each species pair's
    first minimum in nm, the ``problem`` when not found), the number of bead species, the
    settings resolved from ``auto`` and the observables skipped, {observable: {source: why}}."""

    first_shell: dict[str, Any]
    n_species: int
    auto: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class TwoStage:
    """A two_stage run: how hard frames were picked, how many (and soft frames mixed in),
    the soft-stage student's held-out force RMSE vs mapped forces and vs the teacher on
    held-out soft frames before fine-tuning (kJ/mol/nm; None when not recorded)."""

    screening: str | None
    n_hard: int | None
    n_soft_mixed: int | None
    soft_only_force_rmse_mapped: float | None
    soft_only_force_rmse_soft: float | None = None


@dataclass
class ResultLine:
    """``result.json``: a run's facts and one :class:`ModelResult` per simulated model, with
    the reference's first-shell radius r1 (nm), the settings resolved from ``auto`` and the
    observables skipped."""

    run: RunFacts
    models: dict[str, ModelResult]
    first_shell: float | None = None
    auto: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)
    two_stage: TwoStage | None = None

    def to_json(self) -> dict[str, Any]:
        """One flat JSON object, the layout ``cgkd summarize`` reads."""
        stage = {} if self.two_stage is None else self.two_stage.__dict__
        return {
            **self.run.to_json(),
            **stage,
            "first_shell": self.first_shell,
            "auto": self.auto,
            "skipped": self.skipped,
            "models": {name: entry.to_json() for name, entry in self.models.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResultLine:
        """The line :meth:`to_json` wrote, or an older one (without the analysis facts)."""
        two_stage = None
        if "n_hard" in data:
            two_stage = TwoStage(
                **{f.name: data.get(f.name) for f in fields(TwoStage)},
            )
        return cls(
            run=RunFacts.from_json(data),
            models={name: ModelResult.from_json(e) for name, e in data["models"].items()},
            first_shell=data.get("first_shell"),
            auto=data.get("auto", {}),
            skipped=data.get("skipped", {}),
            two_stage=two_stage,
        )


@dataclass
class RunResult:
    """``metrics.json``: everything a run records. ``observables``: every deviation of every
    model from the AA reference; ``scalars``: {quantity: {source: {"value", "error",
    "unit"}}}; ``keys``: the cache key of each simulated model; ``artifacts``: the files
    behind the numbers (the AA record, the CG dataset, the models)."""

    run: RunFacts | None
    system: SystemFacts
    analysis: AnalysisFacts | None
    observables: Deviations
    scalars: dict[str, dict[str, dict[str, Any]]]
    forces: Forces
    timings: Timings
    stability: dict[str, Stability]
    keys: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)

    def model_result(self, model: str) -> ModelResult:
        """The :class:`ModelResult` of a simulated model, from this record's sections."""
        held = self.forces.models.get(model, HeldOut())
        ms = self.timings.ms_per_force_evaluation
        entry = ModelResult(
            key=self.keys.get(model),
            force_rmse_mapped=held.force_rmse_mapped,
            force_rmse_teacher=held.force_rmse_teacher,
            force_rmse_soft=held.force_rmse_soft,
            stable_fraction=(
                self.stability[model].stable_fraction if model in self.stability else None
            ),
            ms_per_force_evaluation=ms.get(model),
        )
        for reference in ("ensemble", "teacher"):
            if reference in ms and ms.get(model):  # the cgkd ensemble, else an external teacher
                setattr(entry, f"speedup_vs_{reference}", ms[reference] / ms[model])
                break
        for m in METRICS:
            if m.deviation is not None:
                observable, name = m.deviation
                value = self.observables.get(observable, {}).get(model, {}).get(name)
                setattr(entry, m.name, value)
        return entry

    def line(self) -> ResultLine:
        """The one-line result of this run: one entry per simulated model."""
        if self.run is None:
            raise ValueError("this record has no run facts (written before they were kept)")
        analysis = self.analysis or AnalysisFacts({"radius": None}, 0)
        return ResultLine(
            run=self.run,
            models={model: self.model_result(model) for model in self.stability},
            first_shell=analysis.first_shell["radius"],
            auto=analysis.auto,
            skipped=analysis.skipped,
            two_stage=self._two_stage(),
        )

    def _two_stage(self) -> TwoStage | None:
        assert self.run is not None
        if self.run.schedule == "single":
            return None
        student = self.forces.models["student"]
        return TwoStage(
            screening=self.run.screening,
            n_hard=student.n_hard,
            n_soft_mixed=student.n_soft_mixed,
            soft_only_force_rmse_mapped=student.start_force_rmse_mapped,
            soft_only_force_rmse_soft=student.start_force_rmse_soft,
        )

    def to_json(self) -> dict[str, Any]:
        """``metrics.json``'s content."""
        return {
            "run": None if self.run is None else self.run.to_json(),
            "system": self.system.__dict__,
            "analysis": None if self.analysis is None else self.analysis.__dict__,
            "observables": self.observables,
            "scalars": self.scalars,
            "forces": self.forces.to_json(),
            "timings": self.timings.__dict__,
            "stability": {name: s.to_json() for name, s in self.stability.items()},
            "keys": self.keys,
            "artifacts": self.artifacts,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunResult:
        """The record :meth:`to_json` wrote, or an older ``metrics.json`` (no run facts,
        keys or analysis facts: None or empty)."""
        run, analysis = data.get("run"), data.get("analysis")
        return cls(
            run=None if run is None else RunFacts.from_json(run),
            system=SystemFacts(**data["system"]),
            analysis=None if analysis is None else AnalysisFacts(**analysis),
            observables=data["observables"],
            scalars=data.get("scalars", {}),
            forces=Forces.from_json(data["forces"]),
            timings=Timings(**data["timings"]),
            stability={name: Stability.from_json(s) for name, s in data["stability"].items()},
            keys=data.get("keys", {}),
            artifacts=data.get("artifacts", {}),
        )
