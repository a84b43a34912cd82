"""The stage graph of a config, printed: as a table (``cgkd graph``) or as a Mermaid
flowchart (``python -m cgkd.stages.graph [overrides ...]``, drawn in the docs)."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from cgkd.stages.base import StageDir
from cgkd.stages.runner import Pipeline, Plan


def _plans(pipeline: Pipeline, roots: list[Plan]) -> list[Plan]:
    seen: dict[str, Plan] = {}
    for root in roots:
        for plan in root.walk():
            seen.setdefault(plan.directory_name, plan)
    return list(seen.values())


def reads_text(plan: Plan, separator: str = ", ") -> str:
    """A plan's config reads and files, paths of one section folded: ``a.{b,c}``."""
    sections: dict[str, list[str]] = {}
    for path in [*plan.reads, *plan.files]:
        head, _, tail = path.rpartition(".")
        sections.setdefault(head, []).append(tail)
    return separator.join(
        head + "." + (tails[0] if len(tails) == 1 else "{" + ",".join(tails) + "}")
        if head
        else separator.join(tails)
        for head, tails in sections.items()
    )


def table(pipeline: Pipeline, roots: list[Plan]) -> str:
    """One line per stage the roots need, upstream first: name, key, whether it is cached,
    the config it reads and the stages it needs (role=stage)."""
    rows = [("stage", "key", "cached", "reads", "needs")]
    for plan in _plans(pipeline, roots):
        done = StageDir(Path(pipeline.cfg.cache_dir) / plan.directory_name, plan.key).done
        needs = ",".join(f"{role}={child.request}" for role, child in plan.upstream.items())
        cached = ("yes" if done else "no") if plan.stage.cached else "-"
        rows.append((str(plan.request), plan.key, cached, reads_text(plan) or "-", needs or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
        + "  "
        + row[4]
        for row in rows
    )


def mermaid(pipeline: Pipeline, roots: list[Plan]) -> str:
    """A Mermaid flowchart of the stages the roots need (arrows from upstream, labelled by
    the role the upstream record plays)."""
    plans = _plans(pipeline, roots)
    ids = {plan.directory_name: f"s{k}" for k, plan in enumerate(plans)}
    lines = ["flowchart TD"]
    for plan in plans:
        reads = reads_text(plan, "<br/>")
        label = f"<b>{plan.request}</b>" + (f"<br/><small>{reads}</small>" if reads else "")
        lines.append(f'    {ids[plan.directory_name]}["{label}"]')
    for plan in plans:
        for role, child in plan.upstream.items():
            lines.append(f"    {ids[child.directory_name]} -->|{role}| {ids[plan.directory_name]}")
    return "\n".join(lines)


def config_graph(cfg: DictConfig, command: str = "run", style: str = "table") -> str:
    """The graph of what ``cgkd <command>`` builds for ``cfg``."""
    from cgkd.stages.commands import requests

    pipeline = Pipeline(cfg)
    roots = [pipeline.plan(request) for request in requests(cfg, command).values()]
    return (mermaid if style == "mermaid" else table)(pipeline, roots)


def main(argv: list[str]) -> None:
    """Print the Mermaid graph of ``cgkd run`` for the config with Hydra ``argv`` overrides."""
    from cgkd.config import compose

    print(config_graph(compose(argv), "run", "mermaid"))


if __name__ == "__main__":
    main(sys.argv[1:])
