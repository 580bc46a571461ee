"""i-PI client: our ASE calculator behind ASE's socket client (extra ``[ipi]`` for i-PI itself).

i-PI (the server) integrates the dynamics, path integrals included; this client evaluates the
model on the positions and cell it sends and answers energy, forces and virial (ASE converts
the atomic units of the protocol). The protocol carries no element symbols, so the client's
atoms come from a structure file with the same atoms in the same order as i-PI's input.
Ensembles also send ``energy_uncertainty`` (eV) as i-PI's JSON extras (``extras`` output).
The client compiles the model before it connects and returns when i-PI sends EXIT or closes;
:func:`run_ipi` also starts i-PI on an input file and waits for it.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree

import ase
import numpy as np
from ase.calculators.socketio import IPIProtocol, SocketClient, actualunixsocketname

from apax_core.calculator import ApaxCalculator
from apax_core.data import DataError, read_frames, species_index
from apax_core.errors import InputError
from apax_core.model_dir import Model

logger = logging.getLogger(__name__)


def client_atoms(model: Model, structure: str | Path, index: int = -1) -> ase.Atoms:
    """Frame ``index`` of ``structure`` with an :class:`ApaxCalculator` of ``model``, evaluated
    once (the compilation happens here, before i-PI waits on us). Unknown elements or a missing
    file raise InputError naming the file."""
    frames = read_frames(structure)
    if not -len(frames) <= index < len(frames):
        raise DataError(f"{structure}: no structure {index} ({len(frames)} structures)")
    atoms = frames[index].copy()
    species_index(atoms.numbers, model.stats.elements, source=str(structure))
    atoms.calc = ApaxCalculator(model, force_uncertainty=False)
    atoms.get_potential_energy()
    return atoms


class ApaxProtocol(IPIProtocol):
    """ASE's i-PI protocol that checks the number of atoms i-PI sends and sends the calculator's
    energy uncertainty as JSON extras."""

    def __init__(self, sock, atoms: ase.Atoms, txt=None) -> None:
        super().__init__(sock, txt=txt)
        self.atoms = atoms

    def recvposdata(self):
        cell, icell, positions = super().recvposdata()
        if len(positions) != len(self.atoms):
            raise InputError(
                f"--structure: {len(self.atoms)} atoms, but i-PI sent {len(positions)}: give "
                "the client i-PI's initial structure"
            )
        return cell, icell, positions

    def sendforce(self, energy, forces, virial, morebytes=None) -> None:
        super().sendforce(energy, forces, virial, extras_bytes(self.atoms.calc.results))


def extras_bytes(results: dict) -> np.ndarray:
    """i-PI's extras: a JSON object of the uncertainties in ``results``, else one zero byte
    (ASE's default: an empty message reads like a closed socket)."""
    extras = {k: results[k] for k in ("energy_uncertainty",) if k in results}
    if not extras:
        return np.zeros(1, dtype=np.byte)
    return np.frombuffer(json.dumps(extras).encode(), dtype=np.byte)


def connect(
    address: str, port: int | None = None, wait: float = 60.0, alive=lambda: True
) -> SocketClient:
    """ASE's client connected to i-PI: a unix socket ``/tmp/ipi_<address>`` (i-PI's ``mode='unix'``)
    or, with ``port``, the inet socket ``address:port``. Retries while ``alive()`` (i-PI takes
    seconds to open its socket) for up to ``wait`` seconds, then raises InputError."""
    where = f"{address}:{port}" if port else actualunixsocketname(address)
    deadline = time.monotonic() + wait
    while True:
        try:
            if port:
                return SocketClient(host=address, port=port)
            return SocketClient(unixsocket=address)
        except (FileNotFoundError, ConnectionRefusedError) as err:
            if not alive():
                raise InputError(f"i-PI ended before opening {where}") from err
            if time.monotonic() > deadline:
                raise InputError(f"--address: no i-PI server at {where} after {wait:g} s") from err
            time.sleep(0.2)


def run_client(
    atoms: ase.Atoms,
    address: str,
    port: int | None = None,
    wait: float = 60.0,
    log=None,
    alive=lambda: True,
) -> int:
    """Serve i-PI's force requests for ``atoms`` (positions and cell come from i-PI) until it
    sends EXIT or closes the socket; the number of evaluations. ``log``: a text file for ASE's
    protocol log; ``wait`` and ``alive``: see :func:`connect`."""
    client = connect(address, port, wait, alive)
    client.protocol = ApaxProtocol(client.protocol.socket, atoms, txt=log)
    client.log = client.protocol.log
    where = f"{address}:{port}" if port else actualunixsocketname(address)
    logger.info("connected to i-PI at %s (%d atoms)", where, len(atoms))
    n = 0
    for _ in client.irun(atoms, use_stress=bool(atoms.pbc.any())):
        n += 1
    logger.info("i-PI ended the run after %d evaluations", n)
    return n


def socket_of(input_xml: str | Path) -> tuple[str, int | None]:
    """(address, port or None for a unix socket) of the ffsocket in an i-PI input file."""
    try:
        sock = ElementTree.parse(input_xml).getroot().find(".//ffsocket")
    except (OSError, ElementTree.ParseError) as err:
        raise InputError(f"{input_xml}: cannot read the i-PI input ({err})") from err
    if sock is None or sock.findtext("address") is None:
        raise InputError(f"{input_xml}: no <ffsocket> with an <address>")
    unix = sock.get("mode", "inet").strip() == "unix"
    return sock.findtext("address").strip(), None if unix else int(sock.findtext("port", "65535"))


def ipi_executable() -> str:
    """i-PI's ``i-pi`` script: beside this interpreter (a virtual environment) or on PATH."""
    exe = Path(sys.executable).with_name("i-pi")
    found = str(exe) if exe.exists() else shutil.which("i-pi")
    if found is None:
        raise InputError("i-pi: not found (install the [ipi] extra)")
    return found


def run_ipi(atoms: ase.Atoms, input_xml: str | Path, wait: float = 60.0, timeout=60.0) -> int:
    """i-PI run on ``input_xml`` (in its folder, output in ``ipi.log`` there) with this process
    as its client (``atoms``: :func:`client_atoms`); the number of evaluations. If i-PI fails
    (mostly its input), InputError with the log's last line; i-PI is killed if it outlives
    the client by ``timeout`` seconds (subprocess.TimeoutExpired)."""
    input_xml = Path(input_xml).resolve()
    address, port = socket_of(input_xml)
    exe = ipi_executable()
    log_path = input_xml.parent / "ipi.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([exe, input_xml.name], cwd=input_xml.parent, stdout=log, stderr=log)
        try:
            n = run_client(atoms, address, port, wait, alive=lambda: proc.poll() is None)
            proc.wait(timeout=timeout)
        except InputError:
            if proc.poll() is None or proc.returncode == 0:
                raise  # the client's input, not i-PI's
            n = 0  # i-PI failed before it opened its socket: its log says why
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if proc.returncode != 0:
        last = ([line for line in log_path.read_text().splitlines() if line.strip()] or [""])[-1]
        raise InputError(f"{input_xml}: i-PI failed (exit {proc.returncode}): {last.strip()}")
    return n
