"""Constant-pressure MD (apax_core/md/barostats.py) on energies that are not ours: jax-md's
Lennard-Jones argon (108-atom fcc crystal, sigma 3.4 A, epsilon 0.0104 eV, smooth cutoff
6.12-6.8 A, below half the 16 A box) and an ideal gas. References: ASE's LJ calculator and its
ideal-gas stress, exact ideal-gas isobaric statistics, jax-md's own Cartesian MTK and the NVT
pressure of the same crystal. (The engine's NPT runs: test_npt.py.)"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.lj import LennardJones
from jax_md import dataclasses, energy, simulate, space
from scipy.stats import linregress

from apax_core.config.md import (
    NPTMartynaTobiasKlein,
    NPTStochasticCellRescaling,
    NVTLangevin,
    NVTNoseHoover,
    PiecewisePressure,
    ThermostatChain,
)
from apax_core.md import barostats as b
from apax_core.md.integrators import integrator
from apax_core.md.neighbours import standard_frame
from apax_core.md.schedules import pressure_fn
from apax_core.precision import x64

SIGMA, EPSILON, MASS = 3.4, 0.0104, 39.95
R_ONSET, R_CUTOFF = 1.8, 2.0
"""Smooth cutoff of jax-md's lennard_jones_pair (and ASE's smooth LJ), in units of sigma."""
A0, T, DT = 5.34, 50.0, 10.0
"""fcc lattice constant (A), temperature (K) and time step (fs) of the argon runs."""
KT = units.kB * T


@pytest.fixture(autouse=True)
def _x64():
    with x64():
        yield


def argon(a: float = A0):
    """(atoms, box (3, 3) lattice vectors as columns, fractional positions) of 108 atoms."""
    atoms = bulk("Ar", "fcc", a=a, cubic=True).repeat(3)
    return atoms, jnp.asarray(atoms.cell.array.T), jnp.asarray(atoms.get_scaled_positions())


def lj_pair(displacement):
    """jax-md's Lennard-Jones pair energy over ``displacement``, parameters as float64 arrays
    (jax-md casts Python floats to float32)."""
    f64 = jnp.float64
    return energy.lennard_jones_pair(
        displacement,
        sigma=f64(SIGMA),
        epsilon=f64(EPSILON),
        r_onset=f64(R_ONSET),
        r_cutoff=f64(R_CUTOFF),
    )


def lj_energy():
    """``energy(R, box=box, **unused)`` of fractional positions and a box, in eV."""
    pair = lj_pair(space.periodic_general(jnp.eye(3), fractional_coordinates=True)[0])

    def lj(R, box, **unused):
        return pair(R, box=box)

    return lj


def fractional_shift(box):
    """The engine's wrapped fractional shift of a periodic box (3, 3)."""
    return space.periodic_general(box, fractional_coordinates=True)[1]


def scr(thermostat, cell: str, tau_p: float, compressibility: float):
    """SCR settings: ``tau_p`` in fs, ``compressibility`` in 1/bar."""
    return NPTStochasticCellRescaling(
        thermostat=thermostat, cell=cell, tau_p=tau_p, compressibility=compressibility
    )


MTK = NPTMartynaTobiasKlein(thermostat=ThermostatChain(tau=100), tau_p=500.0)


def fixed_box(lj, box):
    """The NVT engine's energy ``energy(R, **unused)`` at a fixed ``box``."""
    return lambda R, **unused: lj(R, box=box)


def run(integ, state, n: int, pressure, record):
    """(final state, stacked record(state) after each of ``n`` steps) at target ``pressure``
    (eV/A^3) and temperature T, jitted."""

    def body(s, _):
        s = integ.step(s, KT, pressure)
        return s, record(s)

    return jax.jit(lambda s: jax.lax.scan(body, s, None, length=n))(state)


def block_error(x: np.ndarray, n_blocks: int = 20) -> float:
    """Standard error of the mean of a correlated series from ``n_blocks`` block means."""
    blocks = x[: len(x) - len(x) % n_blocks].reshape(n_blocks, -1).mean(axis=1)
    return float(blocks.std(ddof=1) / np.sqrt(n_blocks))


def scalar_pressure_of(state):
    return b.scalar_pressure(b.pressure_tensor(state.momentum, state.mass, state.stress, state.box))


# ----------------------------------------------------------------------------- pressure


def test_pressure_tensor_equals_ase_lj_with_ideal_gas_term():
    """A rattled, sheared crystal with random momenta: energy, forces and the full pressure
    tensor (strain-derivative stress plus kinetic term) against ASE's LJ calculator and
    ``get_stress(include_ideal_gas=True)``."""
    rng = np.random.default_rng(0)
    atoms = argon()[0]
    atoms.rattle(0.1, seed=1)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.01 * rng.normal(size=(3, 3))), True)
    atoms = standard_frame(atoms)
    atoms.set_momenta(rng.normal(size=(len(atoms), 3)) * np.sqrt(MASS * 0.005))
    atoms.calc = LennardJones(
        sigma=SIGMA, epsilon=EPSILON, rc=R_CUTOFF * SIGMA, ro=R_ONSET * SIGMA, smooth=True
    )
    box, R = jnp.asarray(atoms.cell.array.T), jnp.asarray(atoms.get_scaled_positions())
    e, forces, stress = b.energy_forces_stress(lj_energy())(R, box)
    momenta, masses = jnp.asarray(atoms.get_momenta()), jnp.asarray(atoms.get_masses())
    pressure = np.asarray(b.pressure_tensor(momenta, masses, stress, box))
    reference = -atoms.get_stress(include_ideal_gas=True, voigt=False)
    assert abs(float(e) - atoms.get_potential_energy()) < 1e-10
    np.testing.assert_allclose(forces, atoms.get_forces(), rtol=0, atol=1e-10)
    assert np.abs(pressure - reference).max() < 1e-8 * np.abs(reference).max()
    assert np.allclose(pressure, pressure.T, rtol=0, atol=1e-14)
    assert b.scalar_pressure(pressure) == pytest.approx(np.trace(reference) / 3, rel=1e-8)


def test_units_and_pressure_schedule():
    assert float(b.bar_to_eva3(1.0)) == units.bar
    assert float(b.eva3_to_bar(b.bar_to_eva3(250.0))) == pytest.approx(250.0, rel=1e-14)
    p_of = pressure_fn(PiecewisePressure(times=[0.0, 1000.0], pressures=[1.0, 1001.0]))
    assert [float(p_of(t)) for t in (-5.0, 0.0, 250.0, 1000.0, 9e9)] == [1, 1, 251, 1001, 1001]
    assert float(pressure_fn(PiecewisePressure(times=[0.0], pressures=[3.0]))(123.0)) == 3.0


def test_volume_factor_is_the_stop_value_of_a_volume_check():
    """max(V/V0, V0/V): a check with factor 2 fires outside [V0/2, 2 V0]; NaN cells fire."""
    box = 10.0 * jnp.eye(3)
    factors = [float(b.volume_factor(box * s, 1000.0)) for s in (1.0, 2 ** (1 / 3), 0.5)]
    assert factors == pytest.approx([1.0, 2.0, 8.0])
    assert float(b.volume_factor(box * 0.9, 1000.0)) == pytest.approx(1 / 0.729)
    assert float(b.volume_factor(jnp.full((3, 3), jnp.nan), 1000.0)) == np.inf


# --------------------------------------------------------------------------------- MTK


def test_mtk_equals_jax_md_cartesian_npt():
    """The fractional-coordinate wrapper runs jax-md's own NPT: 100 steps of the native
    Cartesian ``npt_nose_hoover`` (real-space periodic shift and LJ) give the same cell,
    positions and momenta (to 1e-7 after 100 steps; the chaos of a crystal grows rounding
    differences of the coordinate change to ~3e-9)."""
    atoms, box, R = argon()
    mass = jnp.asarray(atoms.get_masses())
    integ = b.mtk(lj_energy(), fractional_shift(box), DT, KT, MTK)
    state = integ.init(jax.random.PRNGKey(0), R, KT, mass, box=box)
    state, _ = run(integ, state, 100, 0.0, lambda s: 0.0)
    displacement, shift = space.periodic_general(box, fractional_coordinates=False)
    kwargs = dict(chain_length=3, chain_steps=2, sy_steps=3)
    init, apply = simulate.npt_nose_hoover(
        lj_pair(displacement),
        shift,
        DT * units.fs,
        0.0,
        KT,
        barostat_kwargs=dict(kwargs, tau=500 * units.fs),
        thermostat_kwargs=dict(kwargs, tau=100 * DT * units.fs),
    )
    native = init(jax.random.PRNGKey(0), R @ box.T, box, mass=mass, kT=KT)
    chain = dataclasses.replace(native.thermostat, degrees_of_freedom=3 * len(atoms) - 3)
    native = jax.jit(lambda s: jax.lax.fori_loop(0, 100, lambda i, s: apply(s, kT=KT), s))(
        native.set(thermostat=chain)
    )
    np.testing.assert_allclose(state.box, simulate.npt_box(native), rtol=1e-9)
    d = np.array(state.position @ state.box.T - native.position)
    cell = np.asarray(state.box).T
    d -= np.round(d @ np.linalg.inv(cell)) @ cell
    assert np.abs(d).max() < 1e-7  # 3e-9 A: rounding grown by the chaos of 100 steps
    np.testing.assert_allclose(state.momentum, native.momentum, rtol=0, atol=1e-7)


def test_mtk_conserved_quantity_drifts_no_more_than_nvt_nose_hoover():
    """Same crystal, same dt (10 fs), same chain, 50 ps each: the slope of MTK's conserved
    quantity (fitted over block means) is within NVT Nose-Hoover's plus three standard errors,
    and below 1e-5 of |H| per ps."""
    atoms, box, R = argon()
    mass, n = jnp.asarray(atoms.get_masses()), 5000
    lj, chain = lj_energy(), MTK.thermostat
    mtk = b.mtk(lj, fractional_shift(box), DT, KT, MTK)
    state = mtk.init(jax.random.PRNGKey(0), R, KT, mass, box=box)
    _, h_mtk = run(mtk, state, n, 0.0, lambda s: b.mtk_invariant(lj, s, KT, 0.0))
    shift = fractional_shift(box)
    nvt_energy = fixed_box(lj, box)
    nvt = integrator(NVTNoseHoover(thermostat=chain), nvt_energy, shift, DT, KT)

    def body(s, _):
        s = nvt.step(s, KT)
        kinetic = simulate.kinetic_energy(s)
        return s, nvt_energy(s.position) + kinetic + b.chain_energy(s.chain, KT)

    state = nvt.init(jax.random.PRNGKey(0), R, KT, mass)
    _, h_nvt = jax.jit(lambda s: jax.lax.scan(body, s, None, length=n))(state)
    fits = [_drift(np.asarray(h)) for h in (h_mtk, h_nvt)]
    (mtk_slope, mtk_err, h0), (nvt_slope, _, _) = fits
    assert abs(mtk_slope) <= abs(nvt_slope) + 3 * mtk_err
    assert abs(mtk_slope) < 1e-5 * abs(h0)


def _drift(h: np.ndarray) -> tuple[float, float, float]:
    """(slope in eV/ps, its standard error, H at the start) of 10 block means of ``h``."""
    blocks = h.reshape(10, -1).mean(axis=1)
    t_ps = (np.arange(10) + 0.5) * len(h) / 10 * DT / 1000
    fit = linregress(t_ps, blocks)
    return float(fit.slope), float(fit.stderr), float(h[0])


# ------------------------------------------------------------------ stochastic cell rescaling


def shape_spring(R, box, **unused):
    """Energy (eV) of the cell shape alone: 5 eV * |E|^2 / 2 of the Green-Lagrange strain of the
    volume-normalised metric, so it confines the shape and never the volume (R enters with
    weight zero: an ideal gas)."""
    metric = box.T @ box
    strain = (metric / jnp.linalg.det(metric) ** (1 / 3) - jnp.eye(3)) / 2
    return 0.0 * jnp.sum(R) + 2.5 * jnp.sum(strain**2)


@pytest.mark.parametrize("cell", ["isotropic", "orthorhombic", "full"])
@pytest.mark.parametrize(
    "thermostat", [NVTLangevin(friction=0.05), NVTNoseHoover(thermostat=ThermostatChain(tau=20))]
)
def test_ideal_gas_samples_the_isobaric_ensemble(thermostat, cell):
    """32 non-interacting atoms in a cell whose shape (not volume) is held by a spring:
    V^N exp(-P V / kT) dV gives <V> = (N + 1) kT / P and std(V) = sqrt(N + 1) kT / P for every
    cell mode (the cell measure factorises into volume and shape). The kinetic pressure alone
    drives the volume, so this checks the noise amplitude, the Ito drift of every mode and the
    kT/V term of the Nose-Hoover variant (without it <V> would be N kT / P, 3 % or ~5
    standard errors lower)."""
    n_atoms, volume = 32, 1000.0
    pressure = (n_atoms + 1) * KT / volume
    beta = 1.0 / float(b.eva3_to_bar(pressure))
    R = jnp.asarray(np.random.default_rng(0).uniform(size=(n_atoms, 3)))
    box = 10.0 * jnp.eye(3)
    integ = b.scr(shape_spring, fractional_shift(box), 5.0, scr(thermostat, cell, 100.0, beta))
    state = integ.init(jax.random.PRNGKey(1), R, KT, jnp.full(n_atoms, MASS), box=box)
    _, V = run(integ, state, 30000, pressure, lambda s: b.volume(s.box))
    V = np.asarray(V)[2000:]
    assert abs(V.mean() - volume) < 3 * block_error(V)
    assert V.std() == pytest.approx(np.sqrt(n_atoms + 1) * KT / pressure, rel=0.1)


@pytest.fixture(scope="module")
def nvt_pressure():
    """(V0 A^3, mean pressure eV/A^3, its standard error) of the crystal at a = 5.34 A under
    Langevin NVT: 5000 steps of 10 fs, the pressure every 5th step, the first 10 % dropped."""
    with x64():
        atoms, box, R = argon()
        lj = lj_energy()
        efs = b.energy_forces_stress(lj)
        shift = fractional_shift(box)
        nvt = integrator(NVTLangevin(friction=0.01), fixed_box(lj, box), shift, DT, KT)

        def body(s, _):
            s = jax.lax.fori_loop(0, 5, lambda i, s: nvt.step(s, KT), s)
            _, _, stress = efs(s.position, box)
            return s, b.scalar_pressure(b.pressure_tensor(s.momentum, s.mass, stress, box))

        state = nvt.init(jax.random.PRNGKey(7), R, KT, jnp.asarray(atoms.get_masses()))
        _, P = jax.jit(lambda s: jax.lax.scan(body, s, None, length=1000))(state)
        P = np.asarray(P)[100:]
        return float(b.volume(box)), float(P.mean()), block_error(P)


NPT_CASES = {
    "scr-isotropic-langevin": lambda e, shift: b.scr(
        e, shift, DT, scr(NVTLangevin(friction=0.01), "isotropic", 200.0, 7e-5)
    ),
    "scr-isotropic-nose-hoover": lambda e, shift: b.scr(
        e, shift, DT, scr(NVTNoseHoover(), "isotropic", 200.0, 7e-5)
    ),
    "mtk": lambda e, shift: b.mtk(e, shift, DT, KT, MTK),
}


@pytest.mark.parametrize("case", sorted(NPT_CASES))
def test_npt_at_the_nvt_pressure_keeps_the_nvt_volume(case, nvt_pressure):
    """NPT at the mean NVT pressure of volume V0 holds <V> = V0 within three combined standard
    errors (that of <V>, and that of the NVT pressure mapped to a volume through the
    compressibility the volume fluctuations give: dV = dP var(V) / kT); std(V) matches the
    compressibility of the NVT pressures at two volumes (~1.1 % of V). Isotropic cells only:
    the two (orthorhombic) or five (full) shape modes add their own entropic pressure
    (measured +7 and +14 A^3, 0.17 % and 0.33 %, an O(1/N) ensemble difference)."""
    V0, P0, P_err = nvt_pressure
    atoms, box, R = argon()
    integ = NPT_CASES[case](lj_energy(), fractional_shift(box))
    state = integ.init(jax.random.PRNGKey(0), R, KT, jnp.asarray(atoms.get_masses()), box=box)
    _, V = run(integ, state, 6000, P0, lambda s: b.volume(s.box))
    V = np.asarray(V)[600:]
    error = np.hypot(block_error(V, 30), P_err * V.var() / KT)
    assert abs(V.mean() - V0) < 3 * error
    assert V.std() / V.mean() == pytest.approx(0.011, rel=0.25)


@pytest.mark.parametrize("cell", ["full", "orthorhombic", "isotropic"])
def test_strained_cell_relaxes_to_cubic_only_if_its_shape_may_change(cell):
    """The crystal stretched by 3 % along x, at the NVT pressure: with a full or orthorhombic
    cell L_x / sqrt(L_y L_z) relaxes to 1 (mean over the last 20 ps within 1.5 %, shape
    fluctuations are ~1 %), the box stays upper triangular; the isotropic cell keeps 1.03."""
    atoms, box, R = argon()
    box = jnp.diag(jnp.asarray([1.03, 1.0, 1.0])) @ box
    coupling = scr(NVTLangevin(friction=0.01), cell, 200.0, 7e-5)
    integ = b.scr(lj_energy(), fractional_shift(box), DT, coupling)
    state = integ.init(jax.random.PRNGKey(2), R, KT, jnp.asarray(atoms.get_masses()), box=box)
    _, boxes = run(integ, state, 4000, b.bar_to_eva3(208.0), lambda s: s.box)
    boxes = np.asarray(boxes)
    L = np.diagonal(boxes, axis1=1, axis2=2)
    ratio = L[:, 0] / np.sqrt(L[:, 1] * L[:, 2])
    assert np.all(np.tril(boxes, -1) == 0.0)
    if cell == "isotropic":
        np.testing.assert_allclose(ratio, 1.03, rtol=1e-12)
    else:
        assert abs(ratio[2000:].mean() - 1.0) < 0.015


# ------------------------------------------------------------------------------- restart

RESTART_CASES = {
    "scr-full-langevin": lambda e, shift: b.scr(
        e, shift, DT, scr(NVTLangevin(friction=0.01), "full", 200.0, 7e-5)
    ),
    "scr-orthorhombic-nose-hoover": lambda e, shift: b.scr(
        e, shift, DT, scr(NVTNoseHoover(), "orthorhombic", 200.0, 7e-5)
    ),
    "mtk": lambda e, shift: b.mtk(e, shift, DT, KT, MTK),
}


@pytest.mark.parametrize("case", sorted(RESTART_CASES))
def test_run_split_by_a_checkpoint_equals_one_run_bitwise(case, tmp_path):
    """Two chunks of 25 steps in one go, or with the state written to .npz leaves between
    them and read back into the tree of a fresh init (as the engine's checkpoint does)."""
    atoms, box, R = argon()
    integ = RESTART_CASES[case](lj_energy(), fractional_shift(box))
    mass = jnp.asarray(atoms.get_masses())
    key, target = jax.random.PRNGKey(5), b.bar_to_eva3(100.0)
    chunk = jax.jit(lambda s: jax.lax.fori_loop(0, 25, lambda i, s: integ.step(s, KT, target), s))
    first = chunk(integ.init(key, R, KT, mass, box=box))
    np.savez(tmp_path / "state.npz", *[np.asarray(x) for x in jax.tree.leaves(first)])
    with np.load(tmp_path / "state.npz") as data:
        leaves = [jnp.asarray(data[f"arr_{k}"]) for k in range(len(data.files))]
    template = jax.eval_shape(lambda: integ.init(key, R, KT, mass, box=box))
    restored = jax.tree.unflatten(jax.tree.structure(template), leaves)
    one_run, split_run = jax.tree.leaves(chunk(first)), jax.tree.leaves(chunk(restored))
    for one, split in zip(one_run, split_run, strict=True):
        assert one.dtype == split.dtype
        np.testing.assert_array_equal(np.asarray(one), np.asarray(split))
    assert not np.array_equal(first.position, chunk(first).position)
