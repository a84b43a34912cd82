"""Planning and running stages: keys first (from the config alone), then builds, upstream
first, each reused from the cache when done."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from joblib import Parallel, delayed
from omegaconf import DictConfig, OmegaConf

from cgkd import distributed
from cgkd.stages.base import (
    EXECUTION,
    Context,
    Record,
    Request,
    Stage,
    StageDir,
    covered,
    derive_key,
    file_identity,
    plain,
    without,
)

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """A stage planned for a config: its key, what went into it, and its upstream plans."""

    request: Request
    stage: Stage
    key: str
    reads: dict[str, Any]
    files: dict[str, str | None]
    upstream: dict[str, Plan] = field(default_factory=dict)

    @property
    def directory_name(self) -> str:
        """``<stage>[-<param>]-<key>``."""
        name = self.stage.name if self.request.param is None else f"{self.request}"
        return f"{name.replace('[', '-').rstrip(']')}-{self.key}"

    def walk(self) -> list[Plan]:
        """This plan and every plan upstream of it, each once, upstream first."""
        seen: dict[str, Plan] = {}

        def visit(plan: Plan) -> None:
            for child in plan.upstream.values():
                visit(child)
            seen.setdefault(plan.directory_name, plan)

        visit(self)
        return list(seen.values())


class Pipeline:
    """The stages of one config: ``plan`` keys them without running anything, ``run`` builds
    what a request needs (upstream first) and returns its record.

    Your own data (``input.trajectory``): the import stage runs first, since the data's
    temperature replaces ``system.temperature`` (which the prior, ``simulate.temperature`` and
    ``sampler.temperature`` follow unless set).
    """

    def __init__(self, cfg: DictConfig, stages: dict[str, Stage] | None = None) -> None:
        from cgkd.stages.registry import STAGES

        self.cfg = cfg
        self.stages = STAGES if stages is None else stages
        self._plans: dict[Request, Plan] = {}
        self._records: dict[str, Record] = {}
        self._identities: dict[tuple[str, int, int], str] = {}
        if cfg.input.trajectory is not None and "import" in self.stages:
            imported = self.run(Request("import"))
            cfg.system.temperature = imported["temperature"]
            self._plans.clear()  # planned before the temperature was known

    def plan(self, request: Request | str) -> Plan:
        """The request's key and inputs, and those of everything upstream (nothing runs)."""
        request = Request(request) if isinstance(request, str) else request
        if request in self._plans:
            return self._plans[request]
        if request.stage not in self.stages:
            raise ValueError(f"no stage {request.stage!r}; the stages: {', '.join(self.stages)}")
        stage = self.stages[request.stage]
        context = Context(self.cfg, stage, request.param)
        reads = stage.paths(stage.reads, context)
        if undeclared := [path for path in context.accessed if not covered(path, reads)]:
            raise RuntimeError(f"stage {stage.name} decides its reads from undeclared {undeclared}")
        context.declared = reads
        file_paths = stage.paths(stage.files, context)
        context.declared = (*reads, *file_paths)
        left_out = (*EXECUTION, *stage.ignores)
        values = {path: without(context(path), path, left_out) for path in reads}
        files = {path: self._identity(path, context(path)) for path in file_paths}
        upstream = {role: self.plan(wanted) for role, wanted in stage.needs(context).items()}
        key = derive_key(
            stage,
            request.param,
            values,
            files,
            {role: plan.key for role, plan in upstream.items()},
        )
        plan = Plan(request, stage, key, values, files, upstream)
        self._plans[request] = plan
        return plan

    def _identity(self, path: str, value: Any) -> str | None:
        """The identity of the input file named by config ``path`` (None when unset), hashed
        once per file version in this pipeline."""
        if value is None:
            return None
        file = Path(value)
        if not file.is_file():
            raise FileNotFoundError(f"{path}={value} does not exist; fix {path}")
        stat = file.stat()
        version = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
        if version not in self._identities:
            self._identities[version] = file_identity(file)
        return self._identities[version]

    def run(self, request: Request | str) -> Record:
        """The request's record, building it (and what it needs) unless cached."""
        plan = self.plan(request)
        return self._run(plan)

    def run_parallel(self, requests: list[Request], n_jobs: int) -> None:
        """Build ``requests`` (each with its upstream) in ``n_jobs`` worker processes sharing
        the run's torch threads; those already cached are skipped."""
        plans = [self.plan(request) for request in requests]
        missing = [plan for plan in plans if not self._stage_dir(plan).done]
        if n_jobs <= 1 or len(missing) <= 1 or distributed.world().size > 1:
            return  # a data-parallel launch trains members one by one, each on every rank
        for plan in missing:  # what they share is built once, here
            for child in plan.upstream.values():
                self._run(child)
        threads = max(1, torch.get_num_threads() // n_jobs)
        container = OmegaConf.to_container(self.cfg, resolve=True)
        Parallel(n_jobs=min(n_jobs, len(missing)))(
            delayed(_run_in_worker)(container, plan.request, threads) for plan in missing
        )

    def _stage_dir(self, plan: Plan) -> StageDir:
        return StageDir(Path(self.cfg.cache_dir) / plan.directory_name, plan.key)

    def _run(self, plan: Plan) -> Record:
        name = plan.directory_name
        if name in self._records:
            return self._records[name]
        upstream = {role: self._run(child) for role, child in plan.upstream.items()}
        stage = plan.stage
        context = Context(
            self.cfg,
            stage,
            plan.request.param,
            upstream=upstream,
            declared=(*plan.reads, *plan.files),
        )
        if stage.cached:

            def build(out: Path) -> Record:
                context.out = out
                started = time.perf_counter()
                record = stage.build(context)
                return {**record, "seconds": round(time.perf_counter() - started, 3)}

            inputs = {
                "stage": str(plan.request),
                "reads": plan.reads,
                "files": plan.files,
                "upstream": {role: child.directory_name for role, child in plan.upstream.items()},
            }
            record = self._stage_dir(plan).run(
                build, inputs, keep=stage.keep, together=stage.data_parallel
            )
        else:
            record = {"key": plan.key, **stage.build(context)}
        self._records[name] = record
        return record


def _run_in_worker(config: dict[str, Any], request: Request, threads: int) -> str:
    """Build one request in a worker process with ``threads`` torch threads."""
    torch.set_num_threads(threads)
    return Pipeline(OmegaConf.create(config)).run(request)["key"]


def run_stage(cfg: DictConfig, request: Request | str) -> Record:
    """Build one stage of ``cfg`` (and what it needs): its record."""
    return Pipeline(cfg).run(request)


__all__ = ["Pipeline", "Plan", "plain", "run_stage"]
