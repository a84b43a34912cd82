"""Who teaches the student (``teacher``): the first ``loss.n_teachers`` members of the
ensemble trained here, a TorchScript file, or an all-atom OpenMM System
(``teacher.source``); and :func:`load_teacher`, the :class:`Teacher` of such a record."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import openmm
import torch

from cgkd.io.h5md import read_h5md_bonds
from cgkd.models.checkpoint import merge_members
from cgkd.simulation.teachers import EnsembleTeacher, OpenMMTeacher, Teacher, TorchScriptTeacher
from cgkd.stages.base import Context, Record, Request, Stage
from cgkd.stages.data import dataset
from cgkd.stages.teach import load_members

#: Where teachers come from (``teacher.source``).
TEACHER_SOURCES = ("ensemble", "torchscript", "openmm")


def n_teachers(n_members: int, wanted: int | None) -> int:
    """How many of the ensemble's members label the student's frames (``loss.n_teachers``;
    None: all of them)."""
    if wanted is None:
        return n_members
    if not 1 <= int(wanted) <= n_members:
        raise ValueError(
            f"loss.n_teachers={wanted} is not between 1 and teacher.n_members={n_members}; "
            "use 1 for a single teacher or null for the whole ensemble"
        )
    return int(wanted)


def _source(context: Context) -> str:
    source = context("teacher.source")
    if source not in TEACHER_SOURCES:
        raise ValueError(f"teacher.source={source!r} is unknown; use one of {TEACHER_SOURCES}")
    return source


def _reads(context: Context) -> tuple[str, ...]:
    source = _source(context)
    if source == "ensemble":
        return ("teacher.source", "teacher.n_members", "loss.n_teachers")
    if source == "openmm" and context("teacher.path") is None:
        # The built-in system's own force field (your own data needs a System file).
        return ("teacher.source", "teacher.path", "input.trajectory", "system", "data_seed")
    return ("teacher.source", "teacher.path")


def _files(context: Context) -> tuple[str, ...]:
    if context("teacher.source") == "ensemble":
        return ()
    if context("teacher.source") == "torchscript" and context("teacher.path") is None:
        raise ValueError("teacher.source=torchscript needs teacher.path=<model.ts>")
    return ("teacher.path",) if context("teacher.path") is not None else ()


def _needs(context: Context) -> dict[str, Request]:
    source = context("teacher.source")
    if source == "ensemble":
        return {"teach": Request("teach")}
    if source == "openmm":
        return {"cg": Request("map")}
    return {}


def _teacher(context: Context) -> Record:
    source = context("teacher.source")
    if source == "ensemble":
        teach = context.upstream["teach"]
        n_members = len(teach["members"])
        k = n_teachers(n_members, context("loss.n_teachers"))
        md_model = {1: "teacher_0.ts", n_members: "ensemble.ts"}.get(k)
        return {
            "source": source,
            "members": teach["members"][:k],
            "n_teachers": k,
            "md_model": None if md_model is None else str(Path(teach["dir"]) / md_model),
        }
    if source == "torchscript":
        path = Path(context("teacher.path"))
        copy = context.directory / "teacher.ts"
        shutil.copyfile(path, copy)
        TorchScriptTeacher(copy)  # checks the file is a plain export
        return {"source": source, "path": str(copy), "original": str(path)}
    return _openmm_teacher(context)


def _openmm_teacher(context: Context) -> Record:
    """The OpenMM System of ``teacher.path`` (serialized XML), or of the built-in system."""
    cg = context.upstream["cg"]
    matrices = np.load(Path(cg["dataset"]).with_name("mapping.npz"))
    n_beads = int(matrices["position_map_shape"][0])
    identity = np.array_equal(matrices["position_map_indptr"], np.arange(n_beads + 1))
    if not identity or not np.allclose(matrices["position_map_data"], 1.0):
        raise ValueError(
            "teacher.source=openmm needs one bead per atom, but the mapping is not an identity "
            "mapping; use e.g. mapping=identity_water"
        )
    path, system_xml = context("teacher.path"), context.directory / "system.xml"
    if path is not None:
        shutil.copyfile(path, system_xml)
    elif context("input.trajectory") is not None:
        raise ValueError(
            "teacher.source=openmm with your own input data needs teacher.path=<system.xml>"
        )
    else:
        spec = context.settings("system", seed=context("data_seed"))
        system_xml.write_text(openmm.XmlSerializer.serialize(spec.build().system))
    return {"source": "openmm", "system": str(system_xml)}


TEACHER = Stage(
    name="teacher",
    summary="the teacher of teacher.source: ensemble members, a TorchScript file or an OpenMM "
    "System",
    build=_teacher,
    reads=_reads,
    files=_files,
    needs=_needs,
)


def has_bead_energies(teacher: Record) -> bool:
    """Whether the labels of a teacher record hold its own per-bead energies."""
    if teacher["source"] == "torchscript":
        return TorchScriptTeacher(Path(teacher["path"])).has_bead_energies
    return teacher["source"] == "ensemble"


def load_teacher(
    teacher: Record,
    cg: Record,
    *,
    threads: int | None = None,
    device: torch.device | str = "cpu",
) -> Teacher:
    """The :class:`Teacher` of a teacher record, labelling in the bead order of the CG dataset
    of the map record ``cg``; ``threads``: the CPU threads of an OpenMM teacher; ``device``:
    where a cgkd ensemble labels."""
    if teacher["source"] == "ensemble":
        labeller, _ = merge_members(load_members(teacher["members"]))
        md_model = None if teacher["md_model"] is None else Path(teacher["md_model"])
        return EnsembleTeacher(labeller, dataset(cg).types, md_model, device)
    if teacher["source"] == "torchscript":
        return TorchScriptTeacher(Path(teacher["path"]))
    matrices = np.load(Path(cg["dataset"]).with_name("mapping.npz"))
    system = openmm.XmlSerializer.deserialize(Path(teacher["system"]).read_text())
    return OpenMMTeacher(
        system,
        matrices["position_map_indices"],
        bonds=read_h5md_bonds(cg["dataset"]),
        threads=threads,
    )


__all__ = ["TEACHER", "TEACHER_SOURCES", "has_bead_energies", "load_teacher", "n_teachers"]
