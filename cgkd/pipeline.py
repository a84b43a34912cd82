"""The stages chained, each one cached: generate -> map -> teach -> distill -> simulate -> analyze.

Every stage writes into ``<cache_dir>/<stage>-<key>/`` where the key hashes the
configuration that determines its result (its own section plus its inputs' keys), so
re-running reuses what is already there and a sweep over loss weights retrains only
the students. A stage directory is complete only once its ``done.json`` exists; it
records the configuration that made it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from cgkd.io.h5md import read_h5md
from cgkd.io.trajectory import FrameScreen, FrameSelection, import_trajectory
from cgkd.mapping.apply import map_trajectory
from cgkd.mapping.definition import MappingSpec
from cgkd.models.checkpoint import build_potential, load_potential, merge_members, save_potential
from cgkd.models.priors import fit_repulsion_sigma
from cgkd.simulation.export import export_torchscript
from cgkd.simulation.md import MDSettings, run_cg_md
from cgkd.systems import spec_from_config
from cgkd.systems.reference_md import generate as generate_system
from cgkd.training.dataset import Splits, Targets, TrainingData
from cgkd.training.losses import LossWeights
from cgkd.training.targets import label_frames
from cgkd.training.trainer import TrainSettings, train_potential
from cgkd.units import kt

log = logging.getLogger(__name__)


@dataclass
class StageDir:
    """A cached stage's directory, key and completeness."""

    path: Path
    key: str

    @property
    def done(self) -> bool:
        """Whether the stage finished (its done.json exists)."""
        return (self.path / "done.json").is_file()

    def begin(self) -> Path:
        """Start (or restart) the stage: an empty directory."""
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        return self.path

    def finish(self, config: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
        """Write config.yaml and, last, done.json (atomic) with ``record``."""
        (self.path / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
        _write_json(self.path / "done.json", record)
        return record

    def record(self) -> dict[str, Any]:
        """The record of a finished stage."""
        return json.loads((self.path / "done.json").read_text())


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
    stage = _stage(cfg, "generate", {"system": system, "seed": cfg.seed})
    if stage.done:
        return stage.record()
    spec = spec_from_config(system, seed=cfg.seed)
    log.info("generating the AA reference: %s", system["name"])
    made = generate_system(spec, stage.begin(), config={"system": system}, progress=cfg.progress)
    record = {"key": stage.key, **made.to_dict()}
    return stage.finish({"system": system, "seed": cfg.seed}, record)


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
    stage = _stage(cfg, "import", {"input": source, "files": files})
    if stage.done:
        return stage.record()
    out = stage.begin()
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
        "key": stage.key,
        "trajectory": str(imported.path),
        "topology": str(topology_copy),
        "n_atoms": imported.n_atoms,
        "n_frames": imported.n_frames,
        "n_dropped": imported.n_dropped,
    }
    return stage.finish({"input": source, "files": files}, record)


_SELECTION_KEYS = ("start", "stop", "step", "time_start", "time_stop")


def map_stage(cfg: DictConfig) -> dict[str, Any]:
    """CG dataset (H5MD): bead positions, mapped forces, boxes, types, masses."""
    aa = generate(cfg)
    mapping = _plain(cfg.mapping)
    stage = _stage(cfg, "map", {"aa": aa["key"], "mapping": mapping})
    if stage.done:
        return stage.record()
    out = stage.begin() / "cg.h5md"
    mapped = map_trajectory(
        aa["topology"],
        aa["trajectory"],
        out,
        MappingSpec.from_config(mapping),
        config={"aa": aa},
        progress=cfg.progress,
    )
    log.info("mapping %s:\n%s", mapping["name"], mapped.summary)
    record = {
        "key": stage.key,
        "dataset": str(out),
        "n_frames": mapped.n_frames,
        "n_beads": mapped.n_beads,
        "type_names": mapped.type_names,
    }
    return stage.finish({"mapping": mapping, "aa": aa}, record)


def _splits(cfg: DictConfig, n_frames: int, train_cfg: DictConfig) -> Splits:
    return Splits.random(n_frames, train_cfg.val_fraction, train_cfg.test_fraction, cfg.seed)


def _settings(train_cfg: DictConfig, seed: int) -> TrainSettings:
    fields = {
        k: v for k, v in _plain(train_cfg).items() if k not in ("val_fraction", "test_fraction")
    }
    return TrainSettings(**fields, seed=seed)


def teach(cfg: DictConfig) -> dict[str, Any]:
    """Teacher ensemble: K HIP-NN-TS models trained on mapped forces only, with a fitted prior."""
    cg = map_stage(cfg)
    teacher, prior_cfg = _plain(cfg.teacher), _plain(cfg.prior)
    stage = _stage(
        cfg, "teach", {"cg": cg["key"], "teacher": teacher, "prior": prior_cfg, "seed": cfg.seed}
    )
    if stage.done:
        return stage.record()
    out = stage.begin()
    frames = read_h5md(cg["dataset"])
    prior = _fit_prior(cfg, frames)
    (out / "prior.json").write_text(json.dumps(prior, indent=2))
    data = TrainingData.from_frames(frames)
    splits = _splits(cfg, frames.n_frames, cfg.teacher.train)
    network = {**teacher["model"], "n_species": len(frames.type_names)}
    members, results = [], []
    for k in range(cfg.teacher.n_members):
        seed = cfg.seed + 1000 * (k + 1)
        potential = build_potential([network], prior, seeds=[seed])
        result = train_potential(
            potential,
            data,
            splits,
            LossWeights(),
            _settings(cfg.teacher.train, seed),
            description=f"teacher {k + 1}/{cfg.teacher.n_members}",
            progress=cfg.progress,
        )
        save_potential(
            out / f"teacher_{k}.pt", potential, [network], prior, {"history": result.history}
        )
        members.append((potential, [network]))
        results.append(
            {
                "best_epoch": result.best_epoch,
                "seconds": result.seconds,
                **result.test_metrics,
                "history": result.history,
            }
        )
    ensemble, kwargs = merge_members(members)
    save_potential(out / "ensemble.pt", ensemble, kwargs, prior)
    species = torch.as_tensor(frames.types)
    meta = {"type_names": frames.type_names, "config": teacher}
    export_torchscript(members[0][0], species, out / "teacher.ts", meta)
    export_torchscript(ensemble, species, out / "ensemble.ts", meta)
    record = {
        "key": stage.key,
        "dir": str(out),
        "splits": splits.to_dict(),
        "members": results,
        "prior": prior,
    }
    return stage.finish({"teacher": teacher, "prior": prior_cfg, "cg": cg}, record)


def _fit_prior(cfg: DictConfig, frames: Any) -> dict[str, Any] | None:
    if not cfg.prior.enabled:
        return None
    half_box = 0.5 * float(np.min(np.linalg.norm(frames.boxes, axis=-1)))
    sigma = fit_repulsion_sigma(
        frames.positions,
        frames.boxes,
        frames.types,
        len(frames.type_names),
        r_max=min(half_box, 1.0),
        threshold=cfg.prior.rdf_threshold,
    )
    temperature = float(cfg.simulate.temperature)
    return {
        "sigma": sigma.tolist(),
        "epsilon": cfg.prior.epsilon_kt * kt(temperature),
        "switch_factor": cfg.prior.switch_factor,
    }


def distill(cfg: DictConfig) -> dict[str, Any]:
    """Distillation targets from the ensemble, the student trained on them, and the baseline
    (student architecture on mapped forces only)."""
    cg, teachers = map_stage(cfg), teach(cfg)
    frames = read_h5md(cg["dataset"])
    targets = _label(cfg, teachers, frames)
    loss = _plain(cfg.loss)
    weights = LossWeights(
        mapped_forces=loss["w_F"],
        teacher_forces=loss["w_f"],
        energy=loss["w_E"],
        bead_energies=loss["w_eps"],
    )
    student = _train_student(
        cfg,
        "student",
        teachers,
        frames,
        weights,
        targets,
        {"teachers": teachers["key"], "loss": loss},
    )
    baseline = _train_student(
        cfg, "baseline", teachers, frames, LossWeights(), None, {"cg": cg["key"]}
    )
    return {"targets": targets, "student": student, "baseline": baseline}


def _label(cfg: DictConfig, teachers: dict[str, Any], frames: Any) -> dict[str, Any]:
    stage = _stage(cfg, "label", {"teachers": teachers["key"]})
    if stage.done:
        return stage.record()
    out = stage.begin()
    ensemble, _ = load_potential(Path(teachers["dir"]) / "ensemble.pt")
    targets = label_frames(
        ensemble, frames.positions, frames.boxes, frames.types, progress=cfg.progress
    )
    np.savez(out / "targets.npz", **targets.__dict__)
    record = {
        "key": stage.key,
        "targets": str(out / "targets.npz"),
        "mean_force_std": float(targets.force_std.mean()),
    }
    return stage.finish({"teachers": teachers["key"]}, record)


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
    stage = _stage(
        cfg, name, {**inputs, "student": student, "prior": teachers["prior"], "seed": cfg.seed}
    )
    if stage.done:
        return stage.record()
    out = stage.begin()
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
    )
    save_potential(
        out / f"{name}.pt", potential, [network], teachers["prior"], {"history": result.history}
    )
    export_torchscript(
        potential,
        torch.as_tensor(frames.types),
        out / f"{name}.ts",
        {"type_names": frames.type_names, "config": student, "loss_weights": weights.__dict__},
    )
    record = {
        "key": stage.key,
        "model": str(out / f"{name}.ts"),
        "best_epoch": result.best_epoch,
        "seconds": result.seconds,
        **result.test_metrics,
        "history": result.history,
    }
    return stage.finish({**inputs, "student": student}, record)


def simulate(cfg: DictConfig) -> dict[str, Any]:
    """CG MD of the student and the baseline in OpenMM, from the last mapped AA frame."""
    cg, models = map_stage(cfg), distill(cfg)
    frames = read_h5md(cg["dataset"])
    settings = MDSettings(**_plain(cfg.simulate), seed=cfg.seed)
    runs = {}
    for name in ("student", "baseline"):
        model = models[name]
        stage = _stage(
            cfg,
            f"simulate-{name}",
            {"model": model["key"], "simulate": _plain(cfg.simulate), "seed": cfg.seed},
        )
        if not stage.done:
            out = stage.begin()
            names = [frames.type_names[t] for t in frames.types]
            result = run_cg_md(
                Path(model["model"]),
                frames.positions[-1],
                frames.boxes[-1],
                frames.masses,
                settings,
                out,
                bead_names=names,
                progress=cfg.progress,
            )
            record = {
                **{k: str(v) if isinstance(v, Path) else v for k, v in result.__dict__.items()},
                "key": stage.key,
            }
            stage.finish({"model": model["key"], "simulate": _plain(cfg.simulate)}, record)
        runs[name] = stage.record()
    return runs
