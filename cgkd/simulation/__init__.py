"""MD in OpenMM: the one engine (platform, integrators, Simulation, reporters, resume), CG
systems from exported models (TorchScript through openmmtorch, or a native System), CG MD
replicas, teacher MD, the NVE drift check and the teachers.

Import this package (or torch) before openmm: see :mod:`cgkd.simulation.system`.
"""

from cgkd.simulation.drift import nve_energy_drift
from cgkd.simulation.engine import create_simulation, model_simulation, run, select_platform
from cgkd.simulation.export import export_flavours, export_torchscript, read_export_metadata
from cgkd.simulation.md import MDSettings, run_cg_md, run_replicas, time_force_evaluation
from cgkd.simulation.native import export_native
from cgkd.simulation.sampling import SamplerSettings, sample_md
from cgkd.simulation.system import build_system, torch_force
from cgkd.simulation.teachers import EnsembleTeacher, OpenMMTeacher, Teacher, TorchScriptTeacher

__all__ = [
    "EnsembleTeacher",
    "MDSettings",
    "OpenMMTeacher",
    "SamplerSettings",
    "Teacher",
    "TorchScriptTeacher",
    "build_system",
    "create_simulation",
    "export_flavours",
    "export_native",
    "export_torchscript",
    "model_simulation",
    "nve_energy_drift",
    "read_export_metadata",
    "run",
    "run_cg_md",
    "run_replicas",
    "sample_md",
    "select_platform",
    "time_force_evaluation",
    "torch_force",
]
