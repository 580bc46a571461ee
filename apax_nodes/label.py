"""Labelling with a reference calculator. Labellers are off-graph dataclasses (IPSuite's
convention): their fields land in the Label node's params; they are not stages."""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
from pathlib import Path
from typing import Protocol

import ase
import numpy as np
import zntrack
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator
from tqdm import tqdm

from apax_core.files import atomic_write
from apax_nodes.errors import one_line_errors
from apax_nodes.frames import read_h5, write_h5

log = logging.getLogger(__name__)


@dataclasses.dataclass
class EMTLabeller:
    """ASE's effective-medium theory (Al, Cu, Ag, Au, Ni, Pd, Pt; H, C, N, O roughly)."""

    def get_calculator(self, **kwargs):
        from ase.calculators.emt import EMT

        return EMT()


@dataclasses.dataclass
class LJLabeller:
    """ASE's Lennard-Jones calculator."""

    epsilon: float = 1.0
    sigma: float = 1.0
    rc: float | None = None

    def get_calculator(self, **kwargs):
        from ase.calculators.lj import LennardJones

        return LennardJones(epsilon=self.epsilon, sigma=self.sigma, rc=self.rc)


@dataclasses.dataclass
class GenericLabeller:
    """Any ASE calculator from an import path, e.g. ``ase.calculators.emt.EMT``, and kwargs."""

    import_path: str = "ase.calculators.emt.EMT"
    kwargs: dict = dataclasses.field(default_factory=dict)

    def get_calculator(self, **kwargs):
        module, _, name = self.import_path.rpartition(".")
        return getattr(importlib.import_module(module), name)(**self.kwargs)


class Labeller(Protocol):
    """Anything with IPSuite's ``get_calculator`` (our labellers, IPSuite or mlipx nodes)."""

    def get_calculator(self, **kwargs) -> Calculator: ...


def label(atoms: ase.Atoms, calc) -> ase.Atoms:
    """A copy of ``atoms`` carrying energy, forces and (for 3D-periodic cells) stress."""
    out = atoms.copy()
    out.calc = calc
    results = {"energy": out.get_potential_energy(), "forces": out.get_forces()}
    if out.pbc.all():
        results["stress"] = out.get_stress()
    out.calc = SinglePointCalculator(out, **results)
    return out


@one_line_errors
class Label(zntrack.Node):
    """Reference labels for ``data``; a structure whose calculation fails is recorded in
    ``failures.json`` with its index and error, never silently dropped."""

    data: list[ase.Atoms] = zntrack.deps()
    labeller: Labeller = zntrack.deps()
    frames_path: Path = zntrack.outs_path(zntrack.nwd / "frames.h5")
    failures_path: Path = zntrack.outs_path(zntrack.nwd / "failures.json")
    metrics: dict = zntrack.metrics()

    def run(self) -> None:
        calc = self.labeller.get_calculator()
        frames, failures = [], []
        for k, atoms in enumerate(tqdm(self.data, desc=self.name, unit="structure")):
            try:
                labelled = label(atoms, calc)
                if not np.isfinite(labelled.get_potential_energy()):
                    raise FloatingPointError("non-finite energy")
                frames.append(labelled)
            except Exception as err:  # noqa: BLE001 - any calculator failure is recorded
                log.warning("%s: structure %d failed: %s", self.name, k, err)
                failures.append({"index": k, "error": f"{type(err).__name__}: {err}"})
        write_h5(self.frames_path, frames)
        atomic_write(self.failures_path, json.dumps(failures, indent=2))
        self.metrics = {"n_labelled": len(frames), "n_failed": len(failures)}

    @property
    def frames(self) -> list[ase.Atoms]:
        return read_h5(self, self.frames_path)

    @property
    def failures(self) -> list[dict]:
        with self.state.fs.open(self.failures_path.as_posix()) as fh:
            return json.load(fh)
