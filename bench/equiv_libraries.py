"""e3nn-jax against e3x for EquivMP's message passing on our dense (atoms x slots) layout.

    PYTHONPATH=/path/to/e3x python bench/equiv_libraries.py [--atoms 864]

e3x is not a dependency: install it anywhere (``pip install --target DIR e3x==1.0.2
jaxtyping``) and put that directory on PYTHONPATH. Both models use the paper's benchmark
settings (r_max 6, 7 radial functions, L = 2, 32 channels, 2 message-passing steps) and the
same neighbour slots; each step gathers neighbour features into (N, K, ...), takes their
tensor product with the pair's spherical harmonics weighted by a radial MLP, sums over
slots, adds a self-interaction and applies a gated nonlinearity. The energy is a sum over a
linear readout of the scalars; the timing is energy + forces (jax.grad by positions), fp32,
compilation excluded, on fcc Cu.
"""

from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from ase.build import bulk
from common import table, write_result

from apax_core.config import EquivMPConfig
from apax_core.data import from_atoms
from apax_core.data.neighbours import neighbour_list
from apax_core.model.basis import bessel_basis, cosine_cutoff
from apax_core.model.equivmp import EquivMP

R_MAX, N_BASIS, L_MAX, CHANNELS, LAYERS = 6.0, 7, 2, 32, 2


def dense_pairs(atoms):
    """(positions, idx_j, offsets, pair_mask) in the dense layout."""
    s = from_atoms(atoms)
    nl = neighbour_list(s, R_MAX)
    slots, n = nl.slots(s.n_atoms), s.n_atoms
    k = int(slots.max()) + 1
    idx_j, offsets = np.zeros((n, k), np.int32), np.zeros((n, k, 3))
    mask = np.zeros((n, k), bool)
    idx_j[nl.idx_i, slots], offsets[nl.idx_i, slots], mask[nl.idx_i, slots] = (
        nl.idx_j,
        nl.offsets,
        1,
    )
    return s.positions, idx_j, offsets, mask


class E3xMP(nn.Module):
    """The same architecture with e3x: features (N, 1, (L+1)^2, C), no pseudotensors (the
    parities e3nn's 0e + 1o + 2e have)."""

    @nn.compact
    def __call__(self, dr_vec, species, idx_j, pair_mask):
        import e3x

        r = jnp.linalg.norm(jnp.where(pair_mask[..., None], dr_vec, 1.0), axis=-1)
        sh = e3x.so3.spherical_harmonics(dr_vec / r[..., None], max_degree=L_MAX)  # (N,K,9)
        radial = bessel_basis(r, N_BASIS, R_MAX)
        envelope = (cosine_cutoff(r, R_MAX) * pair_mask)[..., None]
        x = nn.Embed(1, CHANNELS)(species)[:, None, None, :]  # (N, 1, 1, C)
        for _ in range(LAYERS):
            x_j = x[idx_j]  # (N, K, P, D, C)
            w = nn.Dense(CHANNELS)(nn.silu(nn.Dense(32)(radial))) * envelope  # (N, K, C)
            y = e3x.nn.Tensor(max_degree=L_MAX, include_pseudotensors=False)(
                x_j, sh[:, :, None, :, None] * w[:, :, None, None]
            )
            m = jnp.sum(y, axis=1) / jnp.sqrt(30.0)
            x = e3x.nn.Dense(CHANNELS)(m) + e3x.nn.Dense(CHANNELS)(
                e3x.nn.change_max_degree_or_type(x, max_degree=L_MAX, include_pseudotensors=False)
            )
            x = e3x.nn.silu(x)  # e3x's gated nonlinearity on the scalars' norms
        return x[:, 0, 0, :]


def energy_fn(module, params, positions, idx_j, offsets, mask, species):
    dr = positions[idx_j] - positions[:, None] + offsets
    return jnp.sum(
        nn.Dense(1).apply(
            {"params": params["head"]}, module.apply(params["body"], dr, species, idx_j, mask)
        )
    )


def timed(module, positions, idx_j, offsets, mask, repeats: int) -> dict:
    species = jnp.zeros(len(positions), jnp.int32)
    dr = positions[idx_j] - positions[:, None] + offsets
    body = module.init(jax.random.PRNGKey(0), dr, species, idx_j, mask)
    head = nn.Dense(1).init(jax.random.PRNGKey(1), jnp.zeros((1, CHANNELS)))["params"]
    params = {"body": body, "head": head}
    f = jax.jit(
        jax.value_and_grad(
            lambda p, x: energy_fn(module, p, x, idx_j, offsets, mask, species), argnums=1
        )
    )
    t0 = time.perf_counter()
    jax.block_until_ready(f(params, positions))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(f(params, positions))
    per_call = (time.perf_counter() - t0) / repeats
    return {
        "ms_energy_forces": 1e3 * per_call,
        "us_per_atom": 1e6 * per_call / len(positions),
        "compile_s": compile_s,
        "n_params": sum(x.size for x in jax.tree.leaves(params)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3, help="fcc Cu conventional cells per axis")
    p.add_argument("--calls", type=int, default=5)
    args = p.parse_args()
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(args.repeat)
    positions, idx_j, offsets, mask = map(jnp.asarray, dense_pairs(atoms))
    ours = EquivMPConfig(
        r_max=R_MAX,
        n_basis=N_BASIS,
        l_max=L_MAX,
        n_channels=CHANNELS,
        n_layers=LAYERS,
        radial_hidden=[32],
        hidden=[32],
    )
    models = {"e3nn-jax (apax_core EquivMP)": EquivMP(ours, 1), "e3x": E3xMP()}
    rows = []
    for name, module in models.items():
        rows.append(
            {
                "library": name,
                "atoms": len(atoms),
                "slots": idx_j.shape[1],
                **timed(module, positions, idx_j, offsets, mask, args.calls),
            }
        )
    print(table(rows, list(rows[0])))
    print(f"wrote {write_result('equiv_libraries', {'rows': rows})}")


if __name__ == "__main__":
    main()
