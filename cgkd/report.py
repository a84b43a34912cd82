"""The run report: ``report.md``, the figures, ``metrics.json``, ``observables.json`` and the
one-line ``result.json`` of the analyze stage's measurements (:mod:`cgkd.stages.analyze`),
with the facts of the run that asked for them (:func:`render`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cgkd.analysis import REFINED, Computed, named
from cgkd.observables.sources import load_curves, plot_sources, save_curves
from cgkd.observables.suite import TETRAHEDRAL_MAX_COORDINATION
from cgkd.results import (
    CURVES_FILE,
    METRICS_FILE,
    RESULT_FILE,
    TRAINED_MODELS,
    AnalysisFacts,
    ModelResult,
    RunFacts,
    RunResult,
    Timings,
    measured,
    metric,
)
from cgkd.training.curves import plot_loss_curves, plot_refinement

log = logging.getLogger(__name__)

#: Share of a model's bond lengths outside the AA reference's 0.1-99.9 % range above which
#: the report says its molecules come apart (the reference's own share is 0.2 %).
BOND_DRIFT = 0.05


def render(cfg: DictConfig, analysis: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    """Render the analyze stage's record (``analysis``) as the run of ``cfg`` into
    ``output_dir``: ``metrics.json``, ``observables.json``, the figures (``structure``,
    ``angles``, ``order``, ``dynamics``, ``cdf``; PNG and SVG), ``training.png``,
    ``report.md``, ``result.json`` and the resolved ``config.yaml``; returns the content of
    ``metrics.json``."""
    measured = RunResult.from_json(json.loads(Path(analysis["metrics"]).read_text()))
    computed = Computed(
        named(measured, run_facts(cfg)),
        load_curves(analysis["curves"]),
        json.loads(Path(analysis["histories"]).read_text()),
    )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    write_run(computed, output_dir)
    return computed.result.to_json()


def system_name(cfg: DictConfig) -> str:
    """The system a run is about: ``input.name`` (default: the trajectory file's stem) for
    imported data, else the built-in system's name."""
    if cfg.input.trajectory is None:
        return str(cfg.system.name)
    return str(cfg.input.get("name") or Path(cfg.input.trajectory).stem)


def run_facts(cfg: DictConfig) -> RunFacts:
    """What the run is (see :class:`RunFacts`), from its config."""
    two_stage = cfg.schedule.kind != "single"
    return RunFacts(
        system=system_name(cfg),
        seed=int(cfg.seed),
        data_seed=int(cfg.data_seed),
        loss=OmegaConf.to_container(cfg.loss, resolve=True),
        n_members=int(cfg.teacher.n_members),
        teacher=cfg.teacher.source,
        teacher_path=None if cfg.teacher.path is None else str(cfg.teacher.path),
        schedule=cfg.schedule.kind,
        screening=cfg.screening.method if two_stage else None,
    )


def write_run(computed: Computed, output_dir: Path) -> Path:
    """Write a computed analysis into ``output_dir``: ``metrics.json``, ``observables.json``,
    the observable figures, ``training.png`` (when a model was trained), ``refinement.png``
    (when one was refined), ``report.md`` and ``result.json``; returns the report's path."""
    result = computed.result
    figures = plot_sources(computed.curves, output_dir)
    epochs = {name: h for name, h in computed.histories.items() if name != REFINED}
    training: list[Path] = []  # a run of the classical model alone trained nothing
    if epochs:
        training.append(
            plot_loss_curves(epochs, output_dir / "training.png", title=result.system.name)
        )
    if computed.histories.get(REFINED):
        rounds = computed.histories[REFINED]
        training.append(
            plot_refinement(rounds, output_dir / "refinement.png", result.system.n_beads)
        )
    (output_dir / METRICS_FILE).write_text(json.dumps(result.to_json(), indent=2, default=str))
    save_curves(computed.curves, output_dir / CURVES_FILE)
    report = output_dir / "report.md"
    report.write_text(render_report(result, figures, training))
    for drift in bond_drift_lines(result):
        log.warning(drift)
    line = result.line().to_json()
    (output_dir / RESULT_FILE).write_text(json.dumps(line) + "\n")
    log.info("result: %s", json.dumps(line))
    return report


def metrics_table(headers: list[str], rows: list[tuple[list[str], ModelResult]]) -> list[str]:
    """Markdown lines: one row per (leading cells, model result), the leading ``headers``
    first, then a column per metric any row measured (:data:`cgkd.results.METRICS`)."""
    columns = measured(entry for _, entry in rows)
    lines = [
        "| " + " | ".join([*headers, *(m.header for m in columns)]) + " |",
        "|---" * len(headers) + "|---:" * len(columns) + "|",
    ]
    for cells, entry in rows:
        values = [m.format(entry.value(m.name)) for m in columns]
        lines.append("| " + " | ".join([*cells, *values]) + " |")
    return lines


def render_report(
    result: RunResult, figures: dict[str, Path], training: Sequence[Path] = ()
) -> str:
    """A markdown report of a run: its settings, the results per model, observables,
    stability, forces and timings; ``figures``: {name: PNG path} of the observables;
    ``training``: the figures of the training, if any (loss curves, refinement rounds)."""
    run = result.run
    if run is None or result.analysis is None:
        raise ValueError("a report needs the run facts and the analysis facts of the run")
    loss = run.loss
    lines = [
        f"# cgkd report: {result.system.name}",
        "",
        f"{result.system.n_beads} beads, {result.system.n_frames} mapped AA frames; "
        f"{_teacher_words(result)}; {run.schedule} schedule; loss weights w_F={loss['w_F']}, "
        f"w_f={loss['w_f']}, w_E={loss['w_E']}, w_eps={loss['w_eps']}.",
        "",
        "## Results per model",
        "",
        *metrics_table(
            ["model"], [([name], entry) for name, entry in result.line().models.items()]
        ),
        "",
        "## Structure and dynamics versus the AA reference",
        "",
        "Metrics: MAD = mean absolute deviation over bins (units of the curve), rel. deviation ="
        " integral of |difference| over integral of the reference, JSD = Jensen-Shannon"
        " divergence of the distributions (bits; 0 identical, 1 disjoint), D ratio = CG over"
        " AA diffusion coefficient.",
        "",
        *shell_lines(result.analysis),
        *deviation_tables(result.observables),
        *scalar_table(result.scalars),
    ]
    lines += [f"![{name}]({path.name})\n" for name, path in figures.items()]
    lines += [
        "## Stability of the CG runs",
        "",
        "| model | replica | seed | stable | steps | message |",
        "|---|---|---|---|---|---|",
    ]
    for model, stability in result.stability.items():
        for k, r in enumerate(stability.replicas):
            lines.append(
                f"| {model} | {k} | {r.seed} | {r.stable} | {r.steps_completed} "
                f"| {_fmt(r.message)} |"
            )
    if drifts := bond_drift_lines(result):
        lines += ["", *drifts]
    frictions = {m: s for m, s in result.stability.items() if s.frictions}
    if frictions:
        lines += ["", "Friction per bead type (1/ps):", "", "| model | bead type | friction |"]
        lines.append("|---|---|---|")
        for model, stability in frictions.items():
            lines += [
                f"| {model} | {kind} | {value:.3g} |" for kind, value in stability.frictions.items()
            ]
        if matched := sorted({s.matched_to for s in frictions.values() if s.matched_to}):
            lines += ["", f"Frictions matched to the AA reference's {', '.join(matched)}."]
    lines += ["", *force_lines(result)]
    timings = result.timings
    evaluation = metric("ms_per_force_evaluation")
    lines += ["", "## Timings (this machine)", "", "| what | value |", "|---|---|"]
    lines.append(f"| AA MD{_where(timings, 'aa')} | {_fmt(timings.aa_ns_per_day, 'ns/day')} |")
    for model, value in timings.cg_ns_per_day.items():
        lines.append(
            f"| CG MD, {model}{_where(timings, model)} | {_fmt(value, 'ns/day')} "
            f"({_fmt(timings.cg_ms_per_step[model], 'ms/step')}) |"
        )
    for model, value in timings.ms_per_force_evaluation.items():
        lines.append(f"| {evaluation.label}, {model} | {_fmt(value, evaluation.unit)} |")
    for figure in training:
        lines += ["", f"![{figure.stem}]({figure.name})", ""]
    return "\n".join(lines)


def bond_drift_lines(result: RunResult) -> list[str]:
    """One line per model whose runs stayed finite but whose bonds drifted: more than
    :data:`BOND_DRIFT` of its bond lengths outside the AA reference's 0.1-99.9 % range."""
    return [
        f"{name}: {entry.bonds_outside:.1%} of its bond lengths lie outside the AA reference's "
        "0.1-99.9 % range (0.2 % for AA itself): its molecules come apart during CG MD; "
        "compare the bonds figure, and prefer a model that keeps them (on reline, the "
        "distilled student does)."
        for name, entry in result.line().models.items()
        if entry.bonds_outside is not None and entry.bonds_outside > BOND_DRIFT
    ]


def force_lines(result: RunResult) -> list[str]:
    """Markdown lines: held-out force errors of every teacher (numbered from 0, as their
    files and ``teacher.member``), the ensemble and the models, and the teachers' spread."""
    forces = result.forces
    mapped, labels = metric("force_rmse_mapped"), metric("force_rmse_teacher")
    lines = [
        f"## Forces on held-out frames ({mapped.unit})",
        "",
        f"| model | {mapped.label} | {labels.label} |",
        "|---|---|---|",
    ]
    for k, teacher in enumerate(forces.teachers):
        member = teacher.facts.get("member", k)
        lines.append(f"| teacher {member} | {_fmt(teacher.force_rmse_mapped)} | |")
    if "ensemble" in forces.models:
        lines.append(f"| ensemble | {_fmt(forces.models['ensemble'].force_rmse_mapped)} | |")
    for model in TRAINED_MODELS:
        if model in forces.models:
            held = forces.models[model]
            teacher = "" if held.force_rmse_teacher is None else _fmt(held.force_rmse_teacher)
            lines.append(f"| {model} | {_fmt(held.force_rmse_mapped)} | {teacher} |")
    if forces.ensemble_mean_force_std is not None:
        lines.append(
            f"\nMean spread of the teachers' forces: "
            f"{_fmt(forces.ensemble_mean_force_std)} {mapped.unit}."
        )
    return lines


def _teacher_words(result: RunResult) -> str:
    run = result.run
    assert run is not None
    if run.teacher == "ensemble":
        # A run of the baseline or the classical model alone trains no teacher.
        return f"{run.n_members} teachers" if result.forces.teachers else "no teacher"
    return f"teacher: {run.teacher} {run.teacher_path or result.system.name}"


def _where(timings: Timings, name: str) -> str:
    """`` (CPU, 2 threads)`` after a timing's name where its stage recorded where it ran."""
    text = timings.ran_on.get(name)
    return f" ({text})" if text else ""


def _fmt(value: Any, unit: str = "") -> str:
    """A number to 4 significant digits with its unit; "n/a" when unknown (None)."""
    if value is None:
        return "n/a"
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return f"{text} {unit}" if unit else text


#: Units of the settings that ``auto`` resolves, by key.
_AUTO_UNITS = {"cutoff": "nm", "r_min": "nm", "r_max": "nm", "radius": "nm"}


def shell_lines(analysis: AnalysisFacts) -> list[str]:
    """Markdown lines: the reference's first shell, the settings taken from it (``auto``) and
    the observables skipped, with the reason."""
    shell = analysis.first_shell
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
    if analysis.auto:
        lines += ["| setting (auto) | value |", "|---|---|"]
        for setting, value in analysis.auto.items():
            lines.append(f"| analysis.{setting} | {_auto_value(setting, value, analysis)} |")
        lines.append("")
    if analysis.skipped:
        lines += ["Skipped observables:", "", "| observable | source | why |", "|---|---|---|"]
        for observable, sources in analysis.skipped.items():
            for source, reason in sources.items():
                lines.append(f"| {observable} | {source} | {reason} |")
        lines.append("")
    return lines


def _auto_value(setting: str, value: Any, analysis: AnalysisFacts) -> str:
    """The table cell of a setting resolved from ``auto``, with its unit or its reason."""
    if setting != "tetrahedral.enabled":
        return _fmt(value, _AUTO_UNITS.get(setting.split(".")[-1], ""))
    coordination = analysis.first_shell["coordination"]
    return (
        f"{'on' if value else 'off'} ({analysis.n_species} bead species, "
        f"{_fmt(coordination)} beads within r1; on for 1 species with <= "
        f"{TETRAHEDRAL_MAX_COORDINATION:g})"
    )


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
