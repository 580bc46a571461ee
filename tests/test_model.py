"""Physics of the energy model: symmetries, derivatives, padding, periodic images, smoothness."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from conftest import make_model
from scipy.spatial.transform import Rotation

from apax_core.batching import map_structures
from apax_core.config import PadToMax
from apax_core.data import from_atoms
from apax_core.model import descriptor_size
from apax_core.predictor import compiled


def cuag_cell(seed=0, repeat=(2, 1, 1)):
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat(repeat)
    atoms.numbers[::3] = 47
    atoms.rattle(0.1, seed=seed)
    return atoms


def cluster(seed=0):
    rng = np.random.default_rng(seed)
    atoms = Atoms("Cu5Ag3", positions=rng.uniform(0, 4.0, size=(8, 3)))
    atoms.positions += rng.normal(scale=0.05, size=(8, 3))
    return atoms


def evaluate(model, atoms_list, fn=None, **kw):
    structures = [from_atoms(a) for a in atoms_list]
    fn = fn or compiled(model)
    return map_structures(fn, model.variables, structures, model.config.r_max, **kw)


@pytest.fixture(scope="module", params=["gmnn", "equivmp"])
def kind(request):
    return request.param


@pytest.fixture(scope="module")
def cuag_model(kind):
    """A tiny Cu/Ag model of each kind: every physics test below runs for both."""
    return make_model(kind=kind)


@pytest.fixture(scope="module")
def fn(cuag_model):
    return compiled(cuag_model)


@pytest.mark.parametrize("make", [cuag_cell, cluster])
def test_rotation_translation_permutation(cuag_model, fn, make):
    """Invariant energy; forces rotate as vectors and the stress as a rank-2 tensor."""
    atoms = make()
    rng = np.random.default_rng(1)
    rot = Rotation.random(random_state=2).as_matrix()
    moved = atoms.copy()
    moved.positions = atoms.positions @ rot.T + rng.normal(size=3)
    if atoms.pbc.any():
        moved.cell = atoms.cell.array @ rot.T
    perm = rng.permutation(len(atoms))
    shuffled = atoms[perm]
    ref, rotated, permuted = evaluate(cuag_model, [atoms, moved, shuffled], fn)
    assert abs(rotated["energy"] - ref["energy"]) < 1e-9
    assert np.abs(rotated["forces"] - ref["forces"] @ rot.T).max() < 1e-9
    assert abs(permuted["energy"] - ref["energy"]) < 1e-9
    assert np.abs(permuted["forces"] - ref["forces"][perm]).max() < 1e-9
    if atoms.pbc.any():
        assert np.abs(rotated["stress"] - rot @ ref["stress"] @ rot.T).max() < 1e-9
        assert np.abs(permuted["stress"] - ref["stress"]).max() < 1e-9
    # The model is not trivially constant: forces are of order one.
    assert np.abs(ref["forces"]).max() > 1e-3


def finite_difference(model, fn, atoms, h=1e-5):
    """Central differences of the energy w.r.t. positions and homogeneous strain."""

    def energy(a):
        return evaluate(model, [a], fn)[0]["energy"]

    forces = np.zeros((len(atoms), 3))
    for i in range(len(atoms)):
        for x in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[i, x] += h
            minus.positions[i, x] -= h
            forces[i, x] = -(energy(plus) - energy(minus)) / (2 * h)
    stress = np.zeros((3, 3))
    if atoms.pbc.all():
        for a in range(3):
            for b in range(3):
                eps = np.zeros((3, 3))
                eps[a, b] = h
                strained = []
                for sign in (1, -1):
                    s = atoms.copy()
                    s.set_cell(atoms.cell.array @ (np.eye(3) + sign * eps), scale_atoms=True)
                    strained.append(energy(s))
                stress[a, b] = (strained[0] - strained[1]) / (2 * h) / atoms.get_volume()
    return forces, stress


@pytest.mark.parametrize(
    "case", ["periodic_cuag", "periodic_cu_zbl_bessel", "cluster", "equivmp_periodic", "equivmp"]
)
def test_forces_and_stress_equal_finite_differences(case):
    if case == "periodic_cu_zbl_bessel":
        model = make_model(elements=(29,), basis="bessel", n_basis=5, zbl={"r_max": 2.4})
        atoms = bulk("Cu", "fcc", a=3.0)  # one atom, compressed: ZBL is active
        atoms = atoms.repeat((2, 1, 1))
        atoms.rattle(0.15, seed=3)
    else:
        model = make_model(kind="equivmp" if case.startswith("equivmp") else "gmnn")
        periodic = case in ("periodic_cuag", "equivmp_periodic")
        atoms = cuag_cell(seed=4, repeat=(1, 1, 1)) if periodic else cluster(5)
    fn = compiled(model)
    pred = evaluate(model, [atoms], fn)[0]
    forces, stress = finite_difference(model, fn, atoms)
    scale = np.abs(forces).max()
    assert scale > 1e-3
    assert np.abs(pred["forces"] - forces).max() < 1e-6 * max(scale, 1.0)
    assert np.abs(pred["stress"] - stress).max() < 1e-6
    if atoms.pbc.all():
        assert np.abs(stress).max() > 1e-4


def test_padding_does_not_change_predictions(cuag_model, fn):
    small, large = cuag_cell(seed=6, repeat=(1, 1, 1)), cuag_cell(seed=7, repeat=(2, 2, 1))
    alone = evaluate(cuag_model, [small], fn, batch_size=1)[0]
    # Padded to the larger structure's atom and pair counts, plus one empty structure.
    padded = evaluate(cuag_model, [small, large], fn, batch_size=3, padding=PadToMax())[0]
    assert abs(padded["energy"] - alone["energy"]) < 1e-10
    assert np.abs(padded["forces"] - alone["forces"]).max() < 1e-10


def test_periodic_images_one_atom_cell_equals_supercell(kind):
    """For EquivMP too: an image's features are its original's, so a single periodic domain
    needs no ghost atoms for the n_layers x r_max receptive field."""
    model = make_model(elements=(29,), kind=kind)
    prim = bulk("Cu", "fcc", a=3.61)  # one atom; the cutoff is larger than the cell
    super_cell = prim.repeat((3, 3, 3))
    one, many = evaluate(model, [prim, super_cell])
    assert abs(one["energy"] - many["energy"] / 27) < 1e-9
    # A perfect crystal has no forces, by symmetry.
    assert np.abs(many["forces"]).max() < 1e-8


def test_energy_is_smooth_across_the_cutoff(kind):
    model = make_model(elements=(29,), kind=kind)
    r_max = model.config.r_max

    def dimer(r):
        return Atoms("Cu2", positions=[[0, 0, 0], [r, 0, 0]])

    def single_atoms():
        return 2 * evaluate(model, [Atoms("Cu", positions=[[0, 0, 0]])])[0]["energy"]

    inside, outside = evaluate(model, [dimer(r_max - 1e-4), dimer(r_max + 1e-4)])
    assert abs(inside["energy"] - outside["energy"]) < 1e-6
    assert abs(outside["energy"] - single_atoms()) < 1e-12
    assert np.abs(inside["forces"]).max() < 1e-4  # the slope vanishes at r_max too
    near = evaluate(model, [dimer(r_max - 0.5)])[0]
    assert abs(near["energy"] - single_atoms()) > 1e-6  # and the pair does interact inside


@pytest.mark.parametrize(
    ("n_radial", "n_contr", "size"),
    [(5, 8, 360), (5, 1, 5), (5, 4, 50), (3, 8, 3 + 6 * 3 + 10 + 18 * 2 + 27)],
)
def test_descriptor_size(n_radial, n_contr, size):
    assert descriptor_size(n_radial, n_contr) == size


def _plain_moments(radial, unit):
    """The Cartesian moments as plain sums over the pairs of the full tensors (the reference
    of the moments' hand-written and compiled VJPs)."""
    import jax.numpy as jnp

    u2 = unit[..., :, None] * unit[..., None, :]
    u3 = u2[..., None] * unit[..., None, None, :]
    return (
        radial.sum(1),
        jnp.einsum("nks,nkx->nsx", radial, unit),
        jnp.einsum("nks,nkxy->nsxy", radial, u2),
        jnp.einsum("nks,nkxyz->nsxyz", radial, u3),
    )


def test_moments_vjp_equals_autodiff_of_the_plain_sums():
    """The hand-written moment VJP against JAX's own derivative of the plain sums: member VJPs
    (vmapped cotangents, as for shallow-ensemble forces) and their gradient (as in training)."""
    import jax
    import jax.numpy as jnp

    from apax_core.model.gmnn import moments
    from apax_core.precision import x64

    with x64():
        k = jax.random.split(jax.random.PRNGKey(3), 3)
        radial = jax.random.normal(k[0], (6, 5, 3), jnp.float64)
        unit = jax.random.normal(k[1], (6, 5, 3), jnp.float64)
        shapes = [m.shape for m in _plain_moments(radial, unit)]
        cts = tuple(
            jax.random.normal(kk, (4, *s), jnp.float64)
            for kk, s in zip(jax.random.split(k[2], 4), shapes, strict=True)
        )

        def member_vjps(fn, radial, unit):
            return jax.vmap(jax.vjp(fn, radial, unit)[1])(cts)

        def loss(fn, radial, unit):
            return sum(jnp.sum(jnp.sin(g)) for g in member_vjps(fn, radial, unit))

        for a, b in zip(moments(radial, unit), _plain_moments(radial, unit), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        for a, b in zip(
            member_vjps(moments, radial, unit),
            member_vjps(_plain_moments, radial, unit),
            strict=True,
        ):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
        grads = jax.grad(loss, argnums=(1, 2))
        for a, b in zip(
            grads(moments, radial, unit), grads(_plain_moments, radial, unit), strict=True
        ):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_compiled_moments_pullback_equals_the_plain_sums_derivative():
    """In float32 on a CPU the moments' VJP is the compiled kernel (asserted in the program):
    against JAX's float64 derivative of the plain sums, for 13 pairs per atom (a partial block
    of 8 lanes), member cotangents folded into the kernel's batch axis, vmapped over two
    structures, and its gradient (training on member forces) through XLA's version; under x64,
    as the models run."""
    import jax
    import jax.numpy as jnp

    from apax_core import native
    from apax_core.model.gmnn import moments
    from apax_core.precision import x64

    assert native.applies(jnp.float32)

    with x64():
        k = jax.random.split(jax.random.PRNGKey(4), 3)
        radial = jax.random.normal(k[0], (2, 6, 13, 5), jnp.float32)
        unit = jax.random.normal(k[1], (2, 6, 13, 3), jnp.float32)
        unit = unit / jnp.linalg.norm(unit, axis=-1, keepdims=True)
        shapes = [m.shape for m in _plain_moments(radial[0], unit[0])]
        cts = tuple(
            jax.random.normal(kk, (2, 3, *s), jnp.float32)
            for kk, s in zip(jax.random.split(k[2], 4), shapes, strict=True)
        )

        def member_vjps(fn, radial, unit, cts):
            return jax.vmap(jax.vjp(fn, radial, unit)[1])(cts)

        def loss(fn, radial, unit, cts):
            return sum(jnp.sum(jnp.sin(g)) for g in member_vjps(fn, radial, unit, cts))

        def per_structure(fn, *args):
            return jax.vmap(functools.partial(fn, *args[:1]))(*args[1:])

        hlo = jax.jit(functools.partial(per_structure, member_vjps, moments)).lower(
            radial, unit, cts
        )
        assert "apax_monomials_pullback" in hlo.as_text()
        as64 = jax.tree.map(lambda x: np.asarray(x, np.float64), (radial, unit, cts))
        want = per_structure(member_vjps, _plain_moments, *as64)
        plain_grad = jax.grad(functools.partial(loss, _plain_moments), argnums=(0, 1))
        want_grad = jax.vmap(plain_grad)(*as64)
        got = per_structure(member_vjps, moments, radial, unit, cts)
        got_grad = jax.vmap(jax.grad(functools.partial(loss, moments), argnums=(0, 1)))(
            radial, unit, cts
        )
        for a, b in zip((*got, *got_grad), (*want, *want_grad), strict=True):
            assert a.dtype == jnp.float32
            np.testing.assert_allclose(a, b, rtol=0, atol=2e-6 * float(np.max(np.abs(b))))


@pytest.mark.parametrize("n_radial", [5, 3])
def test_hand_derived_contraction_pullback_equals_autodiff(n_radial):
    """contractions_pullback (shallow-ensemble forces) against JAX's VJP of the contractions,
    vmapped over member cotangents and folded onto the distinct monomials, for every number
    of contraction groups; on moments of random pairs (symmetric, as the model makes them)."""
    import functools

    import jax
    import jax.numpy as jnp

    from apax_core.model.gmnn import _fold, contractions, contractions_pullback, moments
    from apax_core.precision import x64

    with x64():
        k = jax.random.split(jax.random.PRNGKey(5), 3)
        radial = jax.random.normal(k[0], (4, 6, n_radial), jnp.float64)
        unit = jax.random.normal(k[1], (4, 6, 3), jnp.float64)
        m = moments(radial, unit / jnp.linalg.norm(unit, axis=-1, keepdims=True))
        for n_contr in range(1, 9):
            d = jax.random.normal(k[2], (3, 4, descriptor_size(n_radial, n_contr)), jnp.float64)
            _, vjp = jax.vjp(functools.partial(contractions, n_contr=n_contr), *m)
            want = jax.vmap(lambda c, vjp=vjp: _fold(vjp(c)))(d)  # (B, N, S, 20)
            got = contractions_pullback(m, d, n_contr)  # (N, B, S, 20)
            np.testing.assert_allclose(np.moveaxis(got, 1, 0), want, rtol=1e-10, atol=1e-10)


def _random_pairs(key, shape, n_radial):
    """float32 radial channels shape + (n_radial,) and unit vectors shape + (3,)."""
    import jax
    import jax.numpy as jnp

    radial = jax.random.normal(key[0], (*shape, n_radial), jnp.float32)
    unit = jax.random.normal(key[1], (*shape, 3), jnp.float32)
    return radial, unit / jnp.linalg.norm(unit, axis=-1, keepdims=True)


def test_compiled_contraction_pullback_equals_the_xla_one():
    """The compiled CPU kernel (apax_core.native, built here with the system's compiler: it
    must build) against gmnn.contractions_pullback: every number of groups, two radial
    sizes, 3 cotangents, float32 under x64 as predictions run; vmapped over structures, as
    batched predictions call it; and its gradient (its VJP is the XLA version's)."""
    import jax
    import jax.numpy as jnp

    from apax_core import native
    from apax_core.model.gmnn import contractions_pullback, moments
    from apax_core.precision import x64

    assert native.available(), "the native kernels did not build (a C++ compiler is needed)"
    key = jax.random.split(jax.random.PRNGKey(7), 3)
    with x64():
        for n_radial in (5, 3):
            radial, unit = _random_pairs(key, (2, 9, 7), n_radial)
            m = jax.vmap(moments)(radial, unit)
            for n_contr in range(1, 9):
                shape = (2, 3, 9, descriptor_size(n_radial, n_contr))
                d = jax.random.normal(key[2], shape, jnp.float32)
                want = jax.vmap(contractions_pullback, (0, 0, None))(m, d, n_contr)
                kernel = jax.vmap(native.contractions_pullback, (0, 0, None))
                got = jax.jit(kernel, static_argnums=2)(m, d, n_contr)
                scale = float(jnp.max(jnp.abs(want)))
                np.testing.assert_allclose(got, want, atol=2e-6 * scale, rtol=0)

        def loss(fn, m, d):  # training differentiates through the member forces
            return jnp.sum(jnp.sin(jax.vmap(fn, (0, 0, None))(m, d, 8)))

        grads = jax.grad(loss, argnums=(1, 2))
        for a, b in zip(
            jax.tree.leaves(grads(native.contractions_pullback, m, d)),
            jax.tree.leaves(grads(contractions_pullback, m, d)),
            strict=True,
        ):
            np.testing.assert_allclose(a, b, atol=1e-5 * float(jnp.max(jnp.abs(b))), rtol=0)


def test_compiled_contractions_and_their_derivatives_equal_the_xla_ones():
    """native.contractions (atoms in the vector lanes) against gmnn.contractions of the same
    moments, float32 under x64: values, gradients, a gradient of a gradient (training on
    forces: the second-order kernel, which must be the one called) and a third derivative
    (its XLA fallback), every number of groups (and a second radial size), vmapped over
    structures as training calls them."""
    import jax
    import jax.numpy as jnp

    from apax_core import native
    from apax_core.model.gmnn import contractions, moment_sums, moments
    from apax_core.precision import x64

    assert native.available(), "the native kernels did not build (a C++ compiler is needed)"
    k = jax.random.split(jax.random.PRNGKey(11), 3)
    with x64():
        for n_radial in (5, 3):
            radial, unit = _random_pairs(k, (2, 11, 6), n_radial)
            for n_contr in range(1, 9) if n_radial == 5 else (8,):
                paths = {
                    "xla": lambda r, u, n=n_contr: contractions(*moments(r, u), n),
                    "native": lambda r, u, n=n_contr: native.contractions(moment_sums(r, u), n),
                }
                out = {key: jax.jit(jax.vmap(f))(radial, unit) for key, f in paths.items()}
                scale = float(jnp.max(jnp.abs(out["xla"])))
                np.testing.assert_allclose(out["native"], out["xla"], atol=2e-7 * scale, rtol=0)
                w = jax.random.normal(k[2], out["xla"].shape[1:], jnp.float32)

                def loss(f, r, u, scale=scale, w=w):
                    return jnp.sum(jnp.tanh(f(r, u) / scale) * w)

                def second(f, r, u, loss=loss):  # a force term's parameter gradient
                    return jnp.sum(jnp.sin(jax.grad(loss, 2)(f, r, u)))

                def third(f, r, u, second=second):
                    return jnp.sum(jax.grad(second, 1)(f, r, u) ** 2)

                if n_contr not in (4, 8):  # the VJPs' group loops are the member kernel's
                    continue
                orders = (jax.grad(loss, (1, 2)), jax.grad(second, (1, 2)))
                orders += (jax.grad(third, 1),) if n_contr == 8 else ()
                for order in orders:
                    fn = jax.jit(jax.vmap(order, (None, 0, 0)), static_argnums=0)
                    got, want = (fn(paths[p], radial, unit) for p in ("native", "xla"))
                    # float32 rounding: a third derivative sums ~10x more terms (measured:
                    # 0.4-1.2e-6 of its largest value, orders one and two below 0.7e-6)
                    rel = 3e-6 if order is orders[-1] and len(orders) == 3 else 1e-6
                    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
                        tol = rel * float(jnp.max(jnp.abs(b)))
                        np.testing.assert_allclose(a, b, atol=tol, rtol=0)
                    if order is orders[1]:
                        hlo = fn.lower(paths["native"], radial, unit).as_text()
                        assert "apax_contractions_vjp_vjp" in hlo


def test_float32_gmnn_takes_the_compiled_contractions(monkeypatch):
    """A float32 GMNN on a CPU: energies, forces and stress through the compiled contractions
    equal the XLA path's (whose physics the fp64 tests check) to float32 rounding."""
    from apax_core import native, predictor
    from apax_core.frame_predictions import predict

    model = make_model(precision="fp32", seed=3)
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 1))
    atoms.numbers[[1, 6]] = 47
    atoms.rattle(0.1, seed=2)
    calls = []
    monkeypatch.setattr(native, "contractions", _counting(native.contractions, calls))
    outputs = {}
    for path in ("native", "xla"):
        if path == "xla":
            monkeypatch.setattr(native, "applies", lambda dtype: False)
        predictor._compiled.cache_clear()
        outputs[path] = predict(model, [from_atoms(atoms)], mode="forces")[0]
    predictor._compiled.cache_clear()
    assert calls, "the float32 model did not take the compiled contractions"
    for key in ("energy", "forces", "stress"):
        scale = np.max(np.abs(outputs["xla"][key]))
        np.testing.assert_allclose(outputs["native"][key], outputs["xla"][key], atol=1e-5 * scale)


def _counting(fn, calls):
    def counted(*args, **kwargs):
        calls.append(1)
        return fn(*args, **kwargs)

    return counted


def test_float32_sin_cos_match_float64_and_differentiate_to_each_other():
    """The float32 polynomial sine and cosine of the radial basis, against float64 over the
    arguments a Bessel basis meets (k pi r / r_max up to ~70) and far beyond; their derivatives
    are the other function."""
    import jax
    import jax.numpy as jnp

    from apax_core.model.basis import sin_cos
    from apax_core.precision import x64

    with x64():
        y = jnp.linspace(-1000.0, 1000.0, 400_001, dtype=jnp.float32)
        exact = y.astype(jnp.float64)
        d_sin = jax.vmap(jax.grad(sin_cos))(y)
        d_cos = jax.vmap(jax.grad(lambda y: sin_cos(y, cos=True)))(y)
        for got, want in [
            (sin_cos(y), jnp.sin(exact)),
            (sin_cos(y, cos=True), jnp.cos(exact)),
            (d_sin, jnp.cos(exact)),
            (d_cos, -jnp.sin(exact)),
        ]:
            assert got.dtype == jnp.float32
            np.testing.assert_allclose(got, want, rtol=0, atol=3e-7)
        x = jnp.linspace(-3.0, 3.0, 7)  # float64 keeps XLA's functions
        np.testing.assert_array_equal(sin_cos(x), jnp.sin(x))


def test_basis_slope_equals_the_derivative_of_the_basis():
    """gmnn.weighted_basis_and_slope against the plain weighted basis and its JAX derivative:
    both bases, float64 and float32, and for a float32 Bessel basis both the compiled kernel
    (which must be the one taken) and XLA's version, over distances from near zero to beyond
    r_max, padded slots zero; the kernel's own derivative (through XLA's) is the slope."""
    import jax
    import jax.numpy as jnp

    from apax_core.config import GMNNConfig
    from apax_core.model import gmnn
    from apax_core.precision import x64

    with x64():
        for basis, dtype in itertools.product(("bessel", "gaussian"), (jnp.float64, jnp.float32)):
            config = GMNNConfig(basis=basis, n_basis=7, r_max=5.0)
            r = jnp.linspace(0.05, 5.5, 2000, dtype=dtype).reshape(100, 20)
            mask = jnp.arange(20) < 17
            plain = functools.partial(gmnn._weighted_basis, pair_mask=mask, config=config)
            want = jax.jvp(plain, (r,), (jnp.ones_like(r),))
            paths = {"taken": functools.partial(gmnn.weighted_basis_and_slope, config=config)}
            if basis == "bessel" and dtype == jnp.float32:
                paths["xla"] = lambda r, m: gmnn.xla_bessel_basis_and_slope(r, m, 7, 5.0)
                hlo = jax.jit(paths["taken"]).lower(r, mask).as_text()
                assert "apax_bessel_basis" in hlo
                value = functools.partial(gmnn.weighted_basis_and_slope, pair_mask=mask)
                derivative = jax.jvp(
                    lambda r, v=value, c=config: v(r, config=c)[0], (r,), (jnp.ones_like(r),)
                )[1]
                atol = 2e-6 * float(jnp.max(jnp.abs(want[1])))
                np.testing.assert_allclose(derivative, want[1], rtol=0, atol=atol)
            tol = 1e-12 if dtype == jnp.float64 else 2e-6
            for path in paths.values():
                got = path(r, mask)
                for a, b in zip(got, want, strict=True):
                    assert a.dtype == dtype
                    atol = tol * float(jnp.max(jnp.abs(b)))
                    np.testing.assert_allclose(a, b, rtol=0, atol=atol)
                assert not np.any(np.asarray(got[0][:, 17:]))
                assert not np.any(np.asarray(got[1][:, 17:]))


def test_radial_channels_vjp_equals_autodiff_of_the_plain_contraction():
    """The radial channels' VJP (kept slope d R / d r) against JAX's derivative of the plain
    basis contraction, two species, float32 as the models run: the distances' and the
    coefficients' cotangents, and the gradient of a force-like loss (training's second order)."""
    import jax
    import jax.numpy as jnp

    from apax_core.config import GMNNConfig
    from apax_core.model import gmnn

    cfg = GMNNConfig(basis="bessel", n_basis=6, n_radial=3, r_max=4.0)
    k = jax.random.split(jax.random.PRNGKey(5), 4)
    r = jax.random.uniform(k[0], (5, 7), jnp.float32, 1.0, 4.5)
    mask = jax.random.uniform(k[1], (5, 7)) < 0.8
    onehot = jax.nn.one_hot(jnp.array([0, 1, 1, 0, 1]), 2, dtype=jnp.float32)
    neighbour_onehot = onehot[jax.random.randint(k[2], (5, 7), 0, 5)]
    coeffs = jax.random.uniform(k[3], (2, 2, 3, 6), jnp.float32, -1.0, 1.0)

    def plain(r, c):
        basis = gmnn._weighted_basis(r, mask, cfg)
        return gmnn._contract(basis, onehot, neighbour_onehot, c)

    def ours(r, c):
        return gmnn.radial_channels(r, onehot, neighbour_onehot, c, mask, cfg)

    def force_loss(fn, c):  # d/dc of a loss on d(sum R^2)/dr, as force training takes it
        return jnp.sum(jnp.sin(jax.grad(lambda r: jnp.sum(fn(r, c) ** 2))(r)))

    np.testing.assert_allclose(ours(r, coeffs), plain(r, coeffs), rtol=1e-6, atol=1e-6)
    g = jnp.cos(plain(r, coeffs))
    for a, b in zip(jax.vjp(ours, r, coeffs)[1](g), jax.vjp(plain, r, coeffs)[1](g), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        jax.grad(force_loss, 1)(ours, coeffs),
        jax.grad(force_loss, 1)(plain, coeffs),
        rtol=1e-4,
        atol=1e-4,
    )
