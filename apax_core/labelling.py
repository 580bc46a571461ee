"""Reference labels from a calculator: labellers (IPSuite's ``get_calculator`` protocol), one
labelled copy per structure, and many structures on an executor with every result stored as it
arrives. Labellers are plain dataclasses: a workflow stores their fields as parameters.

A worker builds a labeller's calculator once and reuses it for every structure (a code that
starts a process, such as cp2k_shell, starts it once). Every labelled frame records what made
it in ``atoms.info["labeller"]`` (method, code, version, settings), and a model directory
keeps the counts of its training data's records (``labellers.json``)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import importlib.metadata
import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import ase
import numpy as np
from ase.calculators.calculator import CalculationFailed, Calculator, all_changes
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import Bohr, Hartree, kB

from apax_core.config import Executor
from apax_core.errors import InputError
from apax_core.files import atomic_write
from apax_core.tasks import Lost, TaskStore, run_tasks

log = logging.getLogger(__name__)

LABELLERS = "labellers.json"
"""The file of a model directory that lists its training data's labellers."""


@functools.cache
def _version(package: str) -> str | None:
    """The installed version of the distribution that provides the import ``package``."""
    names = importlib.metadata.packages_distributions().get(package, [package])
    try:
        return importlib.metadata.version(names[0])
    except importlib.metadata.PackageNotFoundError:
        return None


def _provenance(method: str, code: str, settings: dict) -> dict:
    return {"method": method, "code": code, "version": _version(code), "settings": settings}


@dataclasses.dataclass
class EMTLabeller:
    """ASE's effective-medium theory (Al, Cu, Ag, Au, Ni, Pd, Pt; H, C, N, O roughly)."""

    def get_calculator(self, **kwargs):
        from ase.calculators.emt import EMT

        return EMT()

    def provenance(self) -> dict:
        return _provenance("EMT", "ase", {})


@dataclasses.dataclass
class LJLabeller:
    """ASE's Lennard-Jones calculator."""

    epsilon: float = 1.0
    sigma: float = 1.0
    rc: float | None = None

    def get_calculator(self, **kwargs):
        from ase.calculators.lj import LennardJones

        return LennardJones(epsilon=self.epsilon, sigma=self.sigma, rc=self.rc)

    def provenance(self) -> dict:
        return _provenance("Lennard-Jones", "ase", dataclasses.asdict(self))


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

    def provenance(self) -> dict:
        """The calculator class as the method, the package that provides it as the code."""
        return _provenance(self.import_path, self.import_path.partition(".")[0], self.kwargs)


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

    def provenance(self) -> dict:
        settings = {k: v for k, v in dataclasses.asdict(self).items() if k != "method"}
        return _provenance(self.method, "tblite", settings)


class XTBCalculator(Calculator):
    """GFN-xTB through tblite's library interface, one structure after another.

    tblite's calculator is kept while the elements, periodicity, charge and multiplicity stay
    the same; only positions and cell are updated (building one takes under a millisecond:
    the cost is in each calculation). Every SCF starts from atomic densities, not from the
    previous structure's density: tblite's ASE calculator restarts from it, which changed
    16 H2O forces by up to 1e-4 eV/A and saved no time. So a label equals that of a new
    calculator, whatever the worker labelled before. Stress is computed where asked
    (``atoms.get_stress()``) and the cell is periodic.
    """

    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self, settings: dict) -> None:
        super().__init__()
        self.settings = settings
        self._xtb, self._system = None, None

    def check_state(self, atoms: ase.Atoms, tol: float = 1e-15) -> list[str]:
        """ASE's changes, and a change of charge or multiplicity in ``atoms.info`` (a cation
        at the geometry of the last molecule is another calculation)."""
        changes = super().check_state(atoms, tol)
        if self.atoms is not None and not changes:
            ours = _charge_and_uhf(self.atoms, self.settings)
            if _charge_and_uhf(atoms, self.settings) != ours:
                changes.append("initial_charges")
        return changes

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        try:
            result = self._tblite(self.atoms).singlepoint()
        except RuntimeError as err:  # a bad geometry: start from a new calculator next time
            self._xtb, self._system = None, None
            raise CalculationFailed(str(err)) from err
        self.results = {
            "energy": result.get("energy") * Hartree,
            "forces": -result.get("gradient") * Hartree / Bohr,
        }
        if "stress" in properties and self.atoms.pbc.any():
            virial = result.get("virial") * Hartree / self.atoms.get_volume()
            self.results["stress"] = virial.flat[[0, 4, 8, 5, 2, 1]]

    def _tblite(self, atoms: ase.Atoms):
        """tblite's calculator for ``atoms``: the kept one at the new positions and cell, or
        a new one where elements, periodicity, charge or multiplicity changed."""
        from tblite.interface import Calculator as TBLite

        charge, uhf = _charge_and_uhf(atoms, self.settings)
        system = (charge, uhf, atoms.numbers.tobytes(), atoms.pbc.tobytes())
        positions, cell = atoms.positions / Bohr, atoms.cell.array / Bohr
        if system == self._system:
            self._xtb.update(positions=positions, lattice=cell)
            return self._xtb
        s = self.settings
        xtb = TBLite(s["method"], atoms.numbers, positions, charge, uhf, cell, atoms.pbc)
        xtb.set("accuracy", s["accuracy"])
        xtb.set("temperature", s["electronic_temperature"] * kB / Hartree)
        xtb.set("max-iter", s["max_iterations"])
        xtb.set("verbosity", 0)
        self._xtb, self._system = xtb, system
        return xtb


def _charge_and_uhf(atoms: ase.Atoms, settings: dict) -> tuple[float, int]:
    """Total charge and unpaired electrons: ``atoms.info`` first, then the labeller's fields,
    then (as tblite's ASE calculator) the sums of initial charges and magnetic moments."""
    charge = atoms.info.get("charge", settings["charge"])
    multiplicity = atoms.info.get("multiplicity", settings["multiplicity"])
    if charge is None:
        charge = atoms.get_initial_charges().sum()
    if multiplicity is None:
        return float(charge), int(round(atoms.get_initial_magnetic_moments().sum()))
    return float(charge), int(multiplicity) - 1


class Labeller(Protocol):
    """Anything with IPSuite's ``get_calculator`` (our labellers, IPSuite or mlipx nodes)."""

    def get_calculator(self, **kwargs) -> Calculator: ...


def labeller_record(labeller: Labeller) -> str:
    """What ``atoms.info["labeller"]`` of frames labelled by ``labeller`` says: compact JSON of
    its method, code, code version and settings. A labeller of another package (an IPSuite or
    mlipx node) is named by its class."""
    if hasattr(labeller, "provenance"):
        record = labeller.provenance()
    else:
        cls = type(labeller)
        package = cls.__module__.partition(".")[0]
        record = _provenance(f"{cls.__module__}.{cls.__qualname__}", package, {})
    return json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)


def record_labeller(frames: list[ase.Atoms], labeller: Labeller) -> list[ase.Atoms]:
    """``frames``, each with ``info["labeller"]`` set to ``labeller``'s record."""
    record = labeller_record(labeller)
    for atoms in frames:
        atoms.info["labeller"] = record
    return frames


def labeller_counts(frames: Sequence[ase.Atoms]) -> list[dict]:
    """The distinct labeller records of ``frames`` with their frame counts, most frames first;
    frames without a record (labelled elsewhere, or before records) count as "unknown"."""
    counts = Counter(atoms.info.get("labeller", "unknown") for atoms in frames)
    return [{"labeller": _parsed(r), "n_frames": n} for r, n in counts.most_common()]


def _parsed(record: str) -> dict | str:
    try:
        return json.loads(record)
    except (TypeError, ValueError):
        return record  # "unknown", or a text a user put there


def write_labellers(directory: str | Path, frames: Sequence[ase.Atoms]) -> Path:
    """``directory/labellers.json``: the labellers of a model's training data (all of them)."""
    counts = labeller_counts(frames)
    return atomic_write(Path(directory) / LABELLERS, json.dumps(counts, indent=2) + "\n")


def read_labellers(directory: str | Path) -> list[dict] | None:
    """The labellers of the model in ``directory``, or None for a model that has no record."""
    path = Path(directory) / LABELLERS
    return json.loads(path.read_text()) if path.is_file() else None


_CALCULATOR: dict[str, Calculator] = {}
"""This process's calculator, keyed by its labeller's settings: one at a time, so that a code
that holds resources (a cp2k_shell) holds them once."""


def worker_calculator(labeller: Labeller) -> Calculator:
    """The calculator of ``labeller`` in this process, built once per labeller type and fields
    and reused for every structure. A labeller that is no dataclass (whose settings cannot be
    told apart) gets a new calculator per call."""
    if not dataclasses.is_dataclass(labeller):
        return labeller.get_calculator()
    key = _settings_key(labeller)
    if key not in _CALCULATOR:
        _CALCULATOR.clear()
        _CALCULATOR[key] = labeller.get_calculator()
    return _CALCULATOR[key]


def forget_calculators() -> None:
    """Drop this process's calculator (after a failure: its state cannot be trusted)."""
    _CALCULATOR.clear()


def _settings_key(labeller) -> str:
    settings = json.dumps(dataclasses.asdict(labeller), sort_keys=True, default=str)
    return f"{type(labeller).__module__}.{type(labeller).__qualname__}{settings}"


def label(atoms: ase.Atoms, calc, stress: bool = True) -> ase.Atoms:
    """A copy of ``atoms`` carrying energy, forces and, with ``stress``, the stress of a
    3D-periodic cell (never of a molecule, a slab or a wire)."""
    out = atoms.copy()
    out.calc = calc
    results = {}
    if stress and out.pbc.all():  # first: XTBCalculator computes all three in this one call
        results["stress"] = out.get_stress()
    results["energy"], results["forces"] = out.get_potential_energy(), out.get_forces()
    if not np.isfinite(results["energy"]):
        raise FloatingPointError("non-finite energy")
    out.calc = SinglePointCalculator(out, **results)
    return out


def label_task(job: tuple[Labeller, ase.Atoms, bool]) -> ase.Atoms | dict:
    """One reference calculation (labeller, structure, stress?), in whatever worker runs it,
    with the worker's calculator of that labeller: the labelled copy, or a failure record
    with the error."""
    labeller, atoms, stress = job
    try:
        return label(atoms, worker_calculator(labeller), stress)
    except Exception as err:  # noqa: BLE001 - any calculator failure is recorded
        forget_calculators()  # the next structure gets a new calculator, not a broken one
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
    stress: bool = True,
) -> tuple[list[ase.Atoms], list[dict]]:
    """The labelled copies of ``frames`` that succeeded, and a record ({index, error}) of each
    that failed, computed on ``executor``. ``stress``: the stress of 3D-periodic cells too
    (False: none, e.g. for data no stress loss uses). Results are kept in ``store_dir`` as
    they arrive, so a rerun after a crash computes only what is missing. A labeller that
    cannot work here fails before any calculation. Every frame records its labeller."""
    worker_calculator(labeller)
    jobs = [(labeller, atoms, stress) for atoms in frames]
    # the index too: two identical structures are two tasks with results of their own
    suffix = "" if stress else "-no_stress"
    keys = [f"{k}-{task_key(labeller, a)}{suffix}" for k, a in enumerate(frames)]
    results = run_tasks(label_task, jobs, keys, executor, TaskStore(store_dir), desc=desc)
    labelled, failures = [], []
    for k, result in enumerate(results):
        if isinstance(result, ase.Atoms):
            labelled.append(result)
            continue
        error = result.error if isinstance(result, Lost) else result["error"]
        log.warning("%s: structure %d failed: %s", desc, k, error)
        failures.append({"index": k, "error": error})
    return record_labeller(labelled, labeller), failures


def reference_md(
    atoms: ase.Atoms,
    calc,
    thermostat: tuple[float, float],
    dt: float,
    n_steps: int,
    sampling_rate: int,
    rng: np.random.Generator,
    n_equilibration: int = 0,
    masses: dict[str, float] | None = None,
) -> list[ase.Atoms]:
    """Langevin MD of ``atoms`` with the reference calculator itself (held-out test data).

    ``thermostat`` is (temperature in K, friction in 1/fs); ``dt`` in fs. Velocities start
    Maxwell-Boltzmann at the temperature; ``n_equilibration`` steps run first, unsampled, then
    ``n_steps`` of which every ``sampling_rate``-th keeps a labelled copy. The centre of mass
    stays put through ASE's ``FixCom`` (``fixcm=False``: Langevin's own ``fixcm=True`` is
    deprecated and does not sample NVT exactly); the labels are the calculator's forces,
    without that constraint. ``masses`` (amu per element) replace the standard masses in the
    dynamics only: configurations follow the same Boltzmann distribution whatever the masses,
    and heavier hydrogens allow longer steps; the kept frames carry the standard masses.
    """
    from ase import units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from tqdm.auto import tqdm

    temperature, friction = thermostat
    atoms = atoms.copy()
    standard = atoms.get_masses()
    atoms.set_masses(dynamics_masses(atoms, masses or {}))
    atoms.calc = calc
    atoms.set_constraint([*atoms.constraints, FixCom()])
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    dyn = Langevin(
        atoms,
        dt * units.fs,
        temperature_K=temperature,
        friction=friction / units.fs,
        fixcm=False,
        rng=rng,
    )
    n_kept = n_steps // sampling_rate
    chunks = _chunks(n_equilibration, sampling_rate) + [sampling_rate] * n_kept
    frames = []
    for k, steps in enumerate(tqdm(chunks, desc="reference md")):
        dyn.run(steps)
        if k >= len(chunks) - n_kept:
            frames.append(label(_unconstrained(atoms, standard), calc))
    return frames


def dynamics_masses(atoms: ase.Atoms, masses: dict[str, float]) -> np.ndarray:
    """The masses of ``atoms`` with those of the elements in ``masses`` (amu) replaced; an
    InputError for an unknown element or a non-positive mass."""
    from ase.data import atomic_numbers

    bad = {k: v for k, v in masses.items() if k not in atomic_numbers or not v > 0}
    if bad:
        raise InputError(f"masses: elements with positive masses in amu needed, got {bad}")
    symbols = atoms.get_chemical_symbols()
    return np.array([masses.get(e, m) for e, m in zip(symbols, atoms.get_masses(), strict=True)])


def _chunks(n_steps: int, size: int) -> list[int]:
    """``n_steps`` as runs of ``size`` steps and a shorter last one (a progress bar's ticks)."""
    return [size] * (n_steps // size) + ([n_steps % size] if n_steps % size else [])


def _unconstrained(atoms: ase.Atoms, masses: np.ndarray) -> ase.Atoms:
    out = atoms.copy()
    del out.constraints
    out.set_masses(masses)
    return out
