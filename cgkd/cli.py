"""Command line: ``cgkd <stage> [hydra overrides ...]``.

Commands (cgkd.stages.commands): run (every stage needed, then the report), generate, beads
(a dry run of the mapping), map, prior, teach-member, teach, label, sample, screen, distill,
refine, classical, simulate, analyze (same as run) and graph (the stages a run needs and their cache
keys, without running anything).
Overrides and ``--multirun`` are Hydra's, for example ``cgkd run experiment=quick``,
``cgkd distill --multirun loss.w_E=0,0.1,1`` or
``cgkd teach-member --multirun teacher.member=0,1,2,3 hydra/launcher=slurm``.
``cgkd compare RUN_DIR ...`` builds one report over several runs (see cgkd.comparison);
``cgkd summarize SWEEP_DIR ...`` one table, mean +- std over seeds (see cgkd.summary).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from cgkd import distributed
from cgkd.config import CONFIG_DIR, valid_keys
from cgkd.runtime import keep_freed_memory_in_heap, torch_device, use_threads
from cgkd.stages.commands import COMMANDS as STAGES
from cgkd.stages.commands import run_command

#: Commands outside the Hydra pipeline.
COMMANDS = {
    "compare": "one report over several runs: cgkd compare RUN_DIR ... [-o DIR]",
    "summarize": "mean +- std over seeds of a sweep's results: cgkd summarize DIR ... [-o DIR]",
}
log = logging.getLogger("cgkd")
_stage_name = "run"


def _usage() -> str:
    rows = "\n".join(f"  {name:<13} {text}" for name, text in {**STAGES, **COMMANDS}.items())
    return f"usage: cgkd <stage> [overrides ...] [--multirun]\n\nstages:\n{rows}\n"


def _check_overrides(overrides: list[str]) -> str:
    """Compose the config once so a bad override gives one line, not a Hydra traceback."""
    if any(arg.startswith("-") for arg in overrides):
        return ""  # Hydra flags (--multirun, --cfg, ...): let Hydra parse them.
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            compose("config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as error:
        first = str(error).strip().splitlines()[0]
        valid = valid_keys(error) or f"see `cgkd {_stage_name} --cfg job` for the valid keys"
        return f"{first} ({valid})"
    return ""


#: Hydra flags that take a value in the next argument.
_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn"}
_VALUE_FLAGS |= {"--config-dir", "-cd", "--experimental-rerun", "--info", "-i"}


def _hydra_arguments(args: list[str], stage: str) -> list[str]:
    """Hydra's arguments with the ``stage=`` override added: flags (and their values) first,
    then every override, so argparse sees the overrides as one positional run."""
    flags, overrides = [], []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg.startswith("-"):
            flags.append(arg)
            takes_value = arg in _VALUE_FLAGS and index + 1 < len(args)
            if takes_value and not args[index + 1].startswith("-") and "=" not in args[index + 1]:
                flags.append(args[index + 1])
                index += 1
        else:
            overrides.append(arg)
        index += 1
    return [*flags, *overrides, f"stage={stage}"]


def _run_stage(cfg: DictConfig) -> Any:
    if cfg.stage == "graph":
        from cgkd.stages.graph import config_graph

        print(config_graph(cfg, "run"))
        return {}
    records = run_command(cfg, cfg.stage)
    if cfg.stage in ("run", "analyze") and distributed.world().primary:
        from cgkd.report import render

        return render(cfg, records["analysis"], Path(HydraConfig.get().runtime.output_dir))
    return records


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def _hydra_entry(cfg: DictConfig) -> None:
    # The stage travels in the config (not a global) so that launchers running jobs in other
    # processes (joblib, submitit) run the same stage.
    # MDAnalysis logs every topology guess at INFO; keep its warnings only.
    logging.getLogger("MDAnalysis").setLevel(logging.WARNING)
    if distributed.launch_rank() > 0:
        log.setLevel(logging.WARNING)  # rank 0 tells what happens
    try:
        with distributed.process_group(torch_device(cfg.device)) as device:
            threads, source = use_threads(cfg.threads)  # after: ranks may share the node
            log.info("%d CPU threads (%s), networks on %s", threads, source, device)
            result = _run_stage(cfg)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        log.error("cgkd %s failed: %s", cfg.stage, error)
        raise SystemExit(f"cgkd {cfg.stage}: {error}") from error
    if result and distributed.launch_rank() == 0:
        print(json.dumps(_summary(result), indent=2, default=str)[:4000])


def _summary(record: Any) -> Any:
    """A record without its long parts (histories, member lists, splits, priors)."""
    if not isinstance(record, dict):
        return record
    long = ("artifacts", "history", "members", "splits", "prior", "replicas")
    return {k: _summary(v) for k, v in record.items() if k not in long}


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``cgkd`` console command."""
    global _stage_name
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return
    if args[0] == "compare":
        from cgkd.comparison import main as compare_main

        compare_main(args[1:])
        return
    if args[0] == "summarize":
        from cgkd.summary import main as summarize_main

        summarize_main(args[1:])
        return
    if args[0] not in STAGES:
        sys.exit(f"cgkd: unknown stage {args[0]!r}; use one of {', '.join([*STAGES, *COMMANDS])}")
    _stage_name, overrides = args[0], args[1:]
    problem = _check_overrides(overrides)
    if problem:
        sys.exit(f"cgkd {_stage_name}: {problem}")
    if distributed.launch_rank() > 0:  # rank 0 writes the run directory and its log
        overrides = [*overrides, "hydra.output_subdir=null", "hydra/job_logging=stdout"]
    sys.argv = [f"cgkd-{_stage_name}", *_hydra_arguments(overrides, _stage_name)]
    keep_freed_memory_in_heap()
    _hydra_entry()


if __name__ == "__main__":
    main()
