"""Save and load CG potentials with the settings that rebuild them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from cgkd.models.hipnn import HipnnTS
from cgkd.models.pair_table import PairTable
from cgkd.models.potential import CGPotential
from cgkd.models.priors import build_priors


def build_potential(
    network_kwargs: list[dict[str, Any]],
    prior: dict[str, Any] | None = None,
    seeds: list[int] | None = None,
    pair_table: dict[str, Any] | None = None,
) -> CGPotential:
    """A potential with one HipnnTS per entry of ``network_kwargs``, each initialised with its
    seed, the priors described by ``prior`` (a dict from :func:`cgkd.models.priors.fit_priors`)
    and the pair table described by ``pair_table`` (:meth:`PairTable.spec`), if any.
    """
    networks = []
    for index, kwargs in enumerate(network_kwargs):
        torch.manual_seed(seeds[index] if seeds else index)
        networks.append(HipnnTS(**kwargs))
    table = None if pair_table is None else PairTable.from_spec(pair_table)
    return CGPotential(networks, None if prior is None else build_priors(prior), table)


def save_potential(
    path: Path,
    potential: CGPotential,
    network_kwargs: list[dict[str, Any]],
    prior: dict[str, Any] | None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write weights, the settings that rebuild the potential and ``metadata`` (atomic)."""
    path = Path(path)
    payload = {
        "network_kwargs": network_kwargs,
        "prior": prior,
        "pair_table": potential.pair_table.spec() if potential.use_pair_table else None,
        "state_dict": potential.state_dict(),
        "metadata": metadata or {},
    }
    temporary = path.with_name(path.name + ".tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)
    return path


def load_potential(path: Path, n_beads: int | None = None) -> tuple[CGPotential, dict[str, Any]]:
    """The potential saved at ``path`` and its metadata; ``n_beads`` sets up its priors for a
    system of that many beads (for models without bonded priors, e.g. 1-bead water)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}; run the stage that trains it first")
    payload = torch.load(path, weights_only=False)
    prior = payload["prior"]
    if n_beads is not None and prior is not None:
        if prior.get("bonds") or prior.get("angles"):
            raise ValueError(
                f"{path} has bonded priors for {prior['n_beads']} beads; it cannot be set up for "
                f"{n_beads} beads"
            )
        prior = {**prior, "n_beads": n_beads}
    potential = build_potential(payload["network_kwargs"], prior, None, payload.get("pair_table"))
    potential.load_state_dict(payload["state_dict"])
    return potential, payload["metadata"]


def merge_members(
    members: list[tuple[CGPotential, list[dict[str, Any]]]],
) -> tuple[CGPotential, list[dict[str, Any]]]:
    """One ensemble potential whose members are the networks of ``members`` (same prior)."""
    networks = [net for potential, _ in members for net in potential.networks]
    kwargs = [entry for _, entries in members for entry in entries]
    first = members[0][0]
    return CGPotential(networks, first.priors if first.use_priors else None), kwargs
