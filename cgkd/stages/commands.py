"""What each ``cgkd <command>`` builds: the stage requests of a config, and running them."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from cgkd.stages.base import Context, Request
from cgkd.stages.mapping import beads
from cgkd.stages.reference import reference_request
from cgkd.stages.runner import Pipeline
from cgkd.stages.simulate import simulated_models

#: Commands and what they build.
COMMANDS = {
    "run": "every stage needed, then metrics, figures and report.md",
    "generate": "AA reference trajectory with forces (H5MD); your own data: import it",
    "beads": "dry run of the mapping: its bead summary, before any frames are mapped",
    "map": "CG dataset: bead positions, mapped forces, types, masses, bonds",
    "prior": "repulsion, bond and angle priors fitted to the mapped data",
    "teach-member": "one teacher (teacher.member=K); sweep it to train members as jobs",
    "teach": "teacher ensemble trained on mapped forces (reuses trained members)",
    "label": "the teacher's labels (forces, spread, energies) of the reference frames",
    "sample": "teacher MD at the sampler's temperatures, labelled: soft targets (two-stage)",
    "screen": "the reference frames picked for hard targets (two-stage), with descriptors",
    "distill": "student and baseline models (schedule: single or two_stage)",
    "refine": "the student (refine.start) refined by relative entropy, sampling its own CG MD",
    "classical": "the classical pair-table baseline (MS-CG), a native OpenMM System",
    "simulate": "CG MD in OpenMM of simulate.models (student, baseline, teacher, ...)",
    "analyze": "same as run: observables and metrics against the reference, the report",
    "graph": "the stages a run needs, their cache keys and whether they are cached",
}


def requests(cfg: DictConfig, command: str) -> dict[str, Request]:
    """The stage requests of ``command`` for ``cfg``, by the name their records go under."""
    context = Context.unchecked(cfg)
    if command == "generate":
        return {"aa": reference_request(context)}
    if command == "teach-member":
        return {"member": Request("member", member_index(cfg))}
    if command == "distill":
        return {name: Request(name) for name in ("student", "baseline")}
    if command == "simulate":
        return {name: Request("simulate", name) for name in simulated_models(context)}
    if command in ("run", "analyze", "graph"):
        return {"analysis": Request("analyze")}
    if command == "teach":
        return {"teach": Request("teach")}
    if command == "refine":
        return {"refined": Request("refined")}
    return {command: Request(command)}


def member_index(cfg: DictConfig) -> int:
    """``teacher.member``, checked against ``teacher.n_members``."""
    member, n_members = cfg.teacher.member, int(cfg.teacher.n_members)
    if member is None or not 0 <= int(member) < n_members:
        raise ValueError(
            f"teacher.member={member} is not a member index; use 0..{n_members - 1} "
            f"(e.g. cgkd teach-member --multirun teacher.member=0,1,2,3)"
        )
    return int(member)


def run_command(cfg: DictConfig, command: str) -> dict[str, Any]:
    """Build what ``command`` needs for ``cfg``: its records by name (``beads``: the mapping's
    bead summary)."""
    if command == "beads":  # your own data is not imported for a dry run
        own = cfg.input.trajectory is not None
        return beads(cfg, None if own else Pipeline(cfg).run(Request("generate")))
    pipeline = Pipeline(cfg)
    wanted = requests(cfg, command)
    # Ensemble members train in teacher.n_jobs processes first, whoever needs them.
    plans = [pipeline.plan(request) for request in wanted.values()]
    members = {p.request for plan in plans for p in plan.walk() if p.stage.name == "member"}
    pipeline.run_parallel(sorted(members, key=str), int(cfg.teacher.n_jobs))
    return {name: pipeline.run(request) for name, request in wanted.items()}
