"""Selection diagnostics (paper fig. 3): the distance curve of a greedy ranking and a PCA map.

Each is written as a PNG and as a dvc-plots friendly CSV through :mod:`apax_core.plots`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from apax_core.plots import write_csv, write_png

COLOURS = {"train": "0.6", "pool": "tab:blue", "selected": "tab:red"}
"""The paper's colours: training grey, pool blue, selected red."""


def pca_2d(train: np.ndarray, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First two principal-component coordinates of the training and pool rows, fitted on both.

    Eigen-decomposes the smaller of the covariance (D x D) and Gram (rows x rows) matrices.
    Signs are fixed so that the coordinate of largest magnitude is positive (deterministic).
    """
    x = np.concatenate([np.asarray(train, np.float64).reshape(-1, pool.shape[1]), pool])
    xc = x - x.mean(axis=0)
    if xc.shape[1] <= xc.shape[0]:
        values, vectors = np.linalg.eigh(xc.T @ xc)
        coords = xc @ vectors[:, ::-1][:, :2]
    else:
        values, vectors = np.linalg.eigh(xc @ xc.T)
        coords = vectors[:, ::-1][:, :2] * np.sqrt(np.maximum(values[::-1][:2], 0.0))
    coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))  # fewer than two dimensions
    peak = coords[np.argmax(np.abs(coords), axis=0), [0, 1]]
    coords = coords * np.where(peak < 0, -1.0, 1.0)
    n_train = len(x) - len(pool)
    return coords[:n_train], coords[n_train:]


def write_distance_curve(
    distances: np.ndarray, directory: str | Path, n_selected: int | None = None
) -> list[Path]:
    """distances.csv (pick, distance, selected) and distances.png: the distance of each greedy
    pick over a ranking of the pool. Where the curve flattens the pool stops being informative."""
    directory = Path(directory)
    d = np.asarray(distances, dtype=np.float64)
    n_sel = len(d) if n_selected is None else n_selected
    rows = [(k + 1, repr(float(v)), int(k < n_sel)) for k, v in enumerate(d)]
    csv_path = write_csv(directory / "distances.csv", ["pick", "distance", "selected"], rows)

    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    pick = np.arange(1, len(d) + 1)
    finite = np.isfinite(d)
    ax.plot(pick[finite], d[finite], color=COLOURS["pool"], lw=1.2)
    chosen = finite & (pick <= n_sel)
    ax.scatter(pick[chosen], d[chosen], color=COLOURS["selected"], s=12, zorder=3, label="selected")
    if np.any(d[finite] > 0):
        ax.set_yscale("log")
    ax.set_xlabel("pick")
    ax.set_ylabel("distance to nearest known structure")
    ax.legend(frameon=False)
    png_path = write_png(fig, directory / "distances.png")
    return [csv_path, png_path]


def write_pca(
    train: np.ndarray, pool: np.ndarray, selected: np.ndarray, directory: str | Path
) -> list[Path]:
    """pca.csv (set, index, pc1, pc2; one row per training and per pool structure, selected
    pool structures labelled ``selected``) and pca.png."""
    directory = Path(directory)
    pool = np.asarray(pool, dtype=np.float64)
    t_xy, p_xy = pca_2d(train, pool)
    labels = np.full(len(pool), "pool", dtype=object)
    labels[np.asarray(selected, dtype=np.int64)] = "selected"
    rows = [("train", k, repr(float(x)), repr(float(y))) for k, (x, y) in enumerate(t_xy)]
    rows += [(labels[k], k, repr(float(x)), repr(float(y))) for k, (x, y) in enumerate(p_xy)]
    csv_path = write_csv(directory / "pca.csv", ["set", "index", "pc1", "pc2"], rows)

    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot()
    groups = {"train": t_xy, "pool": p_xy[labels == "pool"], "selected": p_xy[labels == "selected"]}
    for name, xy in groups.items():
        if len(xy):
            big = name == "selected"
            size, z = (24, 3) if big else (10, 2)
            ax.scatter(xy[:, 0], xy[:, 1], s=size, color=COLOURS[name], label=name, zorder=z)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(frameon=False)
    png_path = write_png(fig, directory / "pca.png")
    return [csv_path, png_path]
