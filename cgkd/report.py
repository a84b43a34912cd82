"""The analyze stage: observables of reference, baseline and student, metrics, figures, report."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import mdtraj
import numpy as np
from omegaconf import DictConfig, OmegaConf

from cgkd import pipeline
from cgkd.io.h5md import read_h5md
from cgkd.observables import ADF, RDF, ObservableResult, compare, plot_comparison
from cgkd.observables.compare import relative_integrated_deviation
from cgkd.simulation.md import time_force_evaluation
from cgkd.training.curves import plot_loss_curves

log = logging.getLogger(__name__)

REFERENCE = "AA (mapped)"


def load_cg_trajectory(
    trajectory: str | Path, topology: str | Path
) -> tuple[np.ndarray, np.ndarray]:
    """Positions [T, N, 3] and boxes [T, 3, 3] (nm) of a CG DCD trajectory, read with mdtraj."""
    traj = mdtraj.load_dcd(str(trajectory), top=str(topology))
    return traj.xyz.astype(np.float64), traj.unitcell_vectors.astype(np.float64)


def observables(
    cfg: DictConfig, positions: np.ndarray, boxes: np.ndarray
) -> dict[str, ObservableResult]:
    """RDF and ADF of a trajectory with the configured bins."""
    rdf = RDF(cfg.analysis.rdf.r_max, cfg.analysis.rdf.n_bins).run(positions, boxes)
    adf = ADF(cfg.analysis.adf.cutoff, cfg.analysis.adf.n_bins).run(positions, boxes)
    return {"rdf": rdf, "adf": adf}


def analyze(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Run every stage (cached), compare observables with the AA reference and write
    ``metrics.json``, ``observables.json``, ``rdf_adf.png``, ``training.png`` and ``report.md``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    aa, cg, teachers = pipeline.generate(cfg), pipeline.map_stage(cfg), pipeline.teach(cfg)
    models, runs = pipeline.distill(cfg), pipeline.simulate(cfg)
    frames = read_h5md(cg["dataset"])
    stride = cfg.analysis.reference_stride
    curves = {REFERENCE: observables(cfg, frames.positions[::stride], frames.boxes[::stride])}
    for name, run in runs.items():
        loaded = [
            load_cg_trajectory(replica["trajectory"], replica["topology"])
            for replica in run["replicas"]
            if replica["n_frames"] > 0
        ]
        if loaded:
            positions, boxes = (np.concatenate(parts) for parts in zip(*loaded, strict=True))
            curves[name] = observables(cfg, positions, boxes)
    deviations: dict[str, dict[str, dict[str, float]]] = {}
    for observable in ("rdf", "adf"):
        others = {name: by_obs[observable] for name, by_obs in curves.items() if name != REFERENCE}
        reference = curves[REFERENCE][observable]
        deviations[observable] = {
            "mean_absolute_deviation": compare(reference, others),
            "relative_integrated_deviation": compare(
                reference, others, relative_integrated_deviation
            ),
        }
    by_observable = {obs: {name: c[obs] for name, c in curves.items()} for obs in ("rdf", "adf")}
    plot_comparison(by_observable, output_dir / "rdf_adf.png")
    histories = {f"teacher {k + 1}": m["history"] for k, m in enumerate(teachers["members"])}
    histories.update({name: models[name]["history"] for name in ("student", "baseline")})
    plot_loss_curves(histories, output_dir / "training.png", title=cfg.system.name)
    timing = _timings(cfg, teachers, models, frames)
    metrics = {
        "system": {"name": cfg.system.name, "n_beads": cg["n_beads"], "n_frames": cg["n_frames"]},
        "observables": deviations,
        "forces": {
            "teachers": [
                {k: v for k, v in m.items() if k != "history"} for m in teachers["members"]
            ],
            "student": _test_metrics(models["student"]),
            "baseline": _test_metrics(models["baseline"]),
            "ensemble_mean_force_std": models["targets"]["mean_force_std"],
        },
        "timings": {
            "aa_ns_per_day": aa.get("ns_per_day"),
            "cg_ns_per_day": {name: run["ns_per_day"] for name, run in runs.items()},
            "cg_ms_per_step": {name: run["ms_per_step"] for name, run in runs.items()},
            "ms_per_force_evaluation": timing,
        },
        "stability": {
            name: {
                "stable_fraction": run["stable_fraction"],
                "replicas": [
                    {k: r[k] for k in ("stable", "message", "steps_completed", "seed")}
                    for r in run["replicas"]
                ],
            }
            for name, run in runs.items()
        },
        "artifacts": {
            "aa": aa,
            "cg": cg["dataset"],
            "student": models["student"]["model"],
            "baseline": models["baseline"]["model"],
        },
    }
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    (output_dir / "observables.json").write_text(
        json.dumps({name: {obs: r.to_dict() for obs, r in c.items()} for name, c in curves.items()})
    )
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (output_dir / "report.md").write_text(render_report(cfg, metrics))
    return metrics


def _test_metrics(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("history", "key", "model")}


def _timings(
    cfg: DictConfig, teachers: dict[str, Any], models: dict[str, Any], frames: Any
) -> dict[str, float]:
    files = {
        "teacher (single)": Path(teachers["dir"]) / "teacher_0.ts",
        "teacher ensemble": Path(teachers["dir"]) / "ensemble.ts",
        "student": Path(models["student"]["model"]),
        "baseline": Path(models["baseline"]["model"]),
    }
    return {
        name: time_force_evaluation(
            path, frames.positions[-1], frames.boxes[-1], frames.masses, cfg.analysis.timing_repeats
        )
        for name, path in files.items()
    }


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render_report(cfg: DictConfig, metrics: dict[str, Any]) -> str:
    """A short markdown report of the settings, metrics and timings."""
    lines = [
        f"# cgkd report: {cfg.system.name}",
        "",
        f"{metrics['system']['n_beads']} beads, {metrics['system']['n_frames']} mapped AA frames; "
        f"{cfg.teacher.n_members} teachers; loss weights w_F={cfg.loss.w_F}, w_f={cfg.loss.w_f}, "
        f"w_E={cfg.loss.w_E}, w_eps={cfg.loss.w_eps}.",
        "",
        "![RDF and ADF](rdf_adf.png)",
        "",
        "## Structure versus the AA reference",
        "",
        "| observable | model | mean abs. deviation | relative integrated deviation |",
        "|---|---|---|---|",
    ]
    for observable, values in metrics["observables"].items():
        for model, mad in values["mean_absolute_deviation"].items():
            rel = values["relative_integrated_deviation"][model]
            lines.append(f"| {observable} | {model} | {mad:.4f} | {rel:.4f} |")
    lines += [
        "",
        "## Stability of the CG runs",
        "",
        "| model | replica | seed | stable | steps | message |",
        "|---|---|---|---|---|---|",
    ]
    for model, stability in metrics["stability"].items():
        for k, r in enumerate(stability["replicas"]):
            lines.append(
                f"| {model} | {k} | {r['seed']} | {r['stable']} | {r['steps_completed']} "
                f"| {r['message']} |"
            )
    forces = metrics["forces"]
    lines += [
        "",
        "## Forces on held-out frames (kJ/mol/nm)",
        "",
        "| model | RMSE vs mapped | RMSE vs teacher mean |",
        "|---|---|---|",
    ]
    for k, teacher in enumerate(forces["teachers"]):
        lines.append(f"| teacher {k + 1} | {_fmt(teacher['force_rmse_mapped'])} | |")
    for model in ("student", "baseline"):
        row = forces[model]
        lines.append(
            f"| {model} | {_fmt(row['force_rmse_mapped'])} "
            f"| {_fmt(row.get('force_rmse_teacher', ''))} |"
        )
    lines.append(
        f"\nMean spread of the teachers' forces: "
        f"{_fmt(forces['ensemble_mean_force_std'])} kJ/mol/nm."
    )
    timings = metrics["timings"]
    lines += ["", "## Timings (this machine)", "", "| what | value |", "|---|---|"]
    lines.append(f"| AA MD | {_fmt(timings['aa_ns_per_day'])} ns/day |")
    for model, value in timings["cg_ns_per_day"].items():
        lines.append(
            f"| CG MD, {model} | {_fmt(value)} ns/day "
            f"({_fmt(timings['cg_ms_per_step'][model])} ms/step) |"
        )
    for model, value in timings["ms_per_force_evaluation"].items():
        lines.append(f"| force evaluation, {model} | {_fmt(value)} ms |")
    lines += ["", "![training](training.png)", ""]
    return "\n".join(lines)
