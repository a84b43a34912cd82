"""The pipeline as a declared graph of cached stages.

One module per stage (``reference``: generate/import, ``mapping``, ``prior``, ``teach``,
``teacher``, ``label``, ``sample``, ``screen``, ``distill``, ``classical``, ``simulate``,
``analyze``). Each :class:`Stage` declares the config it reads and the stages it needs; its
cache key is derived from exactly those (:mod:`cgkd.stages.base`), and a :class:`Pipeline`
plans the keys of a config, then builds what a request needs, upstream first, reusing what
the cache holds (``<cache_dir>/<stage>-<key>/``, complete once its ``done.json`` exists).

>>> from cgkd.stages import Pipeline, run_command        # doctest: +SKIP
>>> Pipeline(cfg).run("teach")["dir"]                  # doctest: +SKIP
>>> run_command(cfg, "distill")["student"]["model"]    # doctest: +SKIP
"""

from cgkd.stages.base import Context, Request, Stage, StageDir, UndeclaredReadError
from cgkd.stages.commands import COMMANDS, requests, run_command
from cgkd.stages.runner import Pipeline, Plan

__all__ = [
    "COMMANDS",
    "Context",
    "Pipeline",
    "Plan",
    "Request",
    "Stage",
    "StageDir",
    "UndeclaredReadError",
    "requests",
    "run_command",
]
