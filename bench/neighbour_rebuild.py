"""Neighbour-list rebuild cost: the device brute-force image list against jax-md's minimum-image
list and a host vesin rebuild, on water boxes.

    python bench/neighbour_rebuild.py [--sizes 48,96,...,12000] [--r-max 5] [--skin 0.5]

Water at 1 g/cm^3 (n/3 randomly placed and rotated molecules, O-O >= 2.4 A), list cutoff
r_max + skin. Milliseconds, compilation excluded, best of --repeats:

- images_rebuild: ``image_neighbours`` update that rebuilds (an atom moved beyond skin / 2);
- images_check: its update that finds the list still valid (paid every step);
- jaxmd_rebuild: jax-md's Dense list update forced to rebuild (``md.neighbours``, cell list
  where the engine would use one), only where the minimum image is exact (heights >= 2 cutoff);
- vesin_host: positions to the host, vesin, packing into the (N, K) slots, back to the device:
  what a host rebuild from inside the engine would cost.

The crossover is the smallest size from which the brute-force rebuild costs more than the host
rebuild, and the smallest from which jax-md's is cheaper.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import ase
import jax
import jax.numpy as jnp
import numpy as np
import vesin
from ase.build import molecule
from common import table, write_result
from scipy.spatial.transform import Rotation

from apax_core.md import image_neighbours as im
from apax_core.md.neighbours import allocate, make_space, neighbour_fns, quiet
from apax_core.precision import x64

WATER_VOLUME = 29.9
"""A^3 per molecule at 1 g/cm^3."""


def water_box(n_atoms: int, seed: int = 0) -> ase.Atoms:
    """n_atoms / 3 randomly placed and rotated water molecules, O-O >= 2.4 A, 1 g/cm^3."""
    n_mol = n_atoms // 3
    length = (n_mol * WATER_VOLUME) ** (1 / 3)
    rng = np.random.default_rng(seed)
    h2o = molecule("H2O").positions - molecule("H2O").positions[0]
    oxygens = np.zeros((0, 3))
    while len(oxygens) < n_mol:
        x = rng.uniform(0, length, 3)
        d = oxygens - x
        d -= length * np.round(d / length)
        if np.all(np.linalg.norm(d, axis=1) > 2.4):
            oxygens = np.vstack([oxygens, x])
    positions = [o + Rotation.random(random_state=rng).apply(h2o) for o in oxygens]
    return ase.Atoms("OH2" * n_mol, np.concatenate(positions), cell=[length] * 3, pbc=True)


def best_ms(fn, *args, repeats: int) -> float:
    """Fastest of ``repeats`` calls after a warm-up (compilation), in ms."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def kicked(s, cell, skin: float):
    """s with atom 0 moved by 0.6 skin along x (forces a rebuild)."""
    return s.at[0].add(jnp.array([0.6 * skin, 0.0, 0.0]) @ jnp.linalg.inv(cell))


def images(atoms: ase.Atoms, r_max: float, skin: float, repeats: int) -> dict:
    """Rebuild and check cost of the image list; its capacity and shift count."""
    s, cell = jnp.asarray(atoms.get_scaled_positions()), jnp.asarray(atoms.cell.array)
    fns = im.image_neighbour_list(atoms.cell.array, atoms.pbc, r_max, skin)
    nbrs = fns.allocate(s, cell)
    update = jax.jit(fns.update)
    return {
        "images_rebuild": best_ms(update, nbrs, kicked(s, cell, skin), cell, repeats=repeats),
        "images_check": best_ms(update, nbrs, s, cell, repeats=repeats),
        "shifts": len(im.image_shifts(atoms.cell.array, atoms.pbc, r_max + skin)),
        "capacity": int(nbrs.idx.shape[1]),
    }


def jaxmd(atoms: ase.Atoms, r_max: float, skin: float, repeats: int) -> float | None:
    """Forced rebuild of the engine's jax-md list, or None where the minimum image is wrong."""
    if not im.minimum_image_ok(atoms.cell.array, atoms.pbc, r_max + skin):
        return None
    box = jnp.asarray(atoms.cell.array.T)
    fns = neighbour_fns(make_space(box)[0], box, r_max, skin, 1.25)
    s, cell = jnp.asarray(atoms.get_scaled_positions()), jnp.asarray(atoms.cell.array)
    with quiet():
        nbrs = allocate(fns, s, 0)
        update = jax.jit(lambda nbrs, R: nbrs.update(R))
        return best_ms(update, nbrs, kicked(s, cell, skin), repeats=repeats)


def host_rebuild(s, cell: np.ndarray, cutoff: float, capacity: int):
    """Device positions -> vesin on the host -> (N, K) slots and shifts on the device."""
    positions = np.asarray(s) @ cell
    n = len(positions)
    i, j, shifts = vesin.NeighborList(cutoff=cutoff, full_list=True).compute(
        points=positions, box=cell, periodic=True, quantities="ijS"
    )
    order = np.argsort(i, kind="stable")
    i, j, shifts = i[order], j[order], shifts[order]
    start = np.concatenate([[0], np.cumsum(np.bincount(i, minlength=n))])
    slot = np.arange(len(i)) - start[i]
    idx, image = np.full((n, capacity), n, np.int32), np.zeros((n, capacity, 3), np.int32)
    idx[i, slot], image[i, slot] = j, shifts
    return jax.device_put((idx, image))


def measure(n: int, r_max: float, skin: float, repeats: int) -> dict:
    atoms = water_box(n)
    row = {"atoms": n, "box_A": float(atoms.cell[0, 0])}
    row.update(images(atoms, r_max, skin, repeats))
    row["jaxmd_rebuild"] = jaxmd(atoms, r_max, skin, repeats)
    s = jnp.asarray(atoms.get_scaled_positions())
    args = (s, atoms.cell.array, r_max + skin, row["capacity"])
    row["vesin_host"] = best_ms(host_rebuild, *args, repeats=repeats)
    return row


def crossover(rows: list[dict], cheaper: str) -> int | None:
    """Smallest size from which ``cheaper`` beats the brute-force rebuild at every larger one."""
    sizes = [
        r["atoms"] for r in rows if r[cheaper] is not None and r[cheaper] < r["images_rebuild"]
    ]
    larger_ok = [s for s in sizes if all(r["atoms"] in sizes for r in rows if r["atoms"] >= s)]
    return min(larger_ok, default=None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="48,96,192,864,1536,3000,6000,12000")
    p.add_argument("--r-max", type=float, default=5.0, help="model cutoff in A")
    p.add_argument("--skin", type=float, default=0.5, help="list skin in A")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="neighbour_rebuild", help="result name under bench/results")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with x64():
        for n in (int(x) for x in args.sizes.split(",")):
            rows.append(measure(n, args.r_max, args.skin, args.repeats))
            print(f"{n} atoms: {rows[-1]}", flush=True)
    columns = ["atoms", "box_A", "shifts", "capacity", "images_rebuild", "images_check"]
    print("\nms per call (lower is better); jaxmd n/a where the minimum image is wrong")
    print(table(rows, [*columns, "jaxmd_rebuild", "vesin_host"]))
    cross = {"vesin_host": crossover(rows, "vesin_host"), "jaxmd": crossover(rows, "jaxmd_rebuild")}
    print(f"crossover (atoms from which the alternative rebuilds faster): {cross}")
    path = write_result(
        args.out,
        {
            "rows": rows,
            "crossover_atoms": cross,
            "r_max": args.r_max,
            "skin": args.skin,
            "load_average_at_end": os.getloadavg(),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
