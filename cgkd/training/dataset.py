"""Frames of one CG system for training, with recorded train/val/test splits: in memory
(:class:`TrainingData`) or streamed from the H5MD file by index (:class:`StreamedFrames`).
Training reads either through the same :class:`FrameSource` interface, so both give the
same batches and the same statistics."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from cgkd.io.frames import Frames
from cgkd.io.h5md import H5MDReader


@dataclass
class Targets:
    """Teacher-ensemble labels of a set of frames (OpenMM units).

    forces: [T, N, 3] mean force, kJ/mol/nm; force_std: [T, N, 3] spread across members;
    bead_energies: [T, N] mean per-bead energy, kJ/mol; energies: [T] mean total energy, kJ/mol.

    On disk: a directory with one ``.npy`` file (float64) per field, written a chunk of
    frames at a time (:class:`LabelWriter`) and read whole (:meth:`load`) or a few frames at
    a time (:class:`LabelRows`).
    """

    forces: np.ndarray
    force_std: np.ndarray
    bead_energies: np.ndarray
    energies: np.ndarray

    @staticmethod
    def shapes(n_frames: int, n_beads: int) -> dict[str, tuple[int, ...]]:
        """The shape of each field for ``n_frames`` frames of ``n_beads`` beads."""
        return {
            "forces": (n_frames, n_beads, 3),
            "force_std": (n_frames, n_beads, 3),
            "bead_energies": (n_frames, n_beads),
            "energies": (n_frames,),
        }

    @classmethod
    def load(cls, directory: str | Path) -> Targets:
        """The labels saved in ``directory``, read whole."""
        return cls(**{name: np.load(path) for name, path in _label_files(directory).items()})


def _label_files(directory: str | Path) -> dict[str, Path]:
    """The label file of each :class:`Targets` field in ``directory``; one missing is an
    error naming the directory."""
    directory = Path(directory)
    files = {f.name: directory / f"{f.name}.npy" for f in fields(Targets)}
    if missing := [path.name for path in files.values() if not path.is_file()]:
        raise FileNotFoundError(
            f"{directory} holds no teacher labels ({', '.join(missing)} missing); "
            "rerun `cgkd label`"
        )
    return files


class LabelWriter:
    """Writes the :class:`Targets` of ``n_frames`` frames into ``directory`` a chunk of
    frames at a time (:meth:`append`), so memory holds a chunk; a writer closed before all
    frames came is an error; either way, its files are removed."""

    def __init__(self, directory: Path, n_frames: int, n_beads: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.n_frames, self.written = n_frames, 0
        self._files = {}
        for name, shape in Targets.shapes(n_frames, n_beads).items():
            handle = open(directory / f"{name}.npy", "wb")  # noqa: SIM115 - closed in close()
            header = {"descr": "<f8", "fortran_order": False, "shape": shape}
            np.lib.format.write_array_header_2_0(handle, header)
            self._files[name] = handle

    def append(self, targets: Targets) -> None:
        """Add the labels of the next frames."""
        n = len(targets.energies)
        if self.written + n > self.n_frames:
            raise ValueError(f"{self.written + n} frames of labels for {self.n_frames} frames")
        for name, handle in self._files.items():
            handle.write(np.ascontiguousarray(getattr(targets, name), dtype="<f8").tobytes())
        self.written += n

    def __enter__(self) -> LabelWriter:
        return self

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        for handle in self._files.values():
            handle.close()
        if kind is None and self.written == self.n_frames:
            return
        for handle in self._files.values():  # nothing half-written is left
            Path(handle.name).unlink()
        if kind is None:
            raise ValueError(f"labels of {self.written} frames written for {self.n_frames}")


class LabelRows:
    """The label files in ``directory`` read frame by frame (positioned reads, no memory
    mapping, so memory holds what was asked for); ``n_frames`` and ``n_beads`` are checked
    against the files."""

    def __init__(self, directory: str | Path, n_frames: int, n_beads: int) -> None:
        self.files = _label_files(directory)
        self._layout: dict[str, tuple[int, tuple[int, ...]]] = {}
        for name, shape in Targets.shapes(n_frames, n_beads).items():
            with open(self.files[name], "rb") as handle:
                if np.lib.format.read_magic(handle) == (1, 0):
                    found, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
                else:
                    found, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
                if found != shape or fortran or dtype != np.dtype("<f8"):
                    raise ValueError(
                        f"teacher labels {self.files[name]} are {dtype} {found}, not float64 "
                        f"{shape}; relabel the dataset with this teacher"
                    )
                self._layout[name] = (handle.tell(), shape[1:])
        self._handles: dict[str, int] = {}

    def take(self, frames: np.ndarray) -> Targets:
        """The labels of ``frames`` (indices, any order)."""
        values = {}
        for name, (offset, row_shape) in self._layout.items():
            if name not in self._handles:
                self._handles[name] = os.open(self.files[name], os.O_RDONLY)
            size = 8 * int(np.prod(row_shape))
            rows = [
                np.frombuffer(os.pread(self._handles[name], size, offset + size * int(k)), "<f8")
                for k in frames
            ]
            values[name] = np.stack(rows).reshape(len(frames), *row_shape)
        return Targets(**values)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handles": {}}  # open files do not cross processes


@dataclass
class Splits:
    """Frame indices of the training, validation and test sets."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @classmethod
    def random(
        cls, n_frames: int, val_fraction: float, test_fraction: float, seed: int, block: int = 1
    ) -> Splits:
        """Shuffle ``n_frames`` with ``seed`` in blocks of ``block`` consecutive frames and cut
        off validation and test fractions, in whole blocks (at least one block each): frames
        saved closer together than their forces decorrelate then stay on one side."""
        if block < 1:
            raise ValueError(
                f"split_block={block}: a block holds 1 or more frames; set "
                "teacher.train.split_block (student.train.split_block for soft frames) to 1 or more"
            )
        n_blocks = -(-n_frames // block)
        if n_blocks < 3:
            raise ValueError(
                f"need at least 3 blocks to split into train/val/test, got {n_frames} frames "
                f"in {n_blocks} block(s) of {block}; save more frames or lower split_block"
            )
        order = np.random.default_rng(seed).permutation(n_blocks)
        n_val = max(1, round(val_fraction * n_blocks))
        n_test = max(1, round(test_fraction * n_blocks))
        frames = np.arange(n_frames)
        blocks = frames // block
        return cls(
            train=frames[np.isin(blocks, order[n_val + n_test :])],
            val=frames[np.isin(blocks, order[:n_val])],
            test=frames[np.isin(blocks, order[n_val : n_val + n_test])],
        )

    def to_dict(self) -> dict[str, list[int]]:
        """Plain lists, for JSON."""
        return {"train": self.train.tolist(), "val": self.val.tolist(), "test": self.test.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, list[int]]) -> Splits:
        """Inverse of :meth:`to_dict`."""
        return cls(**{key: np.asarray(value, dtype=np.int64) for key, value in data.items()})


@dataclass
class TrainingData:
    """Tensors (float32) of one CG system; teacher labels are optional."""

    positions: Tensor
    boxes: Tensor
    species: Tensor
    mapped_forces: Tensor
    teacher_forces: Tensor | None = None
    teacher_energies: Tensor | None = None
    teacher_bead_energies: Tensor | None = None
    teacher_force_std: Tensor | None = None

    @classmethod
    def from_frames(cls, frames: Frames, targets: Targets | None = None) -> TrainingData:
        """Tensors from a CG dataset and, for students, the teacher labels of the same frames."""

        data = cls(
            positions=_tensor(frames.positions),
            boxes=_tensor(frames.boxes),
            species=torch.as_tensor(frames.types, dtype=torch.long),
            mapped_forces=_tensor(frames.forces),
        )
        return data if targets is None else data.with_targets(targets)

    def with_targets(self, targets: Targets) -> TrainingData:
        """The same frames with the teachers' labels of them (for students)."""
        if targets.forces.shape != tuple(self.mapped_forces.shape):
            raise ValueError(
                f"teacher labels have shape {targets.forces.shape} but the dataset has "
                f"{tuple(self.mapped_forces.shape)}; relabel the dataset with this teacher ensemble"
            )

        return replace(
            self,
            teacher_forces=_tensor(targets.forces),
            teacher_energies=_tensor(targets.energies),
            teacher_bead_energies=_tensor(targets.bead_energies),
            teacher_force_std=_tensor(targets.force_std),
        )

    def select(self, frames: np.ndarray, device: torch.device | str = "cpu") -> TrainingData:
        """The ``frames`` (indices) as a batch on ``device``: what one training step reads."""
        index = torch.as_tensor(frames, dtype=torch.long)

        def part(values: Tensor | None) -> Tensor | None:
            return None if values is None else values[index].to(device, non_blocking=True)

        return TrainingData(
            positions=part(self.positions),
            boxes=part(self.boxes),
            species=self.species.to(device),
            mapped_forces=part(self.mapped_forces),
            teacher_forces=part(self.teacher_forces),
            teacher_energies=part(self.teacher_energies),
            teacher_bead_energies=part(self.teacher_bead_energies),
            teacher_force_std=part(self.teacher_force_std),
        )

    def to(self, device: torch.device | str) -> TrainingData:
        """The same frames on ``device``."""
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return TrainingData(**{k: v if v is None else v.to(device) for k, v in moved.items()})

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return int(self.positions.shape[0])

    @property
    def has_teacher(self) -> bool:
        """Whether the frames carry teacher labels."""
        return self.teacher_forces is not None


def _tensor(array: np.ndarray) -> Tensor:
    return torch.as_tensor(np.asarray(array), dtype=torch.float32)


class FrameSource(Protocol):
    """What training reads: a number of frames, their bead species and batches by index."""

    @property
    def n_frames(self) -> int: ...

    @property
    def species(self) -> Tensor: ...

    @property
    def has_teacher(self) -> bool: ...

    def select(self, frames: np.ndarray, device: torch.device | str = "cpu") -> TrainingData: ...


def batches(
    source: FrameSource, frames: np.ndarray, size: int, device: torch.device | str = "cpu"
) -> Iterator[TrainingData]:
    """The ``frames`` of ``source`` in order, ``size`` at a time, on ``device``; a streamed
    source with ``workers`` reads them ahead in that many processes."""
    chunks = [frames[first : first + size] for first in range(0, len(frames), size)]
    return read_chunks(source, chunks, device)


def read_chunks(
    source: FrameSource, chunks: list[np.ndarray], device: torch.device | str = "cpu"
) -> Iterator[TrainingData]:
    """One batch per chunk of frame indices of ``source``, in order, on ``device`` (read ahead
    as :func:`batches` does)."""
    workers = getattr(source, "workers", 0)
    if not workers or len(chunks) < 2:
        for chunk in chunks:
            yield source.select(chunk, device)
        return
    loader = torch.utils.data.DataLoader(
        _Chunks(source, chunks), batch_size=None, num_workers=workers, collate_fn=_as_is
    )
    for batch in loader:
        yield batch.to(device)


class _Chunks(torch.utils.data.Dataset):
    """Item k: the k-th chunk of frames of a source, as a CPU batch (for a DataLoader)."""

    def __init__(self, source: FrameSource, chunks: list[np.ndarray]) -> None:
        self.source, self.chunks = source, chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, k: int) -> TrainingData:
        return self.source.select(self.chunks[k])


def _as_is(batch: TrainingData) -> TrainingData:
    return batch


class StreamedFrames:
    """A CG dataset (H5MD) read frame by frame: memory holds a batch, not the dataset.

    Positions, forces and boxes come from the file as :class:`TrainingData` batches exactly
    as :meth:`TrainingData.from_frames` would make them; a student's teacher labels of the
    same frames come from the label files in ``labels`` (:class:`LabelRows`). The
    file is watched: one changed (size or modification time) or truncated while training is
    an error naming it. ``workers`` processes read batches ahead (:func:`batches`); each
    opens the files itself.
    """

    def __init__(self, path: str | Path, workers: int = 0, labels: str | Path | None = None):
        self.path, self.workers = Path(path), workers
        self._stamp = _stamp(self.path)
        with H5MDReader(self.path) as reader:
            self._n_frames = reader.n_frames
            self._species = torch.as_tensor(reader.types, dtype=torch.long)
            n_beads = reader.n_particles
        self._reader: H5MDReader | None = None
        self._rows = None if labels is None else LabelRows(labels, self._n_frames, n_beads)

    @property
    def n_frames(self) -> int:
        """Number of frames in the file."""
        return self._n_frames

    @property
    def species(self) -> Tensor:
        """[N] bead species."""
        return self._species

    @property
    def has_teacher(self) -> bool:
        """Whether batches carry teacher labels (``labels`` given)."""
        return self._rows is not None

    def select(self, frames: np.ndarray, device: torch.device | str = "cpu") -> TrainingData:
        """The ``frames`` (indices) read from the file as a batch on ``device``."""
        if _stamp(self.path) != self._stamp:
            raise RuntimeError(
                f"{self.path} changed while training read it; rerun, which rebuilds what "
                "depends on it"
            )
        if self._reader is None:
            self._reader = H5MDReader(self.path)
        frames = np.asarray(frames)
        read = self._reader.take(frames)
        batch = TrainingData(
            positions=_tensor(read.positions),
            boxes=_tensor(read.boxes),
            species=self._species,
            mapped_forces=_tensor(read.forces),
        )
        if self._rows is not None:
            batch = batch.with_targets(self._rows.take(frames))
        return batch.to(device)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_reader": None}  # an open file does not cross processes


def _stamp(path: Path) -> tuple[int, int]:
    """What says a file changed: its size and modification time (ns)."""
    info = os.stat(path)
    return info.st_size, info.st_mtime_ns


@dataclass(frozen=True)
class TrainStatistics:
    """Scales of the training frames: RMS of the mapped and teacher forces (kJ/mol/nm), the
    standard deviation of the teacher's bead energies and each species' mean of them
    (kJ/mol), and the mean spread of the teachers' forces (kJ/mol/nm); None without labels."""

    force_rms: float
    teacher_force_rms: float | None = None
    bead_energy_std: float | None = None
    species_bead_energy: dict[int, float] | None = None
    mean_spread: float | None = None


def train_statistics(source: FrameSource, frames: np.ndarray, size: int = 64) -> TrainStatistics:
    """The :class:`TrainStatistics` of ``frames``, accumulated in float64 over batches of
    ``size``, so an in-memory and a streamed source give the same numbers."""
    sums: dict[str, float] = {}
    species = source.species.numpy()
    by_species = np.zeros(int(species.max()) + 1 if len(species) else 0)
    counts = np.bincount(species, minlength=len(by_species)) * len(frames)

    def add(name: str, value: Tensor) -> None:
        sums[name] = sums.get(name, 0.0) + float(value.double().sum())

    for batch in batches(source, frames, size):
        add("mapped", batch.mapped_forces.square())
        sums["force elements"] = sums.get("force elements", 0) + batch.mapped_forces.numel()
        if batch.teacher_forces is None:
            continue
        assert batch.teacher_bead_energies is not None and batch.teacher_force_std is not None
        add("teacher", batch.teacher_forces.square())
        add("energy", batch.teacher_bead_energies)
        add("energy squared", batch.teacher_bead_energies.square())
        add("spread", batch.teacher_force_std)
        np.add.at(by_species, species, batch.teacher_bead_energies.double().sum(0).numpy())
    elements = sums["force elements"]
    rms = float(np.sqrt(sums["mapped"] / elements)) + 1e-6
    if "teacher" not in sums:
        return TrainStatistics(rms)
    n = elements / 3
    variance = (sums["energy squared"] - sums["energy"] ** 2 / n) / (n - 1)
    return TrainStatistics(
        force_rms=rms,
        teacher_force_rms=float(np.sqrt(sums["teacher"] / elements)) + 1e-6,
        # One energy scale for both energy terms: the spread of the teacher's bead energies.
        # (The spread of E/N over frames is ~sqrt(N) times smaller: w_E became far too stiff.)
        bead_energy_std=float(np.sqrt(max(variance, 0.0))) + 1e-6,
        species_bead_energy={
            kind: float(by_species[kind] / counts[kind])
            for kind in range(len(by_species))
            if counts[kind]
        },
        mean_spread=sums["spread"] / elements,
    )
