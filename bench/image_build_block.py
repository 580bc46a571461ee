"""The image neighbour list's rebuild cost against its block size (candidates per batch of rows).

    python bench/image_build_block.py

fcc Cu (rattled 0.1 A) of 108 to 2048 atoms, list cutoff 5.5 A (r_max 5 + skin 0.5), 80 slots:
the fastest of 5 builds for each block size. Prints a table (ms) and writes
bench/results/image_build_block.json.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
from ase.build import bulk
from common import table, write_result

from apax_core.md import image_neighbours as im

BLOCKS = (1 << 14, 1 << 15, 1 << 16, 1 << 17, 1 << 22)


def fastest_ms(fn, *args, n: int = 5) -> float:
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return 1e3 * best


def row(repeat: int) -> dict:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((repeat,) * 3)
    atoms.rattle(0.1, seed=0)
    cell, s = jnp.asarray(atoms.cell.array), jnp.asarray(atoms.get_scaled_positions())
    shifts = im.image_shifts(atoms.cell.array, (True,) * 3, 5.5)
    out = {"atoms": len(atoms), "shifts": len(shifts)}
    default = im.BLOCK
    try:
        for block in BLOCKS:
            im.BLOCK = block
            build = functools.partial(
                im.build, shifts=shifts, pbc=(True,) * 3, cutoff=5.5, capacity=80
            )
            out[f"2^{block.bit_length() - 1}"] = fastest_ms(jax.jit(build), s, cell)
    finally:
        im.BLOCK = default
    return out


def main() -> None:
    jax.config.update("jax_enable_x64", True)
    rows = [row(r) for r in (3, 4, 6, 8)]
    columns = ["atoms", "shifts"] + [f"2^{b.bit_length() - 1}" for b in BLOCKS]
    print(table(rows, columns))
    write_result("image_build_block", {"rows": rows, "default_block": im.BLOCK})


if __name__ == "__main__":
    main()
