"""Loss-curve figure: training and validation loss and learning rate per epoch of named runs."""

from __future__ import annotations

import math
from pathlib import Path

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
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120)
    return Path(path)


def _finite(value: float) -> float:
    return value if math.isfinite(value) else math.nan
