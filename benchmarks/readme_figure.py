"""The figure of the README and the getting-started page: g(r) and the first-shell angle
distribution of the AA reference, the student and the baseline of one run.

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
}
PANELS = (
    ("rdf", "r (nm)", "g(r)", "1-bead water, 300 molecules"),
    ("adf", "angle (deg)", "probability density (1/deg)", "angles within the first shell"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run's output directory")
    parser.add_argument("-o", "--out", type=Path, default=Path("docs/figures/default_run.png"))
    args = parser.parse_args()
    curves = load_curves(args.run / CURVES_FILE)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.3))
    for ax, (name, xlabel, ylabel, title) in zip(axes, PANELS, strict=True):
        for source, style in STYLES.items():
            result = curves[source][name]
            ax.plot(result.x, result.y, label=source, **style)
        ax.set(xlabel=xlabel, ylabel=ylabel)
        ax.set_title(title, fontsize=9)
    axes[0].set_xlim(0.2, None)
    axes[0].legend(frameon=False)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
