"""The stages chained, each one cached: generate -> map -> prior -> teacher members -> teach
-> distill -> simulate -> analyze.

Every stage writes into ``<cache_dir>/<stage>-<key>/`` where the key hashes the
configuration that determines its result (its own section plus its inputs' keys), so
re-running reuses what is already there and a sweep over loss weights retrains only
the students. A stage directory is complete only once its ``done.json`` exists; it
records the configuration that made it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from joblib import Parallel, delayed
from omegaconf import DictConfig, OmegaConf

from cgkd.io.h5md import read_h5md, read_h5md_bonds
from cgkd.io.trajectory import FrameScreen, FrameSelection, import_trajectory
from cgkd.mapping.apply import map_trajectory
from cgkd.mapping.definition import MappingSpec
from cgkd.models.checkpoint import build_potential, load_potential, merge_members, save_potential
from cgkd.models.neighbors import perpendicular_widths
from cgkd.models.potential import CGPotential
from cgkd.models.priors import CGTopology, fit_priors
from cgkd.simulation.export import export_torchscript
from cgkd.simulation.md import MDSettings, run_replicas
from cgkd.systems import spec_from_config
from cgkd.systems.reference_md import generate as generate_system
from cgkd.training.curves import plot_loss_curves
from cgkd.training.dataset import Splits, Targets, TrainingData
from cgkd.training.losses import LossWeights
from cgkd.training.targets import label_frames
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
        if self.path.exists():
            for entry in self.path.iterdir():
                if entry.name in keep:
                    continue
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path

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
        ``(config, record)`` for :meth:`finish`. Holds the stage's lock throughout."""
        locks = self.path.parent / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{self.path.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.done:
                return self.record()
            config, record = build(self.begin(keep))
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
        return _import(cfg)
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
    source = _plain(cfg.input)
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
            config={"input": source},
            progress=cfg.progress,
        )
        record = {
            "trajectory": str(imported.path),
            "topology": str(topology_copy),
            "n_atoms": imported.n_atoms,
            "n_frames": imported.n_frames,
            "n_dropped": imported.n_dropped,
        }
        return {"input": source, "files": files}, record

    return _stage(cfg, "import", {"input": source, "files": files}).run(build)


_SELECTION_KEYS = ("start", "stop", "step", "time_start", "time_stop")


def map_stage(cfg: DictConfig) -> dict[str, Any]:
    """CG dataset (H5MD): bead positions, mapped forces, boxes, types, masses, CG bonds."""
    aa = generate(cfg)
    mapping = _plain(cfg.mapping)

    def build(out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        mapped = map_trajectory(
            aa["topology"],
            aa["trajectory"],
            out / "cg.h5md",
            MappingSpec.from_config(mapping),
            config={"aa": aa},
            progress=cfg.progress,
        )
        log.info("mapping %s:\n%s", mapping["name"], mapped.summary)
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
    """Priors fitted to the mapped reference: repulsion onsets, bonds and angles."""
    cg = map_stage(cfg)
    prior_cfg = _plain(cfg.prior)
    temperature = float(cfg.simulate.temperature)

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
        return {"prior": prior_cfg, "cg": cg["key"]}, {"prior": str(out / "prior.json")}

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
    ignored = ("member", "n_members", "n_jobs")
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
            description=f"teacher {member + 1}/{n_members}",
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
            export_torchscript(potential, species, out / f"teacher_{k}.ts", meta)
        export_torchscript(ensemble, species, out / "ensemble.ts", meta)
        plot_loss_curves(
            {f"teacher {k + 1}": m["history"] for k, m in enumerate(members)},
            out / "loss.png",
            title=f"{n_members} teachers",
        )
        splits = _splits(cfg, frames.n_frames, cfg.teacher.train)
        held_out = evaluate(ensemble, TrainingData.from_frames(frames), splits.test)
        for name, metrics in [
            *((f"teacher {m['member'] + 1}", m) for m in members),
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
    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    container = OmegaConf.to_container(cfg, resolve=True)
    Parallel(n_jobs=min(n_jobs, n_members))(
        delayed(_member_job)(container, k, threads) for k in range(n_members)
    )


def _member_job(config: dict[str, Any], member: int, threads: int) -> str:
    """Train one member in a worker process with ``threads`` torch threads."""
    torch.set_num_threads(threads)
    return teach_member(OmegaConf.create(config), member)["key"]


def distill(cfg: DictConfig) -> dict[str, Any]:
    """Distillation targets from the teachers (``loss.n_teachers`` of the ensemble's members),
    the student trained on them, and the baseline (student architecture on mapped forces
    only)."""
    cg, teachers = map_stage(cfg), teach(cfg)
    frames = read_h5md(cg["dataset"])
    targets = _label(cfg, teachers, frames, n_teachers(cfg))
    student = _train_student(
        cfg,
        "student",
        teachers,
        frames,
        student_loss(cfg),
        targets,
        {"teachers": teachers["key"], "loss": _plain(cfg.loss)},
    )
    baseline = _train_student(
        cfg,
        "baseline",
        teachers,
        frames,
        LossWeights(**_loss_options(cfg.student.train)),
        None,
        {"cg": cg["key"]},
    )
    return {"targets": targets, "student": student, "baseline": baseline}


def student_loss(cfg: DictConfig) -> LossWeights:
    """The student's loss weights: the ``loss`` section with the student's error kind and
    hierarchicality weight."""
    loss = cfg.loss
    return LossWeights(
        mapped_forces=loss.w_F,
        teacher_forces=loss.w_f,
        energy=loss.w_E,
        bead_energies=loss.w_eps,
        uncertainty_weighting=loss.uncertainty_weighting,
        **_loss_options(cfg.student.train),
    )


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


def _label(
    cfg: DictConfig, teachers: dict[str, Any], frames: Any, n_teachers: int
) -> dict[str, Any]:
    """Labels of every frame by the first ``n_teachers`` members: mean and spread of forces,
    mean bead and total energies."""

    def build(out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        labeller, _ = merge_members(_load_members(teachers["members"][:n_teachers]))
        targets = label_frames(
            labeller, frames.positions, frames.boxes, frames.types, progress=cfg.progress
        )
        np.savez(out / "targets.npz", **targets.__dict__)
        record = {
            "targets": str(out / "targets.npz"),
            "n_teachers": n_teachers,
            "mean_force_std": float(targets.force_std.mean()),
        }
        return {"teachers": teachers["key"], "n_teachers": n_teachers}, record

    key: dict[str, Any] = {"teachers": teachers["key"]}
    if n_teachers != len(teachers["members"]):
        key["n_teachers"] = n_teachers  # the whole ensemble keeps its earlier key
    return _stage(cfg, "label", key).run(build)


def _train_student(
    cfg: DictConfig,
    name: str,
    teachers: dict[str, Any],
    frames: Any,
    weights: LossWeights,
    targets: dict[str, Any] | None,
    inputs: dict[str, Any],
) -> dict[str, Any]:
    student = _plain(cfg.student)

    def build(out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        labels = None if targets is None else Targets(**np.load(targets["targets"]))
        data = TrainingData.from_frames(frames, labels)
        splits = Splits.from_dict(teachers["splits"])
        network = {**student["model"], "n_species": len(frames.type_names)}
        potential = build_potential([network], teachers["prior"], seeds=[cfg.seed])
        result = train_potential(
            potential,
            data,
            splits,
            weights,
            _settings(cfg.student.train, cfg.seed),
            description=name,
            progress=cfg.progress,
            checkpoint=out / "checkpoint.pt",
        )
        save_potential(
            out / f"{name}.pt", potential, [network], teachers["prior"], {"history": result.history}
        )
        export_torchscript(
            potential,
            torch.as_tensor(frames.types),
            out / f"{name}.ts",
            {"type_names": frames.type_names, "config": student, "loss_weights": asdict(weights)},
        )
        plot_loss_curves({name: result.history}, out / "loss.png", title=name)
        record = {
            "model": str(out / f"{name}.ts"),
            "best_epoch": result.best_epoch,
            "seconds": result.seconds,
            **result.test_metrics,
            "history": result.history,
        }
        return {**inputs, "student": student}, record

    key = {**inputs, "student": student, "prior": teachers["prior"], "seed": cfg.seed}
    return _stage(cfg, name, key).run(build, keep=("checkpoint.pt",))


#: Models the simulate stage can run: the distilled ones and the teachers used directly.
SIMULATED_MODELS = ("student", "baseline", "teacher", "ensemble")


def cg_models(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """The exported model (``model``: a TorchScript file) and cache ``key`` of every model
    named in ``simulate.models``: student, baseline, teacher (the first member alone) and
    ensemble (the teachers' mean)."""
    names = list(cfg.simulate.models)
    unknown = [name for name in names if name not in SIMULATED_MODELS]
    if unknown or not names:
        raise ValueError(
            f"simulate.models={names} names no model or unknown ones {unknown}; "
            f"choose from {', '.join(SIMULATED_MODELS)}"
        )
    teachers, distilled = teach(cfg), distill(cfg)
    exported = {
        "teacher": Path(teachers["dir"]) / "teacher_0.ts",
        "ensemble": Path(teachers["dir"]) / "ensemble.ts",
    }
    models = {}
    for name in names:
        if name in exported:
            models[name] = {"model": str(exported[name]), "key": f"{teachers['key']}-{name}"}
        else:
            models[name] = {"model": distilled[name]["model"], "key": distilled[name]["key"]}
    return models


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
    settings = MDSettings(**simulate_cfg, seed=cfg.seed)
    n_frames = len(frames.positions)
    starts = [n_frames - 1 - (k * n_frames) // settings.replicas for k in range(settings.replicas)]
    names = [frames.type_names[t] for t in frames.types]
    runs = {}
    for name, model in models.items():

        def build(out: Path, model: dict[str, Any] = model, name: str = name) -> tuple[dict, dict]:
            results = run_replicas(
                Path(model["model"]),
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
