"""The figure of the README and the getting-started page: g(r), the first-shell angle
distribution and the tetrahedral order of the AA reference, the student, the baseline and
the refined student of one run (the models it simulated).

    python benchmarks/readme_figure.py outputs/<date>/<time> [-o docs/figures/default_run.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from cgkd.observables.sources import load_curves
from cgkd.results import CURVES_FILE, REFERENCE

STYLES = {
    REFERENCE: {"color": "k", "lw": 2.2},
    "student": {"color": "C0", "lw": 1.4},
    "baseline": {"color": "C1", "lw": 1.2, "ls": "--"},
    "refined": {"color": "C2", "lw": 1.4},
}
PANELS = (
    ("rdf", "r (nm)", "g(r)", "1-bead water, 300 molecules"),
    ("adf", "angle (deg)", "probability density (1/deg)", "angles within the first shell"),
    ("tetrahedral", "tetrahedral q", "probability density", "tetrahedral order"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run's output directory")
    parser.add_argument("-o", "--out", type=Path, default=Path("docs/figures/default_run.png"))
    args = parser.parse_args()
    curves = load_curves(args.run / CURVES_FILE)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(13, 3.3))
    for ax, (name, xlabel, ylabel, title) in zip(axes, PANELS, strict=True):
        for source in (model for model in STYLES if model in curves):
            style, result = STYLES[source], curves[source][name]
            ax.plot(result.x, result.y, label=source, **style)
        ax.set(xlabel=xlabel, ylabel=ylabel)
        ax.set_title(title, fontsize=9)
    axes[0].set_xlim(0.2, None)
    axes[2].set_xlim(-0.25, 1.0)
    axes[0].legend(frameon=False)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
