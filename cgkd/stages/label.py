"""The teacher's labels of every reference frame (``label``): forces (mean and spread over
members), per-bead and total energies, in ``targets/`` (:class:`Targets` files)."""

from __future__ import annotations

from tqdm.auto import tqdm

from cgkd.io.h5md import H5MDReader
from cgkd.stages.base import Context, Record, Request, Stage
from cgkd.stages.teacher import load_teacher
from cgkd.training.dataset import LabelWriter

#: Frames read, labelled and written at a time: memory holds these, not the dataset.
CHUNK = 256


def label_facts(mean_force_std: float) -> Record:
    """What a record says about labels: their mean force spread over the teachers
    (kJ/mol/nm)."""
    return {"mean_force_std": mean_force_std}


def _label(context: Context) -> Record:
    cg = context.upstream["cg"]
    teacher = load_teacher(
        context.upstream["teacher"], cg, threads=context("simulate.threads"), device=context.device
    )
    path, spread, elements = context.directory / "targets", 0.0, 0
    with (
        H5MDReader(cg["dataset"]) as reader,
        LabelWriter(path, reader.n_frames, reader.n_particles) as writer,
        tqdm(total=reader.n_frames, desc="labelling frames", disable=not context.progress) as bar,
    ):
        for chunk in reader.chunks(CHUNK):
            labelled = teacher.label(chunk.positions, chunk.boxes, progress=False)
            writer.append(labelled)
            spread += float(labelled.force_std.sum())
            elements += labelled.force_std.size
            bar.update(chunk.n_frames)
    facts = label_facts(spread / elements)
    return {"targets": str(path), "n_teachers": teacher.n_teachers, **facts}


LABEL = Stage(
    name="label",
    summary="the teacher's labels of the reference frames: forces, spread, energies",
    build=_label,
    needs=lambda context: {"cg": Request("map"), "teacher": Request("teacher")},
    version=2,  # 2: targets/ of .npy files (was targets.npz)
)
