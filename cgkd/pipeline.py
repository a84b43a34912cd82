"""The stages chained, each one cached: generate -> map -> prior -> teacher members -> teach
-> distill -> simulate -> analyze. With ``schedule=two_stage``, distill first runs sample
(teacher MD, labelled: soft targets) and screen (the reference frames that get hard labels);
the teacher is the ensemble trained here or an external one (``teacher.source``).

Every stage writes into ``<cache_dir>/<stage>-<key>/`` where the key hashes the
configuration that determines its result (its own section plus its inputs' keys), so
re-running reuses what is already there and a sweep over loss weights retrains only
the students. A stage directory is complete only once its ``done.json`` exists; it
records the configuration that made it.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import openmm
import torch
from joblib import Parallel, delayed
from MDAnalysis import Universe
from omegaconf import DictConfig, OmegaConf

from cgkd.io.atoms import atom_masses
from cgkd.io.frames import Frames
from cgkd.io.h5md import H5MDReader, read_h5md, read_h5md_bonds
from cgkd.io.trajectory import (
    FrameScreen,
    FrameSelection,
    import_trajectory,
    open_trajectory,
    sample_frames,
)
from cgkd.mapping.apply import map_trajectory, topology_universe
from cgkd.mapping.constraints import spread_frames, virtual_sites
from cgkd.mapping.definition import MappingSpec, compile_mapping
from cgkd.models.checkpoint import build_potential, load_potential, merge_members, save_potential
from cgkd.models.force_matching import TableSettings, fit_pair_table
from cgkd.models.neighbors import perpendicular_widths
from cgkd.models.potential import CGPotential
from cgkd.models.priors import CGTopology, build_priors, fit_priors
from cgkd.simulation.export import export_flavours, export_torchscript, fused_path
from cgkd.simulation.md import MDSettings, model_file, run_replicas
from cgkd.simulation.native import export_native
from cgkd.simulation.sampling import SamplerSettings
from cgkd.simulation.teachers import EnsembleTeacher, OpenMMTeacher, Teacher, TorchScriptTeacher
from cgkd.systems import spec_from_config
from cgkd.systems.reference_md import generate as generate_system
from cgkd.training.curves import plot_loss_curves
from cgkd.training.dataset import Splits, Targets, TrainingData
from cgkd.training.losses import LossWeights
from cgkd.training.screening import METHODS, frame_descriptors, select_frames
from cgkd.training.trainer import TrainSettings, evaluate, train_potential
from cgkd.units import kt

log = logging.getLogger(__name__)


@dataclass
class StageDir:
    """A cached stage's directory, key and completeness.

    Several processes (a Hydra multirun, parallel ensemble members) may reach the same stage
    at once: :meth:`run` holds a lock (``<cache_dir>/.locks/<stage>-<key>.lock``) while it
    checks and builds the stage, so one process builds it and the others reuse the result.
    """

    path: Path
    key: str

    @property
    def done(self) -> bool:
        """Whether the stage finished (its done.json exists)."""
        return (self.path / "done.json").is_file()

    def begin(self, keep: tuple[str, ...] = ()) -> Path:
        """Start (or restart) the stage: an empty directory, except for the files named in
        ``keep`` (e.g. a training checkpoint to resume from)."""
        self._clear(keep)
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path

    def abandon(self, keep: tuple[str, ...] = ()) -> None:
        """After a failed build: remove everything but ``keep`` (what a rerun resumes from),
        and the directory itself when nothing is left."""
        self._clear(keep)
        if self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

    def _clear(self, keep: tuple[str, ...]) -> None:
        if not self.path.exists():
            return
        for entry in self.path.iterdir():
            if entry.name in keep:
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def finish(self, config: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
        """Write config.yaml and, last, done.json (atomic) with ``record``."""
        (self.path / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
        _write_json(self.path / "done.json", record)
        return record

    def record(self) -> dict[str, Any]:
        """The record of a finished stage."""
        return json.loads((self.path / "done.json").read_text())

    def run(
        self,
        build: Callable[[Path], tuple[dict[str, Any], dict[str, Any]]],
        keep: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """The stage's record: reused when done, else ``build(directory)`` returns
        ``(config, record)`` for :meth:`finish`. Holds the stage's lock throughout. A build
        that fails (or is interrupted) leaves only ``keep`` behind: nothing half-written."""
        locks = self.path.parent / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{self.path.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.done:
                return self.record()
            try:
                config, record = build(self.begin(keep))
            except BaseException:
                self.abandon(keep)
                raise
            return self.finish(config, {"key": self.key, **record})


def _write_json(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2, default=str))
    os.replace(temporary, path)


def _stage(cfg: DictConfig, name: str, key_data: dict[str, Any]) -> StageDir:
    text = json.dumps(key_data, sort_keys=True, default=str)
    key = hashlib.sha256(text.encode()).hexdigest()[:12]
    return StageDir(Path(cfg.cache_dir) / f"{name}-{key}", key)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def generate(cfg: DictConfig) -> dict[str, Any]:
    """AA reference trajectory with forces (H5MD): a built-in system or the user's files."""
    if cfg.input.trajectory is not None:
        imported = _import(cfg)
        # The data's temperature replaces the unused built-in system's, so that the prior,
        # simulate.temperature and sampler.temperature (which follow it unless set) use it.
        cfg.system.temperature = imported["temperature"]
        return imported
    system = _plain(cfg.system)

    seed = int(cfg.data_seed)

    def build(out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        spec = spec_from_config(system, seed=seed)
        log.info("generating the AA reference: %s", system["name"])
        made = generate_system(spec, out, config={"system": system}, progress=cfg.progress)
        return {"system": system, "seed": seed}, made.to_dict()

    return _stage(cfg, "generate", {"system": system, "seed": seed}).run(build)


def _import(cfg: DictConfig) -> dict[str, Any]:
    """The user's topology + trajectory, selected, screened and converted into H5MD."""
    # input.name only labels the report: it is not part of the data or of the cache key.
    source = {k: v for k, v in _plain(cfg.input).items() if k != "name"}
    topology, trajectory = Path(source["topology"] or ""), Path(source["trajectory"])
    for path in (trajectory, topology):
        if not path.is_file():
            raise FileNotFoundError(
                f"input file {path} does not exist; fix input.topology/input.trajectory"
            )
    files = {
        str(path.resolve()): [path.stat().st_size, path.stat().st_mtime]
        for path in (topology, trajectory)
    }

    def build(out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        topology_copy = out / f"aa_topology{''.join(topology.suffixes)}"
        shutil.copyfile(topology, topology_copy)
        imported = import_trajectory(
            topology,
            trajectory,
            out / "aa.h5md",
            selection=FrameSelection(**{k: source[k] for k in _SELECTION_KEYS}),
            units=source["units"],
            format=source["format"],
            timestep=source["timestep"],
            screen=FrameScreen(max_force=source["max_force"], on_bad_frame=source["on_bad_frame"]),
            masses=source["masses"],
            temperature=source["temperature"],
            require_temperature=True,
            config={"input": source},
            progress=cfg.progress,
        )
        record = {
            "trajectory": str(imported.path),
            "topology": str(topology_copy),
            "n_atoms": imported.n_atoms,
            "n_frames": imported.n_frames,
            "n_dropped": imported.n_dropped,
            "temperature": imported.temperature,
            "temperature_from": imported.temperature_from,
        }
        return {"input": source, "files": files}, record

    return _stage(cfg, "import", {"input": source, "files": files}).run(build)


_SELECTION_KEYS = ("start", "stop", "step", "time_start", "time_stop")


def map_stage(cfg: DictConfig) -> dict[str, Any]:
    """CG dataset (H5MD): bead positions, mapped forces, boxes, types, masses, CG bonds."""
    aa = generate(cfg)
    mapping = _plain(cfg.mapping)

    def build(out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        spec = MappingSpec.from_config(mapping)
        mapped = map_trajectory(
            aa["topology"],
            aa["trajectory"],
            out / "cg.h5md",
            spec,
            config={"aa": aa},
            progress=cfg.progress,
        )
        log.info("mapping %s:\n%s", spec.describe(), mapped.summary)
        record = {
            "dataset": str(out / "cg.h5md"),
            "n_frames": mapped.n_frames,
            "n_beads": mapped.n_beads,
            "type_names": mapped.type_names,
        }
        return {"mapping": mapping, "aa": aa}, record

    # cg_format 2: CG bonds are recorded (datasets mapped before that lack them).
    key = {"aa": aa["key"], "mapping": mapping, "cg_format": 2}
    return _stage(cfg, "map", key).run(build)


def beads(cfg: DictConfig) -> dict[str, Any]:
    """Dry run of the mapping: its bead summary, logged, without importing or mapping frames.

    Your own data: on ``input.topology``, with masses and virtual sites judged from a few
    frames of ``input.trajectory``. A built-in system is generated first (or reused).
    """
    spec = MappingSpec.from_config(_plain(cfg.mapping))
    if cfg.input.trajectory is None:
        aa = generate(cfg)
        with H5MDReader(aa["trajectory"]) as reader:
            sites = virtual_sites(reader.masses, spread_frames(reader).forces)
            universe = topology_universe(aa["topology"], reader)
            compiled = compile_mapping(spec, universe, reader.masses, sites)
    else:
        source = _plain(cfg.input)
        opened = open_trajectory(
            source["topology"] or "",
            source["trajectory"],
            units=source["units"],
            format=source["format"],
            timestep=source["timestep"],
        )
        selection = FrameSelection(**{k: source[k] for k in _SELECTION_KEYS})
        masses = atom_masses(opened, sample_frames(opened, selection), source["masses"])
        universe = Universe(str(source["topology"]))
        compiled = compile_mapping(spec, universe, masses.values, masses.virtual_sites)
    log.info("mapping %s:\n%s", spec.describe(), compiled.summary())
    return {
        "mapping": spec.describe(),
        "n_beads": compiled.n_beads,
        "type_names": compiled.type_names,
    }


def _splits(cfg: DictConfig, n_frames: int, train_cfg: DictConfig) -> Splits:
    return Splits.random(n_frames, train_cfg.val_fraction, train_cfg.test_fraction, cfg.seed)


def _settings(train_cfg: DictConfig, seed: int) -> TrainSettings:
    fields = {
        k: v
        for k, v in _plain(train_cfg).items()
        if k not in ("val_fraction", "test_fraction", "error", "hierarchicality")
    }
    return TrainSettings(**fields, seed=seed)


def _loss_options(train_cfg: DictConfig) -> dict[str, Any]:
    """The loss settings that live in a train section: error kind and hierarchicality weight."""
    return {"error": train_cfg.error, "hierarchicality": train_cfg.hierarchicality}


def prior_stage(cfg: DictConfig) -> dict[str, Any]:
    """Priors fitted to the mapped reference at its temperature (``system.temperature``, the
    imported data's for your own): repulsion onsets, bonds and angles."""
    cg = map_stage(cfg)
    prior_cfg = _plain(cfg.prior)
    temperature = float(cfg.system.temperature)

    def build(out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        frames = read_h5md(cg["dataset"])
        topology = CGTopology(read_h5md_bonds(cg["dataset"]), frames.types, frames.type_names)
        repulsion = prior_cfg["repulsion"]
        half_width = 0.49 * float(perpendicular_widths(torch.as_tensor(frames.boxes)).min())
        prior = fit_priors(
            frames.positions,
            frames.boxes,
            topology,
            kt(temperature),
            repulsion=repulsion if repulsion["enabled"] else None,
            bonds=prior_cfg["bonds"]["enabled"],
            angles=prior_cfg["angles"]["enabled"],
            r_max=min(half_width, 1.0),
        )
        _write_json(out / "prior.json", prior)
        log.info("priors: %s", _describe_prior(prior, frames.type_names))
        config = {"prior": prior_cfg, "cg": cg["key"], "temperature": temperature}
        return config, {"prior": str(out / "prior.json")}

    key = {"cg": cg["key"], "prior": prior_cfg, "temperature": temperature}
    return _stage(cfg, "prior", key).run(build)


def _describe_prior(prior: dict[str, Any], type_names: list[str]) -> str:
    parts = []
    if prior["repulsion"] is not None:
        sigma = np.asarray(prior["repulsion"]["sigma"])
        onsets = ", ".join(
            f"{type_names[a]}-{type_names[b]} {sigma[a, b]:.3f}"
            for a in range(len(type_names))
            for b in range(a, len(type_names))
        )
        parts.append(f"repulsion onsets (nm) {onsets}")
    for term, unit, scale in (("bonds", "nm", 1.0), ("angles", "deg", 180.0 / np.pi)):
        if prior[term] is not None:
            fitted = prior[term]
            parts.append(
                f"{term} "
                + ", ".join(
                    f"{name} {centre * scale:.3g} {unit} (k {k:.3g})"
                    for name, centre, k in zip(
                        fitted["names"], fitted["centre"], fitted["k"], strict=True
                    )
                )
            )
    return "; ".join(parts) or "none"


def _prior(priors: dict[str, Any]) -> dict[str, Any] | None:
    """The fitted prior dict of a prior stage record (None when every prior is switched off)."""
    prior = json.loads(Path(priors["prior"]).read_text())
    if prior["repulsion"] is None and prior["bonds"] is None and prior["angles"] is None:
        return None
    return prior


def _member_seed(cfg: DictConfig, member: int) -> int:
    return int(cfg.seed) + 1000 * (member + 1)


def teach_member(cfg: DictConfig, member: int | None = None) -> dict[str, Any]:
    """One teacher of the ensemble (``teacher.member``, or ``member``), trained on mapped
    forces; its own cached stage, so members can be separate jobs of a Hydra multirun."""
    member = cfg.teacher.member if member is None else member
    n_members = int(cfg.teacher.n_members)
    if member is None or not 0 <= int(member) < n_members:
        raise ValueError(
            f"teacher.member={member} is not a member index; use 0..{n_members - 1} "
            f"(e.g. cgkd teach-member --multirun teacher.member=0,1,2,3)"
        )
    member = int(member)
    cg, priors = map_stage(cfg), prior_stage(cfg)
    # What makes a member: not which one is asked for, nor how many there are or how they run.
    ignored = ("member", "n_members", "n_jobs", "source", "path")
    teacher = {k: v for k, v in _plain(cfg.teacher).items() if k not in ignored}
    seed = _member_seed(cfg, member)

    def build(out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        frames = read_h5md(cg["dataset"])
        prior = _prior(priors)
        splits = _splits(cfg, frames.n_frames, cfg.teacher.train)
        if teacher["bootstrap"]:
            # Each member sees its own resample (with replacement) of the training frames.
            rng = np.random.default_rng(seed)
            splits = Splits(
                train=np.sort(rng.choice(splits.train, len(splits.train))),
                val=splits.val,
                test=splits.test,
            )
        network = {**teacher["model"], "n_species": len(frames.type_names)}
        potential = build_potential([network], prior, seeds=[seed])
        result = train_potential(
            potential,
            TrainingData.from_frames(frames),
            splits,
            LossWeights(**_loss_options(cfg.teacher.train)),
            _settings(cfg.teacher.train, seed),
            description=f"teacher.member={member} of {n_members}",
            progress=cfg.progress,
            checkpoint=out / "checkpoint.pt",
        )
        save_potential(out / "teacher.pt", potential, [network], prior, {"history": result.history})
        record = {
            "member": member,
            "seed": seed,
            "model": str(out / "teacher.pt"),
            "network": network,
            "best_epoch": result.best_epoch,
            "seconds": result.seconds,
            **result.test_metrics,
            "history": result.history,
        }
        return {"teacher": teacher, "member": member, "cg": cg["key"]}, record

    key = {"cg": cg["key"], "prior": priors["key"], "teacher": teacher, "seed": seed}
    return _stage(cfg, "teacher", key).run(build, keep=("checkpoint.pt",))


def teach(cfg: DictConfig) -> dict[str, Any]:
    """Teacher ensemble: K HIP-NN-TS models trained on mapped forces only, with fitted priors.

    Members already trained (e.g. by ``cgkd teach-member --multirun``) are reused; the rest
    train here, one after another or in ``teacher.n_jobs`` parallel processes.
    """
    cg, priors = map_stage(cfg), prior_stage(cfg)
    n_members = int(cfg.teacher.n_members)
    _train_members(cfg, n_members)
    members = [teach_member(cfg, k) for k in range(n_members)]

    def build(out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        frames = read_h5md(cg["dataset"])
        loaded = _load_members(members)
        ensemble, kwargs = merge_members(loaded)
        prior = _prior(priors)
        save_potential(out / "ensemble.pt", ensemble, kwargs, prior)
        species = torch.as_tensor(frames.types)
        meta = {"type_names": frames.type_names, "config": _plain(cfg.teacher)}
        for k, (potential, _) in enumerate(loaded):
            export_flavours(potential, species, out / f"teacher_{k}.ts", meta)
        export_flavours(ensemble, species, out / "ensemble.ts", meta)
        plot_loss_curves(
            {f"teacher_{k}": m["history"] for k, m in enumerate(members)},
            out / "loss.png",
            title=f"{n_members} teachers",
        )
        splits = _splits(cfg, frames.n_frames, cfg.teacher.train)
        held_out = evaluate(ensemble, TrainingData.from_frames(frames), splits.test)
        for name, metrics in [
            *((f"teacher_{m['member']}", m) for m in members),
            ("ensemble", held_out),
        ]:
            log.info(
                "%s: held-out force RMSE %.2f kJ/mol/nm = %.3f x the RMS mapped force",
                name,
                metrics["force_rmse_mapped"],
                metrics["force_rmse_mapped"] / metrics["mapped_force_rms"],
            )
        record = {
            "dir": str(out),
            "splits": splits.to_dict(),
            "members": [{k: v for k, v in m.items() if k != "key"} for m in members],
            "ensemble": held_out,
            "prior": prior,
        }
        return {"teacher": _plain(cfg.teacher), "cg": cg["key"]}, record

    key = {"members": [m["key"] for m in members]}
    return _stage(cfg, "teach", key).run(build)


def _load_members(
    records: list[dict[str, Any]],
) -> list[tuple[CGPotential, list[dict[str, Any]]]]:
    """The trained teachers of member stage records, each with its network settings, as
    ``merge_members`` takes them."""
    return [(load_potential(Path(m["model"]))[0], [m["network"]]) for m in records]


def _train_members(cfg: DictConfig, n_members: int) -> None:
    """Train the members not yet cached, in ``teacher.n_jobs`` processes (1: in this one)."""
    n_jobs = int(cfg.teacher.n_jobs)
    if n_jobs <= 1 or n_members == 1:
        return  # teach() trains them in turn
    threads = max(1, torch.get_num_threads() // n_jobs)  # the run's threads, shared
    container = OmegaConf.to_container(cfg, resolve=True)
    Parallel(n_jobs=min(n_jobs, n_members))(
        delayed(_member_job)(container, k, threads) for k in range(n_members)
    )


def _member_job(config: dict[str, Any], member: int, threads: int) -> str:
    """Train one member in a worker process with ``threads`` torch threads."""
    torch.set_num_threads(threads)
    return teach_member(OmegaConf.create(config), member)["key"]


def distill(cfg: DictConfig) -> dict[str, Any]:
    """The student and the baseline (student architecture on mapped forces only).

    ``schedule.kind`` single: the student learns the teacher's labels of the reference frames
    (``targets``). two_stage: it learns the teacher's labels of teacher-sampled frames
    (:func:`sample`, ``targets``), then is fine-tuned on the mapped forces of the screened
    reference frames (:func:`screen`, ``selection``); the baseline trains on those frames alone.
    Both then record ``force_rmse_soft``, their error against the teacher on the soft stage's
    held-out frames (the fine-tuned student also ``start_force_rmse_soft``): how much of the
    teacher fine-tuning left, next to a model that never saw it.
    """
    kind = cfg.schedule.kind
    if kind not in SCHEDULES:
        raise ValueError(f"schedule.kind={kind!r} is unknown; use one of {list(SCHEDULES)}")
    cg = map_stage(cfg)
    frames = read_h5md(cg["dataset"])
    splits, prior = reference_splits(cfg, frames), _prior(prior_stage(cfg))
    teacher = teacher_model(cfg, frames)
    weights = student_loss(cfg, teacher)
    inputs = {**teacher.key, "loss": _plain(cfg.loss)}
    baseline_splits, baseline_inputs = splits, {"cg": cg["key"]}
    soft_test = None
    if kind == "single":
        targets = _label(cfg, teacher, cg, frames)
        labels = Targets(**np.load(targets["targets"]))
        data = TrainingData.from_frames(frames, labels)
        models = {
            "targets": targets,
            "student": _train_student(cfg, "student", data, splits, prior, weights, inputs),
        }
    else:
        soft, selection = sample(cfg, teacher), screen(cfg, teacher)
        soft_frames, soft_targets = _soft_frames(soft, frames)
        soft_data = TrainingData.from_frames(soft_frames, soft_targets)
        train = cfg.student.train  # the soft frames split like the reference's, by the seed
        soft_splits = Splits.random(
            soft_frames.n_frames, train.val_fraction, train.test_fraction, cfg.seed
        )
        epochs = int(cfg.schedule.soft.epochs)  # stage 1: the student on the soft targets
        stage_one = _train_student(
            cfg,
            "soft_student",
            soft_data,
            soft_splits,
            prior,
            weights,
            {**inputs, "soft": soft["key"], "epochs": epochs},
            settings=replace(_settings(train, cfg.seed), epochs=epochs),
        )
        soft_test = (soft_data, soft_splits.test)
        models = {
            "targets": soft,
            "selection": selection,
            "soft_student": stage_one,
            "student": _fine_tune(
                cfg, stage_one, soft_frames, soft_test, selection, frames, splits, prior
            ),
        }
        baseline_splits = Splits(np.asarray(selection["indices"]), splits.val, splits.test)
        baseline_inputs["hard"] = selection["key"]
    models["baseline"] = _train_student(
        cfg,
        "baseline",
        TrainingData.from_frames(frames),
        baseline_splits,
        prior,
        LossWeights(**_loss_options(cfg.student.train)),
        baseline_inputs,
        soft_test=soft_test,
    )
    return models


#: Distillation schedules (``schedule.kind``).
SCHEDULES = ("single", "two_stage")


def reference_splits(cfg: DictConfig, frames: Frames) -> Splits:
    """The reference frames' train/val/test splits (the teachers' and every student's)."""
    return _splits(cfg, frames.n_frames, cfg.teacher.train)


def student_loss(cfg: DictConfig, teacher: Teacher | None = None) -> LossWeights:
    """The student's loss weights: the ``loss`` section with the student's error kind and
    hierarchicality weight. With ``teacher``, terms its labels cannot serve are refused."""
    loss = cfg.loss
    weights = LossWeights(
        mapped_forces=loss.w_F,
        teacher_forces=loss.w_f,
        energy=loss.w_E,
        bead_energies=loss.w_eps,
        uncertainty_weighting=loss.uncertainty_weighting,
        **_loss_options(cfg.student.train),
    )
    if teacher is not None and weights.bead_energies > 0 and not teacher.has_bead_energies:
        raise ValueError(
            f"loss.w_eps={loss.w_eps} needs per-bead energies, which a teacher.source="
            f"{cfg.teacher.source} teacher does not give; set loss.w_eps=0"
        )
    if cfg.schedule.kind == "two_stage" and weights.mapped_forces > 0:
        raise ValueError(
            f"loss.w_F={loss.w_F}: with schedule=two_stage the soft stage has no mapped forces "
            "(the hard stage fits them); set loss.w_F=0"
        )
    return weights


def n_teachers(cfg: DictConfig) -> int:
    """How many of the ensemble's members label the student's frames (``loss.n_teachers``;
    null: all of them)."""
    n_members = int(cfg.teacher.n_members)
    n_teachers = cfg.loss.n_teachers
    if n_teachers is None:
        return n_members
    if not 1 <= int(n_teachers) <= n_members:
        raise ValueError(
            f"loss.n_teachers={n_teachers} is not between 1 and teacher.n_members={n_members}; "
            "use 1 for a single teacher or null for the whole ensemble"
        )
    return int(n_teachers)


#: Where teachers come from (``teacher.source``).
TEACHER_SOURCES = ("ensemble", "torchscript", "openmm")


def teacher_model(cfg: DictConfig, frames: Frames | None = None) -> Teacher:
    """The teacher of ``teacher.source``: the first ``loss.n_teachers`` members trained here
    (ensemble), a TorchScript file (torchscript) or an all-atom OpenMM System (openmm).
    ``frames``: the CG dataset, if already read (an ensemble needs its bead types)."""
    source, path = cfg.teacher.source, cfg.teacher.path
    if source not in TEACHER_SOURCES:
        raise ValueError(f"teacher.source={source!r} is unknown; use one of {TEACHER_SOURCES}")
    if source == "torchscript":
        if path is None:
            raise ValueError("teacher.source=torchscript needs teacher.path=<model.ts>")
        return TorchScriptTeacher(Path(path))
    if source == "openmm":
        return _openmm_teacher(cfg)
    teachers, k = teach(cfg), n_teachers(cfg)
    n_members = len(teachers["members"])
    key: dict[str, Any] = {"teachers": teachers["key"]}
    if k != n_members:
        key["n_teachers"] = k  # the whole ensemble keeps its earlier key
    labeller, _ = merge_members(_load_members(teachers["members"][:k]))
    md_model = {1: "teacher_0.ts", n_members: "ensemble.ts"}.get(k)
    if frames is None:
        frames = read_h5md(map_stage(cfg)["dataset"])
    md_path = None if md_model is None else Path(teachers["dir"]) / md_model
    return EnsembleTeacher(labeller, frames.types, md_path, key)


def _openmm_teacher(cfg: DictConfig) -> OpenMMTeacher:
    """The OpenMM System of ``teacher.path`` (serialized XML), or of the built-in system."""
    cg = map_stage(cfg)
    matrices = np.load(Path(cg["dataset"]).with_name("mapping.npz"))
    n_beads = int(matrices["position_map_shape"][0])
    identity = np.array_equal(matrices["position_map_indptr"], np.arange(n_beads + 1))
    if not identity or not np.allclose(matrices["position_map_data"], 1.0):
        raise ValueError(
            f"teacher.source=openmm needs one bead per atom, but mapping {cfg.mapping.name!r} "
            "is not an identity mapping; use e.g. mapping=identity_water"
        )
    path = cfg.teacher.path
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"teacher.path={path} does not exist; give a System XML file")
        text = Path(path).read_text()
        system = openmm.XmlSerializer.deserialize(text)
        key = {"openmm_teacher": hashlib.sha256(text.encode()).hexdigest()[:16]}
    elif cfg.input.trajectory is not None:
        raise ValueError(
            "teacher.source=openmm with your own input data needs teacher.path=<system.xml>"
        )
    else:
        system = spec_from_config(_plain(cfg.system), seed=int(cfg.data_seed)).build().system
        key = {"openmm_teacher": generate(cfg)["key"]}
    return OpenMMTeacher(
        system,
        matrices["position_map_indices"],
        key,
        bonds=read_h5md_bonds(cg["dataset"]),
        threads=cfg.simulate.threads,
    )


def _label(cfg: DictConfig, teacher: Teacher, cg: dict[str, Any], frames: Frames) -> dict[str, Any]:
    """The teacher's labels of every reference frame: forces (mean and spread over members),
    per-bead and total energies."""

    def build(out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        targets = teacher.label(frames.positions, frames.boxes, progress=cfg.progress)
        np.savez(out / "targets.npz", **targets.__dict__)
        record = {
            "targets": str(out / "targets.npz"),
            "n_teachers": teacher.n_teachers,
            **_label_facts(targets),
        }
        return key, record

    key: dict[str, Any] = dict(teacher.key)
    if cfg.teacher.source != "ensemble":
        key["cg"] = cg["key"]  # an ensemble's key already holds its data's
    return _stage(cfg, "label", key).run(build)


def _label_facts(targets: Targets) -> dict[str, Any]:
    return {"mean_force_std": float(targets.force_std.mean())}


def sample(cfg: DictConfig, teacher: Teacher | None = None) -> dict[str, Any]:
    """Soft targets: teacher MD (``sampler``) from reference training frames, labelled by the
    teacher (``teacher``, or :func:`teacher_model`'s). Writes ``soft.npz`` (positions, boxes,
    temperatures, runs and the labels)."""
    cg = map_stage(cfg)
    teacher = teacher or teacher_model(cfg)
    sampler = {k: v for k, v in _plain(cfg.sampler).items() if k not in ("platform", "threads")}
    settings = sampler_settings(cfg)

    def build(out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        frames = read_h5md(cg["dataset"])
        train = reference_splits(cfg, frames).train
        starts = train[np.linspace(0, len(train) - 1, settings.starts).round().astype(int)]
        log.info(
            "teacher MD: %d runs at %s K, %d frames each",
            settings.starts * len(settings.temperatures),
            ", ".join(f"{t:.0f}" for t in settings.temperatures),
            settings.frames_per_run,
        )
        sampled = teacher.sample(
            frames.positions[starts],
            frames.boxes[starts],
            frames.masses,
            settings,
            seed=int(cfg.seed),
            progress=cfg.progress,
        )
        for failure in sampled.failures:
            log.warning("teacher MD stopped early: %s", failure)
        targets = teacher.label(sampled.positions, sampled.boxes, progress=cfg.progress)
        np.savez(
            out / "soft.npz",
            positions=sampled.positions,
            boxes=sampled.boxes,
            temperatures=sampled.temperatures,
            runs=sampled.runs,
            **targets.__dict__,
        )
        record = {
            "soft": str(out / "soft.npz"),
            "n_frames": sampled.n_frames,
            "start_frames": starts.tolist(),
            "temperatures": settings.temperatures,
            "failures": sampled.failures,
            **_label_facts(targets),
        }
        return {"teacher": teacher.key, "sampler": sampler, "cg": cg["key"]}, record

    key = {**teacher.key, "cg": cg["key"], "sampler": sampler, "seed": int(cfg.seed)}
    return _stage(cfg, "sample", key).run(build)


def sampler_settings(cfg: DictConfig) -> SamplerSettings:
    """The teacher MD settings of the ``sampler`` section."""
    sampler = _plain(cfg.sampler)
    return SamplerSettings(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in sampler.items()}
    )


def _soft_frames(soft: dict[str, Any], frames: Frames) -> tuple[Frames, Targets]:
    """The soft frames as a dataset (teacher forces in place of mapped ones) and their labels."""
    data = np.load(soft["soft"])
    targets = Targets(**{name: data[name] for name in Targets.__dataclass_fields__})
    dataset = Frames(
        positions=data["positions"],
        forces=targets.forces,
        boxes=data["boxes"],
        times=np.arange(len(data["positions"]), dtype=float),
        masses=frames.masses,
        types=frames.types,
        type_names=frames.type_names,
    )
    return dataset, targets


def screen(cfg: DictConfig, teacher: Teacher | None = None) -> dict[str, Any]:
    """Hard targets: the reference training frames ``screening`` picks (fps on structural
    descriptors, teacher disagreement, or random). Writes ``selection.json`` (indices into
    the dataset, in selection order, with their descriptor values) and ``descriptors.npz``
    (every candidate's). Only disagreement uses the teacher (``teacher``, or
    :func:`teacher_model`'s)."""
    cg = map_stage(cfg)
    screening = _plain(cfg.screening)
    method = screening["method"]
    if method not in METHODS:
        raise ValueError(f"screening.method={method!r} is unknown; use one of {list(METHODS)}")
    fraction = float(screening["fraction"])
    if not 0 < fraction <= 1:
        raise ValueError(f"screening.fraction={fraction} must be in (0, 1]")
    scores = None
    if method == "disagreement":
        if cfg.teacher.source != "ensemble" or n_teachers(cfg) < 2:
            raise ValueError(
                "screening=disagreement needs the spread of several teachers: use "
                "teacher.source=ensemble with loss.n_teachers > 1 (or null)"
            )
        frames = read_h5md(cg["dataset"])
        teacher = teacher or teacher_model(cfg, frames)
        labels = _label(cfg, teacher, cg, frames)
        scores = np.load(labels["targets"])["force_std"].mean(axis=(1, 2))

    def build(out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        frames = read_h5md(cg["dataset"])
        candidates = reference_splits(cfg, frames).train
        n_pick = max(1, round(fraction * len(candidates)))
        descriptors = frame_descriptors(
            frames.select(candidates),
            r_max=float(screening["r_max"]),
            n_bins=int(screening["n_bins"]),
        )
        picked = select_frames(
            method,
            n_pick,
            descriptors=descriptors.values,
            scores=None if scores is None else scores[candidates],
            seed=int(cfg.seed),
        )
        np.savez(
            out / "descriptors.npz",
            frames=candidates,
            values=descriptors.values,
            names=np.asarray(descriptors.names),
        )
        selection = {
            "method": method,
            "fraction": fraction,
            "n_candidates": len(candidates),
            "indices": candidates[picked].tolist(),
            "descriptor_names": descriptors.names,
            "descriptors": descriptors.values[picked].tolist(),
            **({"scores": scores[candidates][picked].tolist()} if scores is not None else {}),
        }
        _write_json(out / "selection.json", selection)
        log.info("screening (%s): %d of %d training frames", method, n_pick, len(candidates))
        record = {
            "selection": str(out / "selection.json"),
            "indices": selection["indices"],
            "n_selected": n_pick,
        }
        return {"screening": screening, "cg": cg["key"]}, record

    key = {"cg": cg["key"], "screening": screening, "seed": int(cfg.seed)}
    if method == "disagreement":
        assert teacher is not None  # made above
        key["teacher"] = teacher.key
    return _stage(cfg, "screen", key).run(build)


def _fine_tune(
    cfg: DictConfig,
    stage_one: dict[str, Any],
    soft_frames: Frames,
    soft_test: tuple[TrainingData, np.ndarray],
    selection: dict[str, Any],
    frames: Frames,
    splits: Splits,
    prior: dict[str, Any] | None,
) -> dict[str, Any]:
    """Stage 2: the stage-1 student fine-tuned on the hard frames' mapped forces with
    ``schedule.hard.soft_per_hard`` soft frames per hard frame mixed in (their labels as the
    force targets), at ``schedule.hard.learning_rate_factor`` times the learning rate.
    Validation and test: the reference splits' mapped forces. ``soft_test``: the soft stage's
    held-out frames with their labels, whose error measures forgetting."""
    section = cfg.schedule.hard
    hard_cfg = {  # typed, so that 0 and 0.0 on the command line make one cache key
        "epochs": int(section.epochs),
        "learning_rate_factor": float(section.learning_rate_factor),
        "soft_per_hard": float(section.soft_per_hard),
    }
    hard = np.asarray(selection["indices"])
    n_mix = min(soft_frames.n_frames, round(hard_cfg["soft_per_hard"] * len(hard)))
    mixed = np.linspace(0, soft_frames.n_frames - 1, n_mix).round().astype(int) if n_mix else []
    parts = [frames.select(hard), soft_frames.select(mixed), frames.select(splits.val)]
    parts.append(frames.select(splits.test))
    combined = Frames.concatenate(parts)
    sizes = np.cumsum([0] + [part.n_frames for part in parts])
    tune = Splits(
        train=np.arange(sizes[2]),
        val=np.arange(sizes[2], sizes[3]),
        test=np.arange(sizes[3], sizes[4]),
    )
    base = _settings(cfg.student.train, cfg.seed)
    settings = replace(
        base,
        epochs=hard_cfg["epochs"],
        learning_rate=base.learning_rate * hard_cfg["learning_rate_factor"],
    )
    return _train_student(
        cfg,
        "student",
        TrainingData.from_frames(combined),
        tune,
        prior,
        LossWeights(**_loss_options(cfg.student.train)),
        {"soft_student": stage_one["key"], "hard": selection["key"], "hard_cfg": hard_cfg},
        settings=settings,
        start=Path(stage_one["checkpoint"]),
        extra={"n_hard": len(hard), "n_soft_mixed": int(n_mix)},
        soft_test=soft_test,
    )


def _train_student(
    cfg: DictConfig,
    name: str,
    data: TrainingData,
    splits: Splits,
    prior: dict[str, Any] | None,
    weights: LossWeights,
    inputs: dict[str, Any],
    *,
    settings: TrainSettings | None = None,
    start: Path | None = None,
    extra: dict[str, Any] | None = None,
    soft_test: tuple[TrainingData, np.ndarray] | None = None,
) -> dict[str, Any]:
    """A student-architecture model trained on ``data``: from scratch, or fine-tuned from the
    saved model ``start``. Saved (``<name>.pt``), exported (``<name>.ts``) and cached. With
    ``soft_test`` (teacher-labelled frames and indices), the force RMSE against those labels
    is recorded (``force_rmse_soft``; with ``start`` also ``start_force_rmse_soft``)."""
    student = _plain(cfg.student)
    settings = settings or _settings(cfg.student.train, cfg.seed)
    type_names = map_stage(cfg)["type_names"]

    def build(out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        extra_facts: dict[str, float] = {}  # with start: its test error before fine-tuning
        network = {**student["model"], "n_species": len(type_names)}
        if start is None:
            potential = build_potential([network], prior, seeds=[cfg.seed])
        else:
            potential = load_potential(start)[0]
            before = evaluate(potential, data, splits.test)["force_rmse_mapped"]
            extra_facts["start_force_rmse_mapped"] = before
            if soft_test is not None:
                extra_facts["start_force_rmse_soft"] = _soft_error(potential, soft_test)
        result = train_potential(
            potential,
            data,
            splits,
            weights,
            settings,
            description=name,
            progress=cfg.progress,
            checkpoint=out / "checkpoint.pt",
            fine_tune=start is not None,
        )
        if soft_test is not None:
            extra_facts["force_rmse_soft"] = _soft_error(potential, soft_test)
        save_potential(out / f"{name}.pt", potential, [network], prior, {"history": result.history})
        exported = export_flavours(
            potential,
            data.species,
            out / f"{name}.ts",
            {"type_names": type_names, "config": student, "loss_weights": asdict(weights)},
        )
        plot_loss_curves({name: result.history}, out / "loss.png", title=name)
        record = {
            "model": exported["plain"],
            "checkpoint": str(out / f"{name}.pt"),
            "best_epoch": result.best_epoch,
            "seconds": result.seconds,
            **(extra or {}),
            **extra_facts,
            **result.test_metrics,
            "history": result.history,
        }
        return {**inputs, "student": student}, record

    key = {**inputs, "student": student, "prior": prior, "seed": cfg.seed}
    if settings != _settings(cfg.student.train, cfg.seed):
        key["settings"] = asdict(settings)
    return _stage(cfg, name, key).run(build, keep=("checkpoint.pt",))


def _soft_error(potential: CGPotential, soft_test: tuple[TrainingData, np.ndarray]) -> float:
    """Force RMSE (kJ/mol/nm) against the teacher's labels of the given soft frames."""
    data, frames = soft_test
    return evaluate(potential, data, frames)["force_rmse_teacher"]


def classical(cfg: DictConfig) -> dict[str, Any]:
    """The classical baseline: one pair table per bead-type pair force-matched (MS-CG) on the
    reference training frames' mapped forces (``classical.targets=mapped``) or the teacher's
    labels of them (``teacher``), with the priors. Writes ``classical.pt``, the native OpenMM
    System ``classical.xml`` (what CG MD runs) and the plain TorchScript ``classical.ts``."""
    section = _plain(cfg.classical)
    targets = section.pop("targets")
    if targets not in ("mapped", "teacher"):
        raise ValueError(f"classical.targets={targets!r} is unknown; use mapped or teacher")
    settings = TableSettings(**section)
    cg, priors = map_stage(cfg), prior_stage(cfg)
    frames = read_h5md(cg["dataset"])
    splits = reference_splits(cfg, frames)
    labels, key = (
        None,
        {"cg": cg["key"], "prior": priors["key"], "classical": _plain(cfg.classical)},
    )
    key["splits"] = {"seed": int(cfg.seed), **_split_fractions(cfg.teacher.train)}
    if targets == "teacher":
        teacher = teacher_model(cfg, frames)
        labels = Targets(**np.load(_label(cfg, teacher, cg, frames)["targets"]))
        key["teacher"] = teacher.key

    def build(out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        prior = _prior(priors)
        forces = frames.forces if labels is None else labels.forces
        table, facts = fit_pair_table(
            frames.positions[splits.train],
            frames.boxes[splits.train],
            forces[splits.train],
            frames.types,
            len(frames.type_names),
            np.asarray(prior["exclusions"] if prior else np.zeros((0, 2)), dtype=np.int64),
            None if prior is None else build_priors(prior),
            settings,
            progress=cfg.progress,
        )
        potential = build_potential([], prior, pair_table=table.spec())
        save_potential(out / "classical.pt", potential, [], prior, {"fit": facts})
        species = torch.as_tensor(frames.types)
        meta = {"type_names": frames.type_names, "config": _plain(cfg.classical)}
        export_torchscript(copy.deepcopy(potential).float(), species, out / "classical.ts", meta)
        native = export_native(
            potential, species, frames.masses, frames.boxes[-1], out / "classical.xml"
        )
        held_out = evaluate(
            potential.float(), TrainingData.from_frames(frames, labels), splits.test
        )
        log.info(
            "classical (%s forces): %d knots per table from %.3f nm; held-out force RMSE "
            "%.2f kJ/mol/nm",
            targets,
            facts["n_knots"],
            facts["r_min"],
            held_out["force_rmse_mapped"],
        )
        record = {
            "model": str(native),
            "torchscript": str(out / "classical.ts"),
            "checkpoint": str(out / "classical.pt"),
            **facts,
            **held_out,
        }
        return key, record

    return _stage(cfg, "classical", key).run(build)


def _split_fractions(train_cfg: DictConfig) -> dict[str, float]:
    return {"val": float(train_cfg.val_fraction), "test": float(train_cfg.test_fraction)}


#: Models the simulate stage can run: the distilled ones, the teachers used directly and the
#: classical force-matched pair potential.
SIMULATED_MODELS = ("student", "baseline", "teacher", "ensemble", "classical")


def cg_models(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """The exported model (``model``: a plain TorchScript file; ``fused``: its fused flavour,
    or None) and cache ``key`` of every model named in ``simulate.models``: student,
    baseline, teacher (the first member alone, or a teacher.source=torchscript file),
    ensemble (the teachers' mean) and classical (its native OpenMM System)."""
    names = list(cfg.simulate.models)
    unknown = [name for name in names if name not in SIMULATED_MODELS]
    if unknown or not names:
        raise ValueError(
            f"simulate.models={names} names no model or unknown ones {unknown}; "
            f"choose from {', '.join(SIMULATED_MODELS)}"
        )
    source = cfg.teacher.source
    external = {"torchscript": ["ensemble"], "openmm": ["teacher", "ensemble"]}.get(source, [])
    if refused := [name for name in names if name in external]:
        raise ValueError(
            f"simulate.models has {refused} but teacher.source={source} has no such CG model; "
            "leave them out (an all-atom teacher's own MD is the reference)"
        )
    distilled = distill(cfg) if {"student", "baseline"} & set(names) else {}
    models = {}
    for name in names:
        if name == "classical":
            record = classical(cfg)
            models[name] = {"model": record["model"], "key": record["key"], "fused": None}
        elif name in ("student", "baseline"):
            plain = distilled[name]["model"]
            models[name] = {
                "model": plain,
                "key": distilled[name]["key"],
                "fused": str(fused_path(Path(plain))),
            }
        elif source == "torchscript":
            digest = TorchScriptTeacher(Path(cfg.teacher.path)).key["torchscript_teacher"]
            models[name] = {
                "model": str(cfg.teacher.path),
                "key": f"{digest}-teacher",
                "fused": None,
            }
        else:
            teachers = teach(cfg)
            exported = "teacher_0.ts" if name == "teacher" else "ensemble.ts"
            plain = str(Path(teachers["dir"]) / exported)
            models[name] = {
                "model": plain,
                "key": f"{teachers['key']}-{name}",
                "fused": str(fused_path(Path(plain))),
            }
    return models


def md_settings(cfg: DictConfig) -> MDSettings:
    """The CG MD settings of the ``simulate`` section."""
    simulate_cfg = {k: v for k, v in _plain(cfg.simulate).items() if k != "models"}
    return MDSettings(**simulate_cfg, seed=cfg.seed)


def simulate(cfg: DictConfig) -> dict[str, Any]:
    """CG MD in OpenMM of every model in ``simulate.models``: ``simulate.replicas`` runs of
    each, replica k from a mapped AA frame (the last, then spread back over the dataset) with
    seed ``seed + k``. A run that goes bad is recorded as unstable, not raised; an interrupted
    stage resumes every replica from its checkpoint. Each record comes back with the cache key
    of its model (``model_key``)."""
    cg, models = map_stage(cfg), cg_models(cfg)
    frames = read_h5md(cg["dataset"])
    bonds = read_h5md_bonds(cg["dataset"])
    simulate_cfg = {k: v for k, v in _plain(cfg.simulate).items() if k != "models"}
    settings = md_settings(cfg)
    n_frames = len(frames.positions)
    starts = [n_frames - 1 - (k * n_frames) // settings.replicas for k in range(settings.replicas)]
    names = [frames.type_names[t] for t in frames.types]
    runs = {}
    for name, model in models.items():

        def build(out: Path, model: dict[str, Any] = model, name: str = name) -> tuple[dict, dict]:
            fused = Path(model["fused"]) if model["fused"] else None
            model_path = model_file(Path(model["model"]), fused, settings)
            log.info("CG MD of the %s: %s", name, model_path)
            results = run_replicas(
                model_path,
                frames.positions[starts],
                frames.boxes[starts],
                frames.masses,
                settings,
                out,
                bead_names=names,
                bonds=bonds,
                progress=cfg.progress,
            )
            stable = [r for r in results if r.stable]
            for k, result in enumerate(results):
                if not result.stable:
                    log.warning("%s replica %d: %s", name, k, result.message)
            record = {
                "model_file": str(model_path),
                "replicas": [r.to_json() for r in results],
                "start_frames": starts,
                "n_stable": len(stable),
                "stable_fraction": len(stable) / len(results),
                "ms_per_step": float(np.median([r.ms_per_step for r in results])),
                "ns_per_day": float(np.median([r.ns_per_day for r in results])),
            }
            return {"model": model["key"], "simulate": simulate_cfg}, record

        key = {"model": model["key"], "simulate": simulate_cfg, "seed": cfg.seed}
        keep = tuple(f"replica_{k}" for k in range(settings.replicas))
        record = _stage(cfg, f"simulate-{name}", key).run(build, keep=keep)
        runs[name] = {**record, "model_key": model["key"]}
    return runs
