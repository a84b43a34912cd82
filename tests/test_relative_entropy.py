"""Relative-entropy refinement: it finds a known potential from its samples, resumes where it
stopped, and its walkers carry real OpenMM MD of a changing model from call to call."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import NETWORK, PRIOR
from torch import nn

from cgkd.models.checkpoint import build_potential
from cgkd.simulation.export import export_torchscript
from cgkd.simulation.md import MDSettings
from cgkd.simulation.walkers import Walkers
from cgkd.training.curves import plot_refinement
from cgkd.training.relative_entropy import RefineSettings, refine, relative_entropy_surrogate
from cgkd.units import kt

TEMPERATURE = 300.0
BOX = np.eye(3) * 3.0


class Trap(nn.Module):
    """Beads in a harmonic trap, U = k/2 sum |x|^2 (kJ/mol, nm), k = exp(log_k)."""

    def __init__(self, k: float) -> None:
        super().__init__()
        self.log_k = nn.Parameter(torch.tensor(np.log(k), dtype=torch.float64))

    def forward(self, positions: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.log_k.exp() * positions.square().sum((1, 2))


class ExactSampler:
    """Independent frames of the trap's own Boltzmann ensemble (Gaussian, variance kT/k)."""

    def __init__(self, trap: Trap, n_frames: int, n_beads: int, seed: int) -> None:
        self.trap, self.shape = trap, (n_frames, n_beads, 3)
        self.rng = np.random.default_rng(seed)

    def __call__(self) -> tuple[np.ndarray, np.ndarray]:
        sigma = np.sqrt(kt(TEMPERATURE) / float(self.trap.log_k.detach().exp()))
        frames = self.rng.normal(0.0, sigma, self.shape)
        return frames, np.repeat(BOX[None], len(frames), axis=0)

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


def trap_reference(k: float, n_frames: int = 400, n_beads: int = 10) -> tuple:
    frames, boxes = ExactSampler(Trap(k), n_frames, n_beads, seed=123)()
    return frames, boxes


def refine_trap(start_k: float, reference: tuple, rounds: int, checkpoint=None, trap=None):
    trap = trap or Trap(start_k)
    settings = RefineSettings(rounds=rounds, learning_rate=0.05, reference_frames=50)
    sampler = ExactSampler(trap, 50, reference[0].shape[1], seed=7)
    history = refine(
        trap, trap, reference, sampler, settings, TEMPERATURE, progress=False, checkpoint=checkpoint
    )
    return trap, history


def test_surrogate_gradient_is_beta_times_the_difference_of_mean_energy_derivatives():
    trap = Trap(500.0)
    reference = [torch.as_tensor(a) for a in trap_reference(200.0, 30)]
    sampled = [torch.as_tensor(a) for a in trap_reference(500.0, 30)]
    relative_entropy_surrogate(trap, reference, sampled, TEMPERATURE).backward()
    # dU/dlog_k = U for this trap.
    expected = (trap(*reference).mean() - trap(*sampled).mean()).detach() / kt(TEMPERATURE)
    assert float(trap.log_k.grad) == pytest.approx(float(expected), rel=1e-12)


@pytest.mark.parametrize("start_k", [150.0, 2000.0])
def test_refinement_finds_the_trap_that_made_the_reference(start_k):
    """The minimum of the relative entropy is the potential that made the data: from a trap
    too soft or too stiff, refinement reaches the reference's stiffness."""
    true_k = 600.0
    trap, history = refine_trap(start_k, trap_reference(true_k), rounds=300)
    assert float(trap.log_k.detach().exp()) == pytest.approx(true_k, rel=0.05)
    assert len(history) == 300 and history[-1]["cg_frames"] == 50
    # The mean energies of the two ensembles meet (equipartition: both near 3N kT/2).
    late = np.mean([abs(h["energy_gap"]) for h in history[-50:]])
    early = np.mean([abs(h["energy_gap"]) for h in history[:10]])
    assert late < 0.2 * early


def test_refinement_figure_is_written_and_needs_rounds(tmp_path):
    _, history = refine_trap(2000.0, trap_reference(600.0), rounds=12)
    path = plot_refinement(history, tmp_path / "refinement.png", n_beads=10)
    assert path.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="no refinement rounds"):
        plot_refinement([], tmp_path / "empty.png", n_beads=10)
    assert not (tmp_path / "empty.png").exists()


def test_refinement_resumes_from_its_checkpoint_exactly(tmp_path):
    reference = trap_reference(600.0)
    whole, whole_history = refine_trap(2000.0, reference, rounds=40)
    checkpoint = tmp_path / "refine.pt"
    refine_trap(2000.0, reference, rounds=15, checkpoint=checkpoint)
    resumed, history = refine_trap(2000.0, reference, rounds=40, checkpoint=checkpoint)
    assert len(history) == 40
    assert float(resumed.log_k.detach()) == float(whole.log_k.detach())
    assert [h["energy_gap"] for h in history] == [h["energy_gap"] for h in whole_history]


def test_bad_refine_settings_are_one_line_errors():
    with pytest.raises(ValueError, match=r"refine\.start='teacher'"):
        RefineSettings(start="teacher")
    with pytest.raises(ValueError, match=r"refine\.steps=10 saves no frame"):
        RefineSettings(steps=10, save_interval=20)
    with pytest.raises(ValueError, match=r"refine\.walkers must be positive"):
        RefineSettings(walkers=0)


@pytest.fixture
def liquid_walkers(liquid, tmp_path):
    """Two walkers of the 40-bead test liquid with a network (random weights, small) on a
    repulsive prior, and the model they run (float32 export rewritten at each call)."""
    positions, box, species = liquid
    model = build_potential([NETWORK], PRIOR, seeds=[5])
    with torch.no_grad():
        model.networks[0].energy_scale.fill_(0.5)
    exports = []

    def exported():
        exports.append(export_torchscript(model, species, tmp_path / "model.ts"))
        return exports[-1]

    starts = np.repeat(positions.numpy(), 2, axis=0)
    boxes = np.repeat(box.numpy(), 2, axis=0)
    settings = MDSettings(timestep=0.002, platform="CPU", threads=1)
    walkers = Walkers(
        exported, starts, boxes, np.full(40, 18.0), settings, steps=40, save_interval=10, seed=3
    )
    return walkers, exports


def test_walkers_continue_from_where_they_stopped(liquid_walkers):
    walkers, exports = liquid_walkers
    frames, boxes = walkers()
    assert frames.shape == (8, 40, 3) and boxes.shape == (8, 3, 3)
    assert walkers.velocities is not None and walkers.calls == 1 and len(exports) == 1
    end_of_first = walkers.positions.copy()
    # Walker 0's last saved frame is where it stopped.
    assert np.allclose(frames[3], end_of_first[0], atol=1e-5)
    state = walkers.state_dict()
    later, _ = walkers()
    assert len(exports) == 2  # the model is exported again for every call
    # 10 steps of 2 fs on from the end of the first call, not from the start again.
    step = np.linalg.norm(later[0] - end_of_first[0], axis=1)
    assert step.max() < 0.05 and step.mean() > 1e-4
    walkers.load_state_dict(state)
    assert walkers.calls == 1 and np.array_equal(walkers.positions, end_of_first)


def test_a_walker_that_goes_bad_is_an_error_naming_it(liquid_walkers):
    walkers, _ = liquid_walkers
    walkers.settings = MDSettings(
        timestep=0.002, platform="CPU", threads=1, min_distance=0.9, seed=3
    )
    with pytest.raises(RuntimeError, match="CG MD of walker 0 went bad in call 0"):
        walkers()
