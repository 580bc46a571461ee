"""XLA's sin against the float32 polynomial of ``basis.sin_cos``, alone and in the Bessel basis.

    python bench/basis_speed.py

Pair distances of 864 fcc-like atoms x 73 neighbour slots (uniform in 1.8-5.5 A, float32), a
Bessel basis of 16 functions at r_max 5 (apax's default size): ns per pair for the value and
for value + gradient (what forces cost), the fastest of 5 rounds of 20 calls. ``jnp`` rows use
jnp.sin / jnp.sinc (the basis before this change), ``poly`` rows ``basis.sin_cos``. Prints a
table and writes bench/results/basis_speed.json.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from common import machine, table, write_result

from apax_core.model import basis

PAIRS = 864 * 73
N_BASIS, R_MAX = 16, 5.0


def sinc_basis(r):
    """The Bessel basis as it was written with jnp.sinc (same functions)."""
    n = np.arange(N_BASIS)
    prefactor = (-1.0) ** n * np.sqrt(2.0) * np.pi / R_MAX**1.5 * (n + 1) * (n + 2)
    prefactor = (prefactor / np.sqrt((n + 1) ** 2 + (n + 2) ** 2)).astype(r.dtype)
    x = r[..., None] / R_MAX
    return prefactor * (jnp.sinc((n + 1) * x) + jnp.sinc((n + 2) * x))


def ns_per_pair(fn, x) -> float:
    fn = jax.jit(fn)
    jax.block_until_ready(fn(x))
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(20):
            y = fn(x)
        jax.block_until_ready(y)
        best = min(best, (time.perf_counter() - t0) / 20)
    return 1e9 * best / PAIRS


def with_grad(fn):
    return jax.grad(lambda x: jnp.sum(fn(x) * 1.5))


def main() -> None:
    r = jnp.asarray(np.random.default_rng(0).uniform(1.8, 5.5, PAIRS), jnp.float32)
    y = 17 * jnp.pi / R_MAX * r  # the largest argument of the basis' sines
    cases = {
        "sin (one per pair)": (jnp.sin, basis.sin_cos),
        "Bessel basis, 16 functions": (sinc_basis, lambda r: basis.bessel_basis(r, N_BASIS, R_MAX)),
    }
    rows = []
    for name, (ref, ours) in cases.items():
        x = y if name.startswith("sin") else r
        row = {"function": name}
        row["jnp ns"], row["poly ns"] = ns_per_pair(ref, x), ns_per_pair(ours, x)
        row["jnp +grad ns"] = ns_per_pair(with_grad(ref), x)
        row["poly +grad ns"] = ns_per_pair(with_grad(ours), x)
        row["ratio"] = row["poly +grad ns"] / row["jnp +grad ns"]
        row["max |diff|"] = float(jnp.max(jnp.abs(ours(x) - ref(x))))
        rows.append(row)
    columns = ["function", "jnp ns", "poly ns", "jnp +grad ns", "poly +grad ns", "ratio"]
    print(table(rows, columns + ["max |diff|"]))
    write_result("basis_speed", {"rows": rows, "pairs": PAIRS, "machine": machine()})


if __name__ == "__main__":
    main()
