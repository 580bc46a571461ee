"""Reference labels from a calculator: labellers (IPSuite's ``get_calculator`` protocol), one
labelled copy per structure, and many structures on an executor with every result stored as it
arrives. Labellers are plain dataclasses: a workflow stores their fields as parameters."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import ase
import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.singlepoint import SinglePointCalculator

from apax_core.config import Executor
from apax_core.errors import InputError
from apax_core.tasks import Lost, TaskStore, run_tasks

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


class LabellerError(InputError):
    """A labeller that cannot work here (missing package, executable or variable)."""


@dataclasses.dataclass
class GenericLabeller:
    """Any ASE calculator from an import path and kwargs: ``ase.calculators.cp2k.CP2K``,
    ``ase.calculators.orca.ORCA``, ``ase.calculators.vasp.Vasp``... ``executables`` and
    ``environment`` name what the code needs on the machine that labels (``cp2k_shell``,
    ``VASP_PP_PATH``); they are checked before the first structure."""

    import_path: str = "ase.calculators.emt.EMT"
    kwargs: dict = dataclasses.field(default_factory=dict)
    executables: list[str] = dataclasses.field(default_factory=list)
    environment: list[str] = dataclasses.field(default_factory=list)

    def get_calculator(self, **kwargs):
        missing = [e for e in self.executables if shutil.which(e) is None]
        missing += [f"${v}" for v in self.environment if not os.environ.get(v)]
        if missing:
            raise LabellerError(f"{self.import_path}: not found on this machine: {missing}")
        module, _, name = self.import_path.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            raise LabellerError(f"{self.import_path}: cannot import ({err})") from err
        return cls(**self.kwargs)


@dataclasses.dataclass
class XTBLabeller:
    """GFN-xTB through tblite (``pip install 'apax-nodes[xtb]'``), for molecules and periodic
    systems. Charge and multiplicity come from ``atoms.info["charge"]`` and
    ``atoms.info["multiplicity"]`` where set, else from these fields (None: neutral, lowest
    multiplicity)."""

    method: Literal["GFN2-xTB", "GFN1-xTB", "IPEA1-xTB"] = "GFN2-xTB"
    charge: int | None = None
    multiplicity: int | None = None
    accuracy: float = 1.0
    electronic_temperature: float = 300.0
    max_iterations: int = 250

    def get_calculator(self, **kwargs):
        try:
            import tblite.ase  # noqa: F401
        except ImportError as err:
            raise LabellerError("XTBLabeller needs tblite: pip install 'apax-nodes[xtb]'") from err
        return XTBCalculator(dataclasses.asdict(self))


class XTBCalculator(Calculator):
    """tblite's calculator, built per structure so that every structure gets its own charge
    and multiplicity."""

    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self, settings: dict) -> None:
        super().__init__()
        self.settings = settings

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        from tblite.ase import TBLite

        super().calculate(atoms, properties, system_changes)
        s = self.settings
        inner = TBLite(
            method=s["method"],
            charge=self.atoms.info.get("charge", s["charge"]),
            multiplicity=self.atoms.info.get("multiplicity", s["multiplicity"]),
            accuracy=s["accuracy"],
            electronic_temperature=s["electronic_temperature"],
            max_iterations=s["max_iterations"],
            verbosity=0,
        )
        wanted = ["energy", "forces"] + (["stress"] if self.atoms.pbc.all() else [])
        inner.calculate(self.atoms.copy(), wanted, all_changes)
        self.results = {k: inner.results[k] for k in wanted}


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
    if not np.isfinite(results["energy"]):
        raise FloatingPointError("non-finite energy")
    out.calc = SinglePointCalculator(out, **results)
    return out


def label_task(job: tuple[Labeller, ase.Atoms]) -> ase.Atoms | dict:
    """One reference calculation, in whatever worker runs it: the labelled copy, or a failure
    record with the error."""
    labeller, atoms = job
    try:
        return label(atoms, labeller.get_calculator())
    except Exception as err:  # noqa: BLE001 - any calculator failure is recorded
        return {"error": f"{type(err).__name__}: {err}"}


def task_key(labeller, atoms: ase.Atoms) -> str:
    """What a stored result must match: the labeller's settings and the structure."""
    h = hashlib.sha256(type(labeller).__qualname__.encode())
    if dataclasses.is_dataclass(labeller):
        h.update(json.dumps(dataclasses.asdict(labeller), sort_keys=True, default=str).encode())
    for a in (atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(json.dumps([atoms.info.get(k) for k in ("charge", "multiplicity")]).encode())
    return h.hexdigest()[:32]


def label_frames(
    labeller: Labeller,
    frames: Sequence[ase.Atoms],
    executor: Executor,
    store_dir: str | Path,
    desc: str = "labels",
) -> tuple[list[ase.Atoms], list[dict]]:
    """The labelled copies of ``frames`` that succeeded, and a record ({index, error}) of each
    that failed, computed on ``executor``. Results are kept in ``store_dir`` as they arrive, so
    a rerun after a crash computes only what is missing. A labeller that cannot work here
    fails before any calculation."""
    labeller.get_calculator()
    jobs = [(labeller, atoms) for atoms in frames]
    # the index too: two identical structures are two tasks with results of their own
    keys = [f"{k}-{task_key(labeller, a)}" for k, a in enumerate(frames)]
    results = run_tasks(label_task, jobs, keys, executor, TaskStore(store_dir), desc=desc)
    labelled, failures = [], []
    for k, result in enumerate(results):
        if isinstance(result, ase.Atoms):
            labelled.append(result)
            continue
        error = result.error if isinstance(result, Lost) else result["error"]
        log.warning("%s: structure %d failed: %s", desc, k, error)
        failures.append({"index": k, "error": error})
    return labelled, failures


def reference_md(
    atoms: ase.Atoms,
    calc,
    thermostat: tuple[float, float],
    dt: float,
    n_steps: int,
    sampling_rate: int,
    rng: np.random.Generator,
) -> list[ase.Atoms]:
    """Langevin MD of ``atoms`` with the reference calculator itself (held-out test data).

    ``thermostat`` is (temperature in K, friction in 1/fs); ``dt`` in fs. Velocities start
    Maxwell-Boltzmann at the temperature; a labelled copy is kept every ``sampling_rate`` steps.
    """
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from tqdm.auto import tqdm

    temperature, friction = thermostat
    atoms = atoms.copy()
    atoms.calc = calc
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    dyn = Langevin(
        atoms, dt * units.fs, temperature_K=temperature, friction=friction / units.fs, rng=rng
    )
    frames = []
    for _ in tqdm(range(n_steps // sampling_rate), desc="reference md"):
        dyn.run(sampling_rate)
        frames.append(label(atoms, calc))
    return frames
