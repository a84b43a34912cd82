"""Noise of the mapped forces with the basic, constraint-aware and optimal force maps.

Every valid force map gives the same mean force for the same position map, so the second
moment of the mapped forces differs between maps only by the noise: the difference of
<|f|^2> between two maps is exactly the difference of their force-matching loss floors
(the lowest mean squared force error any model can reach on those labels). The optimal map is
fitted on the first half of the frames and evaluated, like the others, on the second half.

    python benchmarks/force_map_noise.py --aa cache/generate-*/ [--mapping reline_multibead]

``--aa`` is a generate (or import) stage directory holding ``aa.h5md`` and ``aa_topology.pdb``,
for example from ``cgkd generate system=reline``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from cgkd.io.h5md import H5MDReader, read_h5md_constraints
from cgkd.mapping.apply import build_mapping, topology_universe
from cgkd.mapping.definition import MappingSpec
from cgkd.mapping.force_maps import FORCE_MAPS

CONF = Path(__file__).resolve().parent.parent / "conf"


def mapping_spec(name: str) -> MappingSpec:
    """The MappingSpec of ``conf/mapping/<name>.yaml``."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"mapping={name}"])
    return MappingSpec.from_config(OmegaConf.to_container(cfg.mapping, resolve=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aa", type=Path, required=True, help="directory with aa.h5md")
    parser.add_argument("--mapping", default="reline_multibead")
    args = parser.parse_args()

    trajectory, topology = args.aa / "aa.h5md", args.aa / "aa_topology.pdb"
    spec = mapping_spec(args.mapping)
    constraints = read_h5md_constraints(trajectory)
    if constraints is None:
        raise SystemExit(f"{trajectory} has no constraint record; use a generated data set")
    with H5MDReader(trajectory) as reader:
        half = reader.n_frames // 2
        universe = topology_universe(topology, reader)
        held_out = reader.read(half)
        rows = {}
        for kind in FORCE_MAPS:
            settings = {**spec.optimal, "fit_frames": half}
            kind_spec = dataclasses.replace(spec, force_map=kind, optimal=settings)
            try:  # the optimal map sees only the first half
                mapping = build_mapping(kind_spec, universe, reader, constraints, fit_stop=half)
            except ValueError as err:
                rows[kind] = str(err)
                continue
            rows[kind] = mapping.apply(held_out)
    print(
        f"{args.mapping}: {held_out.n_particles} atoms, {reader.n_frames} frames "
        f"(optimal map fitted on {half}, all maps evaluated on the other {held_out.n_frames}); "
        f"{len(constraints)} constraints"
    )
    basic = rows["basic"]
    names = basic.type_names
    print(
        f"{'force map':<18}{'bead type':<10}{'<|f|^2> (kJ/mol/nm)^2':>24}"
        f"{'vs basic':>10}{'loss floor change':>20}"
    )
    for kind, cg in rows.items():
        if isinstance(cg, str):
            print(f"{kind:<18}not valid here: {cg}")
            continue
        for index, name in enumerate([*names, "all"]):
            mine = slice(None) if name == "all" else cg.types == index
            second = float(np.mean(np.sum(cg.forces[:, mine] ** 2, axis=-1)))
            reference = float(np.mean(np.sum(basic.forces[:, mine] ** 2, axis=-1)))
            print(
                f"{kind:<18}{name:<10}{second:>24.0f}{second / reference:>10.3f}"
                f"{second - reference:>20.0f}"
            )


if __name__ == "__main__":
    main()
