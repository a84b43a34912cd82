"""The stage graph: keys derived from exactly what each stage declares, planned without
running anything; builds that read undeclared config refused; the cache's completeness."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from cgkd.config import CONFIG_DIR
from cgkd.stages.base import EXECUTION, Context, Request, Stage, StageDir, UndeclaredReadError
from cgkd.stages.commands import requests
from cgkd.stages.runner import Pipeline, Plan


def config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=["cache_dir=/nonexistent/cache", *overrides])


def plans(cfg, command: str = "run") -> dict[str, Plan]:
    """Every stage ``command`` needs, by directory name without its key."""
    pipeline = Pipeline(cfg)
    found: dict[str, Plan] = {}
    for request in requests(cfg, command).values():
        for plan in pipeline.plan(request).walk():
            found[str(plan.request)] = plan
    return found


def leaves(node, prefix: str = "") -> list[str]:
    """Dotted paths of every scalar (and list) in a plain config."""
    if isinstance(node, dict):
        return [path for key, value in node.items() for path in leaves(value, f"{prefix}{key}.")]
    return [prefix[:-1]]


def perturbed(value):
    """Another valid-looking value of the same kind (None when there is none to try)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 1.5 + 0.125
    if isinstance(value, list) and value and isinstance(value[0], int | float):
        return [perturbed(value[0]), *value[1:]]
    return None


#: Configs whose graphs differ (each route through the stages).
ROUTES = {
    "single": (),
    "two_stage": ("schedule=two_stage",),
    "disagreement": ("schedule=two_stage", "screening=disagreement"),
    "classical": (
        "simulate.models=[student,baseline,teacher,ensemble,classical]",
        "classical.targets=teacher",
    ),
    "refined": ("simulate.models=[baseline,refined]", "refine.start=baseline"),
}


@pytest.mark.parametrize("route", list(ROUTES))
def test_keys_change_exactly_with_declared_inputs(route):
    """Changing a config value changes the key of every stage that declares it (directly or
    through an interpolation) and of every stage downstream; nothing else."""
    base_cfg = config(*ROUTES[route])
    base = plans(base_cfg)
    container = OmegaConf.to_container(base_cfg, resolve=False)
    checked = 0
    for path in leaves(container):
        if any(path == e or path.startswith(f"{e}.") for e in EXECUTION):
            continue
        value = OmegaConf.select(base_cfg, path)
        new_value = perturbed(value)
        if new_value is None:
            continue
        cfg = copy.deepcopy(base_cfg)
        OmegaConf.update(cfg, path, new_value, merge=False)
        try:
            after = plans(cfg)
        except (ValueError, TypeError):
            continue  # a value the stages refuse
        checked += 1
        for name, plan in base.items():
            if name not in after:
                continue  # the change reshaped the graph (e.g. no more teachers to sample)
            new = after[name]
            inputs_changed = plan.reads != new.reads or {
                role: child.key for role, child in plan.upstream.items()
            } != {role: child.key for role, child in new.upstream.items()}
            assert (plan.key != new.key) == inputs_changed, (path, name)
            if _reads(plan, path):
                assert plan.key != new.key, f"{path} is declared by {name} but leaves its key"
        if not any(_reads(plan, path) for plan in base.values()):
            # Read by no stage: keys move only where an interpolation carried the value into
            # a declared read (e.g. system.temperature into simulate.temperature).
            carried = {n for n, p in base.items() if n in after and p.reads != after[n].reads}
            if not carried:
                assert all(base[n].key == after[n].key for n in base if n in after), path
    assert checked > 40


def _reads(plan: Plan, path: str) -> bool:
    """Whether ``plan``'s stage declares ``path``: under one of its reads, not ignored."""

    def under(section: str) -> bool:
        return path == section or path.startswith(f"{section}.")

    return any(map(under, plan.reads)) and not any(map(under, plan.stage.ignores))


def test_undeclared_config_leaves_every_key():
    """Values no stage reads (labels, execution settings, unused options) change no key."""
    base = {name: plan.key for name, plan in plans(config()).items()}
    for override in (
        "input.name=anything",
        "progress=false",
        "threads=1",
        "teacher.n_jobs=2",
        "simulate.threads=1",
        "screening.fraction=0.5",  # the single schedule screens nothing
        "sampler.steps=5",
    ):
        after = {name: plan.key for name, plan in plans(config(override)).items()}
        assert after == base, override


def test_external_teacher_trajectories_are_keyed_by_their_data(tmp_path):
    """Regression: one TorchScript teacher file simulated on two systems gets two keys (the
    CG dataset its starting frames come from is an input), and a changed file a third."""
    model = tmp_path / "teacher.ts"
    model.write_bytes(b"weights v1")
    external = ("teacher.source=torchscript", f"teacher.path={model}", "simulate.models=[teacher]")
    keys = {
        molecules: plans(config(*external, f"system.n_molecules={molecules}"), "simulate")[
            "simulate[teacher]"
        ].key
        for molecules in (120, 150)
    }
    assert keys[120] != keys[150]
    model.write_bytes(b"weights v2")
    changed = plans(config(*external, "system.n_molecules=120"), "simulate")["simulate[teacher]"]
    assert changed.key not in keys.values()


def test_screen_is_keyed_by_the_split_fractions():
    """Regression: the screened frames are drawn from the reference training split, so the
    split fractions are inputs of the screen stage."""
    two_stage = ("schedule=two_stage",)
    base = plans(config(*two_stage))["screen"].key
    for fraction in ("teacher.train.val_fraction=0.2", "teacher.train.test_fraction=0.2"):
        assert plans(config(*two_stage, fraction))["screen"].key != base


def test_simulating_a_teacher_trains_no_student():
    """simulate.models=[teacher] needs the teachers, not the student or the baseline."""
    needed = plans(config("simulate.models=[teacher]"), "simulate")
    assert "simulate[teacher]" in needed and "teach" in needed
    assert not {"student", "baseline", "label"} & set(needed)


def test_a_baseline_run_trains_no_teacher():
    """cgkd run simulate.models=[baseline] (single schedule) needs neither the teachers nor
    their labels; in the two-stage schedule its hard frames are screened with the teacher."""
    single = plans(config("simulate.models=[baseline,refined,classical]", "refine.start=baseline"))
    assert {"baseline", "refined", "classical", "analyze"} <= set(single)
    assert not {"teach", "label", "student"} & set(single)
    assert not any(name.startswith("member") for name in single)
    two_stage = plans(config("simulate.models=[baseline]", "schedule=two_stage"))
    assert {"teach", "sample", "screen"} <= set(two_stage)
    assert "teach" in plans(config("simulate.models=[student]"))
    assert "teach" in plans(config("simulate.models=[refined]"))  # it refines the student


def _toy(reads, build) -> dict[str, Stage]:
    return {"toy": Stage("toy", "a toy stage", build=build, reads=reads)}


def test_a_build_cannot_read_undeclared_config(tmp_path):
    cfg = config(f"cache_dir={tmp_path}")

    def sneaky(context: Context) -> dict:
        return {"seed": context("seed"), "epochs": context("student.train.epochs")}

    pipeline = Pipeline(cfg, _toy(("seed",), sneaky))
    with pytest.raises(UndeclaredReadError, match=r"student\.train\.epochs"):
        pipeline.run(Request("toy"))
    assert not list(Path(tmp_path).glob("toy-*"))  # nothing half-written
    decides = _toy(lambda context: ("seed",) if context("schedule.kind") else (), sneaky)
    with pytest.raises(RuntimeError, match="undeclared"):
        Pipeline(cfg, decides).plan(Request("toy"))


def test_stages_build_once_and_upstream_first(tmp_path):
    cfg = config(f"cache_dir={tmp_path}")
    built = []

    def make(name):
        def build(context: Context) -> dict:
            built.append(name)
            (context.directory / "out.txt").write_text(name)
            return {"name": name, "seen": sorted(context.upstream)}

        return build

    stages = {
        "a": Stage("a", "first", build=make("a"), reads=("seed",)),
        "b": Stage("b", "second", build=make("b"), needs=lambda context: {"up": Request("a")}),
    }
    record = Pipeline(cfg, stages).run("b")
    assert built == ["a", "b"] and record["seen"] == ["up"]
    assert Pipeline(cfg, stages).run("b") == record and built == ["a", "b"]  # cached
    assert (tmp_path / f"a-{Pipeline(cfg, stages).plan('a').key}" / "config.yaml").is_file()


def test_failed_stage_keeps_only_what_a_rerun_resumes_from(tmp_path):
    stage = StageDir(tmp_path / "member-0-abc", "abc")

    def fails(out: Path) -> dict:
        (out / "checkpoint.pt").write_text("epoch 3")
        (out / "model.pt").write_text("half-written")
        raise RuntimeError("diverged")

    with pytest.raises(RuntimeError):
        stage.run(fails, {}, keep=("checkpoint.pt",))
    assert [p.name for p in stage.path.iterdir()] == ["checkpoint.pt"]
    assert not stage.done
    with pytest.raises(RuntimeError):
        stage.run(fails, {})
    assert not stage.path.exists()
    record = stage.run(lambda out: {"ok": True}, {})
    assert record == {"key": "abc", "ok": True} and stage.done


def test_the_drawn_graph_is_the_code_s():
    """docs/guide/pipeline.md draws the stage graphs of the default and the two-stage run as
    ``python -m cgkd.stages.graph`` prints them."""
    import re

    from cgkd.stages.graph import config_graph

    page = (CONFIG_DIR.parent / "docs" / "guide" / "pipeline.md").read_text()
    drawn = re.findall(r"```mermaid\n(.*?)\n```", page, flags=re.S)
    assert drawn == [
        config_graph(config(), "run", "mermaid"),
        config_graph(config("schedule=two_stage"), "run", "mermaid"),
    ]


def test_train_frames_cuts_the_training_split_to_nested_subsets():
    """train_frames=K: every model trains on K of the reference's training frames, the first
    of a shuffle by seed (so 3 of them are among 6 of them); validation and test frames
    stay; the setting keys the teachers; a K beyond the split is a one-line error."""
    from cgkd.stages.data import reference_splits

    def splits(*overrides: str):
        return reference_splits(Context.unchecked(config(*overrides)), 40)

    full, six, three = splits(), splits("train_frames=6"), splits("train_frames=3")
    assert len(six.train) == 6 and len(three.train) == 3 and len(full.train) == 32
    assert set(three.train) <= set(six.train) <= set(full.train)
    for cut in (six, three):
        assert np.array_equal(cut.val, full.val) and np.array_equal(cut.test, full.test)
    assert not np.array_equal(splits("train_frames=6", "seed=1").train, six.train)
    members = [plans(config(*o))["member[0]"].key for o in ((), ("train_frames=6",))]
    assert members[0] != members[1]
    with pytest.raises(ValueError, match=r"train_frames=33: the reference has 32 training"):
        splits("train_frames=33")
