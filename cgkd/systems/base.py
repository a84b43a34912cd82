"""What every built-in all-atom system shares: its MD protocol and the OpenMM system it builds.

A system spec (:class:`AASpec` subclass) holds the protocol fields below plus its own
composition fields, and :meth:`AASpec.build` returns a :class:`BuiltSystem`: an OpenMM
``System`` with its topology and starting positions, not yet minimised or equilibrated.
:func:`cgkd.systems.reference_md.generate` then runs the protocol (minimise, optional NPT,
NVT equilibration, NVT production) and writes the H5MD data set.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import openmm
from openmm import app


@dataclass(frozen=True, eq=False)
class BuiltSystem:
    """An OpenMM system ready for a Context.

    Attributes:
        topology: the topology, with its periodic box vectors set.
        positions: ``[N, 3]`` starting positions, nm (virtual sites included, if any).
        system: the periodic OpenMM System (no barostat, no integrator).
        facts: what to record about how it was built (force field files, composition, ...).
    """

    topology: app.Topology
    positions: np.ndarray
    system: openmm.System
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class AASpec(abc.ABC):
    """The MD protocol of a built-in system. Units: K, ps, 1/ps, bar; intervals in MD steps.

    Phases, in order: energy minimisation; ``npt_equilibration`` ps at ``pressure`` with a
    Monte Carlo barostat (skipped when 0; the box is then set to the mean volume of its second
    half); ``equilibration`` ps of NVT; ``production`` ps of NVT saving positions, forces and
    the box every ``save_interval`` steps. All phases use a Langevin middle integrator.
    ``platform`` and ``threads`` as :func:`cgkd.simulation.engine.select_platform` (``auto``:
    CUDA when present, else CPU; ``threads`` set the CPU platform's thread count, ``None``:
    OpenMM's default, the run's ``threads``); forces are deterministic where the platform
    offers it. On the CPU platform a seed repeats its run bit for bit only with
    ``threads=1``: two runs of one seed at two threads part within picoseconds.
    """

    temperature: float = 300.0
    timestep: float = 0.002
    friction: float = 1.0
    pressure: float = 1.0
    barostat_interval: int = 25
    npt_equilibration: float = 0.0
    equilibration: float = 20.0
    production: float = 80.0
    save_interval: int = 100
    seed: int = 0
    platform: str = "CPU"
    threads: int | None = None

    def __post_init__(self) -> None:
        kind = type(self).__name__
        positive = {
            "temperature": self.temperature,
            "timestep": self.timestep,
            "friction": self.friction,
            "pressure": self.pressure,
            "barostat_interval": self.barostat_interval,
            "production": self.production,
            "save_interval": self.save_interval,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{kind}.{name} must be positive, got {value}")
        for name in ("npt_equilibration", "equilibration"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{kind}.{name} must be >= 0 ps, got {getattr(self, name)}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"{kind}.threads must be >= 1 or None, got {self.threads}")
        if self.production_steps < self.save_interval:
            raise ValueError(
                f"{kind}.production of {self.production} ps is shorter than one save interval "
                f"({self.save_interval} steps of {self.timestep} ps); lengthen production"
            )

    @abc.abstractmethod
    def build(self) -> BuiltSystem:
        """Build the system: topology, starting positions and OpenMM System."""

    @property
    def production_steps(self) -> int:
        """Number of production MD steps (a whole number of save intervals)."""
        n_frames = round(self.production / self.timestep) // self.save_interval
        return n_frames * self.save_interval

    @property
    def npt_steps(self) -> int:
        """Number of NPT equilibration MD steps."""
        return round(self.npt_equilibration / self.timestep)

    @property
    def equilibration_steps(self) -> int:
        """Number of NVT equilibration MD steps."""
        return round(self.equilibration / self.timestep)
