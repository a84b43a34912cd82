"""The analyze stage: observables of reference, baseline and student, metrics, figures, report."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cgkd import pipeline
from cgkd.io.frames import Frames
from cgkd.io.h5md import read_h5md
from cgkd.observables.sources import compare_sources, plot_sources, save_curves, scalars
from cgkd.observables.suite import TETRAHEDRAL_MAX_COORDINATION, Analysis, evaluate
from cgkd.observables.trajectory import Trajectory
from cgkd.simulation.export import fused_path
from cgkd.simulation.md import model_file, time_force_evaluation
from cgkd.training.curves import plot_loss_curves

log = logging.getLogger(__name__)

REFERENCE = "AA (mapped)"


def cg_runs(run: dict[str, Any], frames: Frames, dt: float) -> list[Trajectory]:
    """The replicas of a simulate record that saved frames, streamed from their DCD files with
    the species of the CG dataset ``frames`` and ``dt`` ps between frames."""
    return [
        Trajectory.from_dcd(
            replica["trajectory"],
            replica["topology"],
            dt=dt,
            types=frames.types,
            type_names=frames.type_names,
        )
        for replica in run["replicas"]
        if replica["n_frames"] > 0
    ]


def analyze(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Run every stage (cached), compare observables with the AA reference and write
    ``metrics.json``, ``observables.json``, the figures (``structure``, ``angles``, ``order``,
    ``dynamics``, ``cdf``; PNG and SVG), ``training.png`` and ``report.md``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    aa, cg = pipeline.generate(cfg), pipeline.map_stage(cfg)
    teachers = pipeline.teach(cfg) if cfg.teacher.source == "ensemble" else None
    models, runs = pipeline.distill(cfg), pipeline.simulate(cfg)
    if "classical" in runs:
        models["classical"] = pipeline.classical(cfg)
    frames = read_h5md(cg["dataset"])
    settings = OmegaConf.to_container(cfg.analysis, resolve=True)
    reference = Trajectory.from_frames(frames, name=str(cg["dataset"]))
    log.info("observables of the AA-mapped reference (%d frames)", reference.n_frames)
    # The reference resolves the `auto` settings; every CG run is measured with its values.
    analyses = {
        REFERENCE: evaluate(
            settings, reference, step=cfg.analysis.reference_stride, progress=cfg.progress
        )
    }
    dt = cfg.simulate.report_interval * cfg.simulate.timestep
    for name, run in runs.items():
        replicas = cg_runs(run, frames, dt)
        if replicas:
            log.info("observables of the %s runs (%d replicas)", name, len(replicas))
            analyses[name] = evaluate(analyses[REFERENCE].settings, replicas, progress=cfg.progress)
    curves = {source: analysis.results for source, analysis in analyses.items()}
    for source, analysis in analyses.items():
        for observable, reason in analysis.skipped.items():
            log.warning("%s of %s skipped: %s", observable, source, reason)
    deviations = compare_sources(curves, REFERENCE)
    figures = plot_sources(curves, output_dir)
    members = teachers["members"] if teachers else []
    histories = {f"teacher {k + 1}": m["history"] for k, m in enumerate(members)}
    trained = ("soft_student", "student", "baseline")
    histories.update({name: models[name]["history"] for name in trained if name in models})
    plot_loss_curves(histories, output_dir / "training.png", title=system_name(cfg))
    timing = _timings(cfg, teachers, models, frames)
    metrics = {
        "system": {"name": system_name(cfg), "n_beads": cg["n_beads"], "n_frames": cg["n_frames"]},
        "analysis": analysis_facts(analyses),
        "observables": deviations,
        "scalars": scalars(curves),
        "forces": {
            **(
                {
                    "teachers": [{k: v for k, v in m.items() if k != "history"} for m in members],
                    "teacher": _test_metrics(members[0]),
                    "ensemble": teachers["ensemble"],
                }
                if teachers
                else {}
            ),
            **{
                name: _test_metrics(models[name])
                for name in ("student", "baseline", "classical")
                if name in models
            },
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
            **{
                name: models[name]["model"]
                for name in ("student", "baseline", "classical")
                if name in models
            },
        },
    }
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    save_curves(curves, output_dir / "observables.json")
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (output_dir / "report.md").write_text(render_report(cfg, metrics, figures))
    line = result_line(cfg, metrics, keys={name: run["model_key"] for name, run in runs.items()})
    (output_dir / RESULT_FILE).write_text(json.dumps(line) + "\n")
    log.info("result: %s", json.dumps(line))
    return metrics


def system_name(cfg: DictConfig) -> str:
    """The system a run is about: ``input.name`` (default: the trajectory file's stem) for
    imported data, else the built-in system's name."""
    if cfg.input.trajectory is None:
        return str(cfg.system.name)
    return str(cfg.input.get("name") or Path(cfg.input.trajectory).stem)


def analysis_facts(analyses: dict[str, Analysis]) -> dict[str, Any]:
    """What the analysis adapted to the system: the reference's first shell (r1 in nm, the mean
    number of beads within it, the onset of g(r) in nm, each pair's first minimum in nm), the
    settings resolved from ``auto`` and the observables skipped, {observable: {source: why}}."""
    reference = analyses[REFERENCE]
    shell = reference.shell
    skipped: dict[str, dict[str, str]] = {}
    for source, analysis in analyses.items():
        for observable, reason in analysis.skipped.items():
            skipped.setdefault(observable, {})[source] = reason
    return {
        "first_shell": {
            key: shell[key] for key in ("radius", "coordination", "onset", "pairs", "problem")
        },
        "n_species": shell["n_species"],
        "auto": reference.auto,
        "skipped": skipped,
    }


#: The one-line result every run writes, which ``cgkd summarize`` collects.
RESULT_FILE = "result.json"
#: Columns of a result line per model: (name, observable, metric).
RESULT_DEVIATIONS = (
    ("rdf_mad", "rdf", "MAD"),
    ("adf_jsd", "adf", "JSD"),
    ("cdf_jsd", "cdf", "JSD"),
    ("q6_jsd", "q6", "JSD"),
    ("tetrahedral_jsd", "tetrahedral", "JSD"),
    ("d_ratio", "msd", "D ratio"),
)


def result_line(cfg: DictConfig, metrics: dict[str, Any], keys: dict[str, str]) -> dict[str, Any]:
    """One run's result in one JSON object: its seeds and loss, and per simulated model
    (``keys``: model name -> cache key) the held-out force RMSE vs mapped forces (kJ/mol/nm)
    and, for the student, vs its teacher labels (two-stage: both models also vs the teacher on
    held-out soft frames, ``force_rmse_soft``), the deviations from AA, the stable fraction,
    ms per force evaluation and the speedup over the teacher ensemble's force evaluation; and
    the system's name, its first-shell radius r1 (nm), the settings resolved from ``auto`` and
    the observables skipped ({observable: {source: why}})."""
    timings = metrics["timings"]["ms_per_force_evaluation"]
    rows = {}
    for model, key in keys.items():
        row: dict[str, Any] = {
            "key": key,
            "force_rmse_mapped": metrics["forces"][model]["force_rmse_mapped"],
            "stable_fraction": metrics["stability"][model]["stable_fraction"],
            "ms_per_force_evaluation": timings[model],
        }
        for reference in ("ensemble", "teacher"):
            if reference in timings:  # the cgkd ensemble, else an external TorchScript teacher
                row[f"speedup_vs_{reference}"] = timings[reference] / timings[model]
                break
        for error in ("force_rmse_teacher", "force_rmse_soft"):  # vs teacher labels, soft frames
            if error in metrics["forces"][model]:
                row[error] = metrics["forces"][model][error]
        for name, observable, metric in RESULT_DEVIATIONS:
            value = metrics["observables"].get(observable, {}).get(model, {}).get(metric)
            if value is not None:
                row[name] = value
        rows[model] = row
    analysis = metrics["analysis"]
    return {
        "system": system_name(cfg),
        "seed": int(cfg.seed),
        "data_seed": int(cfg.data_seed),
        "loss": OmegaConf.to_container(cfg.loss, resolve=True),
        "n_members": int(cfg.teacher.n_members),
        "teacher": cfg.teacher.source,
        "schedule": cfg.schedule.kind,
        **_two_stage_facts(cfg, metrics["forces"]["student"]),
        "first_shell": analysis["first_shell"]["radius"],
        "auto": analysis["auto"],
        "skipped": analysis["skipped"],
        "models": rows,
    }


def _two_stage_facts(cfg: DictConfig, student: dict[str, Any]) -> dict[str, Any]:
    """How many hard frames and how picked, the soft-stage student's held-out error, and how
    much of the soft stage fine-tuning forgot (nothing for the single schedule)."""
    if cfg.schedule.kind == "single":
        return {}
    return {
        "screening": cfg.screening.method,
        "n_hard": student["n_hard"],
        "n_soft_mixed": student["n_soft_mixed"],
        "soft_only_force_rmse_mapped": student["start_force_rmse_mapped"],
        # Forgetting: the error against the teacher on held-out soft frames before fine-tuning
        # (each model's row has it after; absent from models cached before it was recorded).
        "soft_only_force_rmse_soft": student.get("start_force_rmse_soft"),
    }


def _test_metrics(record: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in record.items()
        if k not in ("history", "key", "model", "torchscript", "checkpoint")
    }


def _timings(
    cfg: DictConfig, teachers: dict[str, Any] | None, models: dict[str, Any], frames: Any
) -> dict[str, float]:
    """ms per force evaluation of the student, the baseline and the CG teachers, each in the
    flavour (fused or plain) that ``simulate.kernels`` runs."""
    files = {
        name: Path(models[name]["model"])
        for name in ("student", "baseline", "classical")
        if name in models
    }
    if teachers:
        files["teacher"] = Path(teachers["dir"]) / "teacher_0.ts"
        files["ensemble"] = Path(teachers["dir"]) / "ensemble.ts"
    elif cfg.teacher.source == "torchscript":
        files["teacher"] = Path(cfg.teacher.path)
    settings = pipeline.md_settings(cfg)
    return {
        name: time_force_evaluation(
            model_file(path, fused_path(path), settings),
            frames.positions[-1],
            frames.boxes[-1],
            frames.masses,
            cfg.analysis.timing_repeats,
        )
        for name, path in files.items()
    }


def _teacher_words(cfg: DictConfig) -> str:
    if cfg.teacher.source == "ensemble":
        return f"{cfg.teacher.n_members} teachers"
    return f"teacher: {cfg.teacher.source} {cfg.teacher.path or cfg.system.name}"


def _fmt(value: Any, unit: str = "") -> str:
    """A number to 4 significant digits with its unit; "n/a" when unknown (None)."""
    if value is None:
        return "n/a"
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return f"{text} {unit}" if unit else text


#: Units of the settings that ``auto`` resolves, by key.
_AUTO_UNITS = {"cutoff": "nm", "r_min": "nm", "r_max": "nm", "radius": "nm"}


def shell_lines(analysis: dict[str, Any]) -> list[str]:
    """Markdown lines: the reference's first shell, the settings taken from it (``auto``) and
    the observables skipped, with the reason."""
    shell = analysis["first_shell"]
    if shell["radius"] is None:
        lines = [f"First shell of the AA reference: not found ({shell['problem']})."]
    else:
        lines = [
            f"First shell of the AA reference: r1 = {_fmt(shell['radius'], 'nm')}, the first "
            f"minimum of the total g(r), with {_fmt(shell['coordination'])} beads within it on "
            "average."
        ]
    pairs = [f"{name[4:]} {_fmt(r, 'nm')}" for name, r in shell["pairs"].items()]
    if pairs:
        lines[0] += f" First minima per species pair: {', '.join(pairs)}."
    lines.append("")
    if analysis["auto"]:
        lines += ["| setting (auto) | value |", "|---|---|"]
        for setting, value in analysis["auto"].items():
            lines.append(f"| analysis.{setting} | {_auto_value(setting, value, analysis)} |")
        lines.append("")
    if analysis["skipped"]:
        lines += ["Skipped observables:", "", "| observable | source | why |", "|---|---|---|"]
        for observable, sources in analysis["skipped"].items():
            for source, reason in sources.items():
                lines.append(f"| {observable} | {source} | {reason} |")
        lines.append("")
    return lines


def _auto_value(setting: str, value: Any, analysis: dict[str, Any]) -> str:
    """The table cell of a setting resolved from ``auto``, with its unit or its reason."""
    if setting != "tetrahedral.enabled":
        return _fmt(value, _AUTO_UNITS.get(setting.split(".")[-1], ""))
    coordination = analysis["first_shell"]["coordination"]
    return (
        f"{'on' if value else 'off'} ({analysis['n_species']} bead species, "
        f"{_fmt(coordination)} beads within r1; on for 1 species with <= "
        f"{TETRAHEDRAL_MAX_COORDINATION:g})"
    )


def render_report(cfg: DictConfig, metrics: dict[str, Any], figures: dict[str, Path]) -> str:
    """A markdown report of the settings, observables, stability, forces and timings."""
    lines = [
        f"# cgkd report: {system_name(cfg)}",
        "",
        f"{metrics['system']['n_beads']} beads, {metrics['system']['n_frames']} mapped AA frames; "
        f"{_teacher_words(cfg)}; {cfg.schedule.kind} schedule; loss weights w_F={cfg.loss.w_F}, "
        f"w_f={cfg.loss.w_f}, "
        f"w_E={cfg.loss.w_E}, w_eps={cfg.loss.w_eps}.",
        "",
        "## Structure and dynamics versus the AA reference",
        "",
        "Metrics: MAD = mean absolute deviation over bins (units of the curve), rel. deviation ="
        " integral of |difference| over integral of the reference, JSD = Jensen-Shannon"
        " divergence of the distributions (bits; 0 identical, 1 disjoint), D ratio = CG over"
        " AA diffusion coefficient.",
        "",
        *shell_lines(metrics["analysis"]),
        *deviation_tables(metrics["observables"]),
        *scalar_table(metrics["scalars"]),
    ]
    lines += [f"![{name}]({path.name})\n" for name, path in figures.items()]
    lines += [
        "## Stability of the CG runs",
        "",
        "| model | replica | seed | stable | steps | message |",
        "|---|---|---|---|---|---|",
    ]
    for model, stability in metrics["stability"].items():
        for k, r in enumerate(stability["replicas"]):
            lines.append(
                f"| {model} | {k} | {r['seed']} | {r['stable']} | {r['steps_completed']} "
                f"| {_fmt(r['message'])} |"
            )
    forces = metrics["forces"]
    lines += [
        "",
        "## Forces on held-out frames (kJ/mol/nm)",
        "",
        "| model | RMSE vs mapped | RMSE vs teacher mean |",
        "|---|---|---|",
    ]
    for k, teacher in enumerate(forces.get("teachers", [])):
        lines.append(f"| teacher {k + 1} | {_fmt(teacher['force_rmse_mapped'])} | |")
    if "ensemble" in forces:
        lines.append(f"| ensemble | {_fmt(forces['ensemble']['force_rmse_mapped'])} | |")
    for model in ("student", "baseline", "classical"):
        if model not in forces:
            continue
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
    lines.append(f"| AA MD | {_fmt(timings['aa_ns_per_day'], 'ns/day')} |")
    for model, value in timings["cg_ns_per_day"].items():
        lines.append(
            f"| CG MD, {model} | {_fmt(value, 'ns/day')} "
            f"({_fmt(timings['cg_ms_per_step'][model], 'ms/step')}) |"
        )
    for model, value in timings["ms_per_force_evaluation"].items():
        lines.append(f"| force evaluation, {model} | {_fmt(value, 'ms')} |")
    lines += ["", "![training](training.png)", ""]
    return "\n".join(lines)


def deviation_tables(observables: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Markdown lines: one table per model of its deviations from the reference."""
    models = list(dict.fromkeys(m for row in observables.values() for m in row))
    lines: list[str] = []
    for model in models:
        lines += [f"### {model} vs AA", "", "| observable | metrics |", "|---|---|"]
        for name, row in observables.items():
            if model in row:
                values = ", ".join(f"{k} {v:.4g}" for k, v in row[model].items())
                lines.append(f"| {name} | {values} |")
        lines.append("")
    return lines


def scalar_table(table: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Markdown lines: the scalar summaries (D, mean order parameters) of every source."""
    if not table:
        return []
    sources = list(dict.fromkeys(s for row in table.values() for s in row))
    lines = ["| quantity | " + " | ".join(sources) + " |", "|---" * (len(sources) + 1) + "|"]
    for label, row in table.items():
        unit = next(iter(row.values()))["unit"]
        cells = []
        for source in sources:
            entry = row.get(source)
            if entry is None:
                cells.append("")
            elif entry["error"] == entry["error"]:  # not NaN
                cells.append(f"{entry['value']:.4g} ± {entry['error']:.2g}")
            else:
                cells.append(f"{entry['value']:.4g}")
        lines.append(f"| {label}{f' ({unit})' if unit else ''} | " + " | ".join(cells) + " |")
    return [*lines, ""]
