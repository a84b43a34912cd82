"""Training figures: loss and learning rate per epoch of named runs; the rounds of a
relative-entropy refinement."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cgkd.io.atomic import atomic_path


def plot_loss_curves(
    histories: dict[str, list[dict[str, float]]], path: Path, title: str = ""
) -> Path:
    """Save a PNG of train (dashed) and validation (solid) loss per epoch on a log axis, with
    each run's best validation epoch marked, above its learning rate; return ``path``.

    ``histories`` maps run names (e.g. "teacher_0", "student") to ``TrainResult.history``.
    Non-finite losses are left out of the curves (gaps) and of the best-epoch search.

    Raises:
        ValueError: no runs, or a run with an empty history.
    """
    if not histories:
        raise ValueError("no training histories to plot")
    empty = [name for name, history in histories.items() if not history]
    if empty:
        raise ValueError(f"empty training history for {', '.join(map(repr, empty))}")
    figure = Figure(figsize=(7.0, 6.0), layout="constrained")
    FigureCanvasAgg(figure)
    loss_ax, lr_ax = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    for name, history in histories.items():
        epochs = [entry["epoch"] for entry in history]
        train = [_finite(entry["train_loss"]) for entry in history]
        val = [_finite(entry["val_loss"]) for entry in history]
        (line,) = loss_ax.plot(epochs, val, label=f"{name} (val)")
        colour = line.get_color()
        loss_ax.plot(epochs, train, linestyle="--", color=colour, label=f"{name} (train)")
        finite = [
            (loss, epoch) for loss, epoch in zip(val, epochs, strict=True) if not math.isnan(loss)
        ]
        if finite:
            best_loss, best_epoch = min(finite)
            loss_ax.plot(best_epoch, best_loss, marker="*", markersize=12, color=colour)
        lr_ax.plot(epochs, [entry["lr"] for entry in history], color=colour)
    loss_ax.plot([], [], "k*", markersize=10, linestyle="none", label="best val. epoch")
    loss_ax.set_yscale("log")
    loss_ax.set_ylabel("loss (normalised)")
    loss_ax.legend(fontsize="small", ncol=2)
    if title:
        loss_ax.set_title(title)
    lr_ax.set_yscale("log")
    lr_ax.set_xlabel("epoch")
    lr_ax.set_ylabel("learning rate")
    return _save(figure, path)


def plot_refinement(history: list[dict[str, float]], path: Path, n_beads: int) -> Path:
    """Save a PNG of a relative-entropy refinement per round: the gap between the mean
    energies of the reference frames and of the model's own frames (kJ/mol per bead; raw and
    a running mean over 10 rounds) above the gradient's norm; return ``path``."""
    if not history:
        raise ValueError("no refinement rounds to plot")
    rounds = np.array([entry["round"] for entry in history])
    gap = np.array([entry["energy_gap"] for entry in history]) / n_beads
    window = min(10, len(gap))
    running = np.convolve(gap, np.ones(window) / window, mode="valid")
    figure = Figure(figsize=(7.0, 5.0), layout="constrained")
    FigureCanvasAgg(figure)
    gap_ax, norm_ax = figure.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    gap_ax.plot(rounds, gap, color="0.7", lw=0.8, label="per round")
    gap_ax.plot(rounds[window - 1 :], running, color="C0", label=f"mean of {window} rounds")
    gap_ax.axhline(0.0, color="k", lw=0.8)
    gap_ax.set_ylabel("<U>_AA - <U>_CG (kJ/mol/bead)")
    gap_ax.legend(fontsize="small")
    gap_ax.set_title("relative-entropy refinement")
    norm_ax.plot(rounds, [entry["gradient_norm"] for entry in history], color="C1")
    norm_ax.set_yscale("log")
    norm_ax.set_xlabel("round")
    norm_ax.set_ylabel("gradient norm")
    return _save(figure, path)


def _save(figure: Figure, path: Path) -> Path:
    """Write ``figure`` to ``path`` as a PNG (atomic); return ``path``."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120)
    return Path(path)


def _finite(value: float) -> float:
    return value if math.isfinite(value) else math.nan
