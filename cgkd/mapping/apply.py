"""Map an all-atom H5MD data set to a CG one, streaming it chunk by chunk.

Per frame, molecules are made whole across the periodic boundary, bead positions are the
position map applied to the atoms (then wrapped into the box), and bead forces are the force
map applied to the atomic forces. Units: nm, kJ/mol/nm, ps, amu.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from MDAnalysis import Universe
from scipy import sparse
from tqdm.auto import tqdm

from cgkd.geometry import make_whole, wrap
from cgkd.io.atomic import atomic_path
from cgkd.io.frames import Frames
from cgkd.io.h5md import H5MDReader, H5MDWriter, read_h5md_constraints
from cgkd.mapping.constraints import detect_constraints, spread_frames, virtual_sites
from cgkd.mapping.definition import CompiledMapping, MappingError, MappingSpec, compile_mapping
from cgkd.mapping.force_maps import (
    apply_map,
    build_force_map,
    crossing_constraints,
    force_map_violations,
)

#: Frames x atoms processed at once, to bound temporary memory (~100 MB).
CHUNK_ELEMENTS = 2_000_000


@dataclass(frozen=True, eq=False)
class LinearMapping:
    """A compiled mapping with its force map (``kind``: basic, constraint_aware or optimal)."""

    compiled: CompiledMapping
    force_map: sparse.csr_matrix
    kind: str
    constraints: np.ndarray

    def apply(self, frames: Frames) -> Frames:
        """Bead positions (wrapped into the box) and mapped forces of atomistic ``frames``."""
        position_map = self.compiled.position_map
        if frames.n_particles != position_map.shape[1]:
            raise MappingError(
                f"frames have {frames.n_particles} atoms but the mapping was compiled for "
                f"{position_map.shape[1]}; map data with the topology they were made with"
            )
        whole = make_whole(frames.positions, frames.boxes, self.compiled.reference_atoms)
        return Frames(
            positions=wrap(apply_map(position_map, whole), frames.boxes),
            forces=apply_map(self.force_map, frames.forces),
            boxes=frames.boxes.copy(),
            times=frames.times.copy(),
            masses=self.compiled.masses,
            types=self.compiled.types,
            type_names=self.compiled.type_names,
        )


@dataclass(frozen=True)
class MappedDataset:
    """A CG data set written by :func:`map_trajectory`."""

    path: Path
    n_frames: int
    n_beads: int
    type_names: list[str]
    summary: str


def topology_universe(topology: str | Path, reader: H5MDReader) -> Universe:
    """The topology as an MDAnalysis universe, with residue names from the data's species.

    cgkd's AA species are residue names; a PDB topology cuts them to 3 characters when
    MDAnalysis reads it (CHOL becomes CHO), so the full names are restored from the data.
    """
    try:
        universe = Universe(str(topology))
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise MappingError(f"cannot read topology {topology}: {err}") from None
    if universe.atoms.n_atoms != reader.n_particles:
        raise MappingError(
            f"topology {topology} has {universe.atoms.n_atoms} atoms but {reader.path} has "
            f"{reader.n_particles}; use the topology that belongs to the data"
        )
    if reader.type_names:
        names = np.asarray(reader.type_names)[reader.types]
        _, first = np.unique(universe.atoms.resindices, return_index=True)
        universe.residues.resnames = names[first]
    return universe


def build_mapping(
    spec: MappingSpec,
    universe: Universe,
    reader: H5MDReader,
    constraints: np.ndarray | None,
    *,
    fit_stop: int | None = None,
) -> LinearMapping:
    """Compile ``spec`` on ``universe`` and build its force map. Virtual sites (atoms of zero
    mass and zero force in frames spread over ``reader``) belong to no bead. ``constraints``
    ``None`` (no record in the data) means: detect them from constant distances, virtual sites
    left out. The optimal map is fitted on ``spec.optimal.fit_frames`` frames spread evenly
    over ``reader``'s frames before ``fit_stop`` (all by default). A basic map crossed by a
    constraint is refused: it would be biased."""
    sample = spread_frames(reader)
    virtual = virtual_sites(reader.masses, sample.forces)
    compiled = compile_mapping(spec, universe, reader.masses, virtual)
    if constraints is None:
        constraints = detect_constraints(
            sample.positions, sample.boxes, compiled.molecules, source=reader.path, exclude=virtual
        )
    crossing = crossing_constraints(compiled.position_map, constraints)
    if spec.force_map == "basic" and len(crossing):
        i, j = constraints[crossing[0]]
        raise MappingError(
            f"mapping {spec.name!r}: {len(crossing)} constraints join atoms of different beads "
            f"(e.g. atoms {i}-{j}), so the basic force map is biased; use force_map: "
            "constraint_aware or optimal"
        )
    forces = None
    if spec.force_map == "optimal":
        available = reader.n_frames if fit_stop is None else min(fit_stop, reader.n_frames)
        n_fit = min(available, spec.optimal.fit_frames)
        picked = np.unique(np.linspace(0, available - 1, n_fit).round().astype(int))
        forces = np.concatenate([reader.read(int(t), int(t) + 1).forces for t in picked])
    force_map = build_force_map(
        spec.force_map,
        compiled.position_map,
        constraints,
        forces=forces,
        molecules=compiled.molecules,
        ridge=spec.optimal.ridge,
    )
    # Tolerance for float32 data and a solved (not exact) map.
    problems = force_map_violations(compiled.position_map, force_map, constraints, atol=1e-6)
    if problems:
        raise MappingError(
            f"mapping {spec.name!r}: the {spec.force_map} force map is invalid: {problems[0]}"
        )
    return LinearMapping(compiled, force_map, spec.force_map, constraints)


def map_trajectory(
    topology: str | Path,
    trajectory: str | Path,
    out_path: str | Path,
    spec: MappingSpec,
    *,
    config: dict[str, Any] | None = None,
    chunk_frames: int | None = None,
    progress: bool = False,
) -> MappedDataset:
    """Map an AA H5MD data set with ``spec`` into a CG H5MD file at ``out_path``, streaming.

    Constraints come from the AA file's record, or, if it has none (imported data), are
    detected as atom pairs at constant distance. The CG file records the mapping definition,
    its digest, the force-map kind, the constraints' source, the number of virtual sites and
    the bead summary (plus
    ``config``); the position and force maps go to ``mapping.npz`` beside it.
    """
    out_path = Path(out_path)
    recorded = read_h5md_constraints(trajectory)
    with H5MDReader(trajectory) as reader:
        universe = topology_universe(topology, reader)
        mapping = build_mapping(spec, universe, reader, recorded)
        compiled = mapping.compiled
        stored = {
            **(config or {}),
            "constraints": {
                "source": "recorded" if recorded is not None else "detected",
                "count": len(mapping.constraints),
            },
            "mapping": spec.to_dict(),
            "mapping_digest": spec.digest,
            "force_map": mapping.kind,
            "virtual_sites": len(compiled.virtual_sites),
            "bead_names": [compiled.type_names[t] for t in compiled.types],
            "summary": compiled.summary(),
            "source": {"topology": str(topology), "trajectory": str(trajectory)},
        }
        chunk = chunk_frames or max(1, CHUNK_ELEMENTS // max(1, reader.n_particles))
        with (
            H5MDWriter(
                out_path,
                masses=compiled.masses,
                types=compiled.types,
                type_names=compiled.type_names,
                config=stored,
                bonds=compiled.bonds,
            ) as writer,
            tqdm(total=reader.n_frames, desc="map", unit="frame", disable=not progress) as bar,
        ):
            for frames in reader.chunks(chunk):
                writer.append(mapping.apply(frames))
                bar.update(frames.n_frames)
    matrices = out_path.with_name("mapping.npz")
    with atomic_path(matrices) as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            **_csr_arrays("position_map", compiled.position_map),
            **_csr_arrays("force_map", mapping.force_map),
        )
    return MappedDataset(
        out_path, writer.n_frames, compiled.n_beads, compiled.type_names, compiled.summary()
    )


def _csr_arrays(name: str, matrix: sparse.csr_matrix) -> dict[str, np.ndarray]:
    return {
        f"{name}_data": matrix.data,
        f"{name}_indices": matrix.indices,
        f"{name}_indptr": matrix.indptr,
        f"{name}_shape": np.array(matrix.shape),
    }
