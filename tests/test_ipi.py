"""i-PI drives MD and PIMD through our client: i-PI's energies are our calculator's."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.socketio import IPIProtocol
from ase.io import read, write
from ase.units import Bohr, Ha
from conftest import make_model, save_model_dir

from apax_core.calculator import ApaxCalculator
from apax_core.cli import main
from apax_core.errors import InputError
from apax_core.ipi import (
    ApaxProtocol,
    client_atoms,
    extras_bytes,
    ipi_executable,
    run_ipi,
    socket_of,
)
from apax_core.model_dir import load_model

ROOT = Path(__file__).resolve().parent.parent
RTOL = 1e-8
"""i-PI prints 9 significant digits and writes positions to 1e-8 A."""

INPUT = """<simulation verbosity='low' safe_stride='1000'>
  <output prefix='simulation'>
    <properties stride='1' filename='out'>
      [ step, temperature{{kelvin}}, potential, bead_potentials, virial_md ]
    </properties>
    <trajectory filename='pos' stride='1' format='ase'> positions </trajectory>
    <trajectory filename='extras' stride='1' extra_type='energy_uncertainty'> extras </trajectory>
  </output>
  <total_steps>{steps}</total_steps>
  <prng><seed>31415</seed></prng>
  <ffsocket name='apax' mode='unix'>
    <address>{address}</address>
    <exit_on_disconnect>true</exit_on_disconnect>
  </ffsocket>
  <system>
    <initialize nbeads='{nbeads}'>
      <file mode='ase'>init.extxyz</file>
      <velocities mode='thermal' units='kelvin'>300</velocities>
    </initialize>
    <forces><force forcefield='apax'/></forces>
    <motion mode='dynamics'>
      <dynamics mode='nvt'>
        <timestep units='femtosecond'>1.0</timestep>
        <thermostat mode='{thermostat}'><tau units='femtosecond'>50</tau></thermostat>
      </dynamics>
    </motion>
    <ensemble><temperature units='kelvin'>300</temperature></ensemble>
  </system>
</simulation>
"""


@pytest.fixture
def ipi():
    """The tests that run i-PI need the [ipi] extra; the others run without it."""
    pytest.importorskip("ipi", reason="the [ipi] extra (i-PI) is not installed")


@pytest.fixture(scope="module")
def model():
    """One tiny shallow ensemble for Cu and water (one initialisation, one architecture)."""
    return make_model(elements=(1, 8, 29), ensemble={"kind": "shallow", "n_members": 4})


@pytest.fixture(scope="module")
def model_dir(model, tmp_path_factory) -> Path:
    return save_model_dir(tmp_path_factory.mktemp("ipi_model"), model)


def cu_input(directory: Path, steps: int, nbeads: int, thermostat: str = "svr") -> str:
    """i-PI's input file, on a unique unix socket ``apax<pid>_<nbeads>``, for a rattled 2x2x2
    Cu cell (``init.extxyz``), both written into ``directory``."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.02, seed=1)
    write(directory / "init.extxyz", atoms)
    address = f"apax{os.getpid()}_{nbeads}"
    xml = INPUT.format(steps=steps, address=address, nbeads=nbeads, thermostat=thermostat)
    (directory / "input.xml").write_text(xml)
    return directory / "input.xml"


def hartree(calc, frames) -> np.ndarray:
    """Our calculator's energies in Hartree, i-PI's unit on the socket. (i-PI prints its
    potentials in its atomic units here: its electronvolt differs from ASE's by 1e-7.)"""
    return np.array([calc.get_potential_energy(a) for a in frames]) / Ha


def test_nvt_through_the_command_line_reports_our_energies(ipi, model_dir, tmp_path, capsys):
    steps = 300
    address, _ = socket_of(cu_input(tmp_path, steps, nbeads=1))
    with open(tmp_path / "ipi.log", "w") as log:
        proc = subprocess.Popen(
            [ipi_executable(), "input.xml"], cwd=tmp_path, stdout=log, stderr=log
        )
        try:
            argv = ["ipi-client", str(model_dir), "--structure", str(tmp_path / "init.extxyz")]
            assert main([*argv, "--address", address, "--wait", "60"]) == 0
            assert proc.wait(timeout=60) == 0, (tmp_path / "ipi.log").read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    assert f"after {steps + 1} force evaluations" in capsys.readouterr().out
    props = np.loadtxt(tmp_path / "simulation.out", ndmin=2)
    frames = read(tmp_path / "simulation.pos_0.extxyz", ":")
    assert len(props) == len(frames) == steps + 1  # step 0 and every step after
    assert np.all(props[:, 1] < 1000)  # a thermostatted run, not an explosion
    calc = ApaxCalculator(load_model(model_dir), force_uncertainty=False)
    ours = hartree(calc, frames)
    np.testing.assert_allclose(props[:, 2], ours, rtol=RTOL)
    assert np.ptp(ours) > 1e-5  # the atoms moved: the comparison covers many geometries
    # i-PI's virial / V (xx yy zz xy xz yz; Ha/Bohr^3) is minus ASE's stress (xx yy zz yz xz xy)
    stress = np.array([calc.get_stress(a)[[0, 1, 2, 5, 4, 3]] for a in frames[::30]])
    virial = props[::30, 4:10] * Ha / Bohr**3
    np.testing.assert_allclose(virial, -stress, rtol=1e-6, atol=1e-6 * np.abs(stress).max())


def test_pimd_with_four_beads_reports_our_energies_and_uncertainties(ipi, model, tmp_path):
    steps, nbeads = 20, 4
    xml = cu_input(tmp_path, steps, nbeads=nbeads, thermostat="pile_g")
    n = run_ipi(client_atoms(model, tmp_path / "init.extxyz"), xml)
    assert n == nbeads * (steps + 1)
    props = np.loadtxt(tmp_path / "simulation.out", ndmin=2)
    assert props.shape == (steps + 1, 3 + nbeads + 6)
    np.testing.assert_allclose(props[:, 2], props[:, 3 : 3 + nbeads].mean(1), rtol=RTOL)
    calc = ApaxCalculator(model, force_uncertainty=False)
    for b in range(nbeads):
        frames = read(tmp_path / f"simulation.pos_{b}.extxyz", ":")
        np.testing.assert_allclose(props[:, 3 + b], hartree(calc, frames), rtol=RTOL)
        sigma = np.loadtxt(tmp_path / f"simulation.extras_{b}", comments="#")
        assert sigma[-1] == pytest.approx(calc.results["energy_uncertainty"], rel=1e-6)


def test_the_water_pimd_example_runs(ipi, model_dir, tmp_path, capsys):
    """example_project/ipi as shipped (8 beads), cut to 2 steps with every output written,
    i-PI started by the client (``--input``)."""
    example = ROOT / "example_project" / "ipi"
    shutil.copy(example / "water.extxyz", tmp_path)
    xml = (example / "input.xml").read_text()
    for old in ("<total_steps>20000</total_steps>", "<address>apax-water</address>"):
        assert old in xml
    xml = xml.replace("<total_steps>20000</total_steps>", "<total_steps>2</total_steps>")
    xml = xml.replace("apax-water", f"apax{os.getpid()}_water")
    (tmp_path / "input.xml").write_text(re.sub(r"stride='\d+'", "stride='1'", xml))
    argv = ["ipi-client", str(model_dir), "--structure", str(tmp_path / "water.extxyz")]
    assert main([*argv, "--input", str(tmp_path / "input.xml")]) == 0
    assert f"after {8 * 3} force evaluations" in capsys.readouterr().out
    assert np.loadtxt(tmp_path / "water_pimd.out", ndmin=2).shape == (3, 7)
    assert len(read(tmp_path / "water_pimd.centroid.extxyz", ":")) == 3
    assert len(np.loadtxt(tmp_path / "water_pimd.uncertainty_7", comments="#")) == 3


def test_an_ipi_failure_is_one_line_from_its_log(ipi, model, tmp_path):
    xml = cu_input(tmp_path, 2, nbeads=1, thermostat="no_such_thermostat")
    with pytest.raises(InputError, match="input.xml: i-PI failed .* no_such_thermostat is not"):
        run_ipi(client_atoms(model, tmp_path / "init.extxyz"), xml, wait=60)


def test_extras_are_json_or_one_zero_byte():
    assert extras_bytes({"energy": 1.0}).tobytes() == b"\x00"
    assert extras_bytes({"energy_uncertainty": 0.5}).tobytes() == b'{"energy_uncertainty": 0.5}'


def test_socket_of_reads_the_ffsocket(tmp_path):
    assert socket_of(cu_input(tmp_path, 1, nbeads=1)) == (f"apax{os.getpid()}_1", None)
    inet = "<simulation><ffsocket mode='inet'><address>host</address><port>3141</port></ffsocket>"
    (tmp_path / "inet.xml").write_text(inet + "</simulation>")
    assert socket_of(tmp_path / "inet.xml") == ("host", 3141)
    (tmp_path / "none.xml").write_text("<simulation/>")
    with pytest.raises(InputError, match="none.xml: no <ffsocket>"):
        socket_of(tmp_path / "none.xml")


def test_bad_model_dir_fails_before_connecting(tmp_path, capsys):
    write(tmp_path / "s.extxyz", bulk("Cu", cubic=True))
    argv = ["ipi-client", str(tmp_path / "nope"), "--structure", str(tmp_path / "s.extxyz")]
    assert main([*argv, "--address", "never", "--wait", "0"]) == 2
    assert "not a model directory" in capsys.readouterr().err
    assert main([*argv, "--address", "a", "--input", "input.xml"]) == 2
    assert main(argv) == 2
    assert "give --address (i-PI runs elsewhere) or --input" in capsys.readouterr().err


def test_unknown_element_and_absent_server_are_one_line_errors(model_dir, tmp_path, capsys):
    write(tmp_path / "ag.extxyz", bulk("Ag", cubic=True))
    argv = ["ipi-client", str(model_dir), "--address", f"absent{os.getpid()}", "--wait", "0"]
    assert main([*argv, "--structure", str(tmp_path / "ag.extxyz")]) == 2
    assert "ag.extxyz" in (err := capsys.readouterr().err) and "Ag" in err
    write(tmp_path / "cu.extxyz", bulk("Cu", cubic=True).repeat(2))
    assert main([*argv, "--structure", str(tmp_path / "cu.extxyz")]) == 2
    assert "--address: no i-PI server" in capsys.readouterr().err


def test_the_protocol_checks_atoms_and_sends_uncertainty_extras(model, tmp_path):
    """Both ends of the i-PI protocol in one process (no i-PI needed): ASE's server side
    sends positions, our side answers with energy, forces and the energy uncertainty."""
    write(tmp_path / "cu.extxyz", bulk("Cu", cubic=True).repeat(2))
    atoms = client_atoms(model, tmp_path / "cu.extxyz")
    cell = atoms.cell.array
    server_end, client_end = socket.socketpair()
    with server_end, client_end:
        server, client = IPIProtocol(server_end), ApaxProtocol(client_end, atoms)
        server.sendposdata(cell, np.linalg.inv(cell), atoms.positions[:5])
        assert client.recvmsg() == "POSDATA"
        with pytest.raises(InputError, match="--structure: 32 atoms, but i-PI sent 5"):
            client.recvposdata()
        server.sendposdata(cell, np.linalg.inv(cell), atoms.positions + 0.01)
        assert client.recvmsg() == "POSDATA"
        atoms.positions[:] = client.recvposdata()[2]
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        client.sendforce(energy, forces, np.zeros((3, 3)))
        e, f, _, extras = server.sendrecv_force()
    assert e == pytest.approx(energy, rel=1e-12)
    np.testing.assert_allclose(f, forces, atol=1e-12)
    sigma = atoms.calc.results["energy_uncertainty"]
    assert json.loads(extras.tobytes()) == {"energy_uncertainty": pytest.approx(sigma)}
