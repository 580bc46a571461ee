"""Figures and dvc-plots tables: CSV (header row, one row per point) and PNG, each written whole.

Figures are drawn on matplotlib's Agg canvas directly, so no global backend is switched and no
pyplot state is touched: importing or calling this module changes nothing for its host program.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from apax_core.files import atomic_write


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return atomic_write(path, buffer.getvalue())


def write_png(fig: Figure, path: str | Path) -> Path:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return atomic_write(path, buffer.getvalue())


def parity_png(reference: np.ndarray, predicted: np.ndarray, title: str, path: str | Path) -> Path:
    """Predicted against reference values with the identity line."""
    fig = Figure(figsize=(4, 4))
    ax = fig.add_subplot()
    ax.scatter(reference, predicted, s=2, alpha=0.4)
    lo = float(min(reference.min(), predicted.min()))
    hi = float(max(reference.max(), predicted.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set(xlabel="reference force (eV/A)", ylabel="predicted force (eV/A)", title=title)
    return write_png(fig, path)


def reliability_png(
    expected: np.ndarray, observed: np.ndarray, title: str, path: str | Path
) -> Path:
    """Observed against expected coverage of central Gaussian intervals (ideal: diagonal)."""
    fig = Figure(figsize=(4, 4))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="ideal")
    ax.plot(expected, observed, lw=2, label="model")
    ax.set(xlabel="expected coverage", ylabel="observed coverage", title=title)
    ax.legend()
    return write_png(fig, path)


def rmse_vs_rmv_png(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, path: str | Path
) -> Path:
    """Binned force RMSE against root mean variance, one line per element (``curves``: symbol
    -> (rmv, rmse) in eV/A), log-log with the diagonal (ideal)."""
    fig = Figure(figsize=(4, 4))
    ax = fig.add_subplot()
    for element, (rmv, rmse) in curves.items():
        ax.plot(rmv, rmse, "o-", ms=3, label=element)
    values = np.concatenate([np.concatenate(c) for c in curves.values()] + [np.ones(0)])
    values = values[values > 0]
    lo, hi = (values.min(), values.max()) if values.size else (1e-3, 1.0)
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="ideal")
    ax.set(xscale="log", yscale="log", xlabel="RMV (eV/A)", ylabel="RMSE (eV/A)", title=title)
    ax.legend()
    return write_png(fig, path)


def loop_png(table, path: str | Path) -> Path:
    """Test force error and calibrated force z^2 of each iteration against the labels so far
    (``table`` has columns n_labels, test_forces_mae, forces_z2)."""
    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    ax.plot(table["n_labels"], table["test_forces_mae"], "o-", color="tab:blue")
    ax.set(xlabel="labelled structures", ylabel="test force MAE (meV/A)")
    if "forces_z2" in table and table["forces_z2"].notna().any():
        twin = ax.twinx()
        twin.plot(table["n_labels"], table["forces_z2"], "s--", color="tab:red")
        twin.axhline(1.0, color="tab:red", lw=0.8, alpha=0.5)
        twin.set_ylabel("force mean z^2 (calibrated; ideal 1)", color="tab:red")
    return write_png(fig, path)


def rdf_png(table, title: str, path: str | Path) -> Path:
    """Every ``g_*`` column of ``table`` against its ``r_A`` column."""
    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    for column in (c for c in table.columns if c.startswith("g_")):
        ax.plot(table["r_A"], table[column], label=column[2:])
    ax.axhline(1.0, color="k", lw=0.8, alpha=0.5)
    ax.set(xlabel="r (A)", ylabel="g(r)", title=title)
    ax.legend()
    return write_png(fig, path)
