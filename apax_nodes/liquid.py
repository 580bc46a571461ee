"""Density and radial distribution functions of a liquid trajectory."""

from __future__ import annotations

from pathlib import Path

import ase
import numpy as np
import pandas as pd
import zntrack

from apax_core.errors import InputError
from apax_core.liquid import density, first_peak, rdf
from apax_core.plots import rdf_png
from apax_nodes.errors import one_line_errors


@one_line_errors
class LiquidStructure(zntrack.Node):
    """Mass density (g/cm^3) and partial g(r) of the frames of an MD run (an NPT run: the
    density is the result), after discarding the first ``skip`` share of frames as
    equilibration. ``metrics`` holds the mean density, its standard deviation over frames and
    the position (A) and height of each pair's first peak; ``rdf`` is a dvc-plots table."""

    data: list[ase.Atoms] = zntrack.deps()
    pairs: list[list[str]] = zntrack.params(default_factory=lambda: [["O", "O"]])
    """Element pairs of the partial g(r), e.g. [["O", "O"], ["O", "H"]]."""
    r_max: float = zntrack.params(3.9)
    """Range of g(r) in A (at most half the cell's smallest height)."""
    skip: float = zntrack.params(0.5)
    """Share of the frames, from the start, left out as equilibration."""
    metrics: dict = zntrack.metrics()
    rdf: pd.DataFrame = zntrack.plots(x="r_A")
    plots_dir: Path = zntrack.outs_path(zntrack.nwd / "plots")

    def run(self) -> None:
        if not 0.0 <= self.skip < 1.0:
            raise InputError(f"skip must be in [0, 1), got {self.skip}")
        frames = self.data[int(self.skip * len(self.data)) :]
        if not frames:
            raise InputError("no frames to analyse")
        rho = np.array([density(a) for a in frames])
        self.metrics = {
            "density_g_cm3": float(rho.mean()),
            "density_std": float(rho.std()),
            "n_frames": len(frames),
        }
        table = {}
        for a, b in self.pairs:
            r, g = rdf(frames, a, b, self.r_max)
            table["r_A"], table[f"g_{a}{b}"] = r, g
            peak_r, peak_g = first_peak(r, g)
            self.metrics |= {f"{a}{b}_first_peak_A": peak_r, f"{a}{b}_first_peak_g": peak_g}
        self.rdf = pd.DataFrame(table).round(5)
        self.plots_dir.mkdir(parents=True, exist_ok=True)
        rdf_png(
            self.rdf,
            f"{self.name}: {self.metrics['density_g_cm3']:.3f} g/cm^3",
            self.plots_dir / "rdf.png",
        )
