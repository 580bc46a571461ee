"""Where one MD step's time goes: GMNN and EquivMP, fcc Cu at 108 and 864 atoms, NVT 600 K.

    python bench/profile_md.py [--sizes 108,864] [--models gmnn,equivmp] [--quick]

Models: the random reference GMNN of bench/md_speed.py (n_basis 7, n_radial 5, r_max 5,
hidden [128, 128], fp32), EquivMP with the defaults of ``EquivMPConfig`` (r_max 6, l_max 2,
32 channels, 2 layers, fp32) and ``gmnn_apax``, a GMNN of apax 0.14's default size (Bessel
basis, n_basis 16, readout [256, 256]; sizes 256 and 864). The engine is the one ``run_md``
builds (``build_engine``: Nose-Hoover NVT at 600 K, dt 1 fs, skin 0.4 A, a kept frame every
50 steps (every chunk of fewer), the list kind the engine picks for the cell). After two
warm-up chunks (compilation, thermal motion; the list grown on overflow as the engine does),
each part is its own jitted program on the same state, timed after a first (compiling) call
as the minimum over repeats of ``block_until_ready`` calls:

- pair vectors: the engine's Batch from fractional positions and the list, and r_ij (fp64);
- descriptor: the representation's forward pass, pair vectors -> per-atom features;
- readout: the MLP's forward pass, features -> per-atom outputs;
- energy: the engine's energy function (all of the above, scale/shift, the fp64 sum);
- energy + forces: its gradient, what every step evaluates; backward = the difference;
  descriptor / readout backward: (forward + VJP) - forward of each part alone;
- neighbour check: the list update where no rebuild is due (every step);
- neighbour rebuild: the update forced to rebuild; it happens ``rebuilds/100`` times per 100
  steps (counted over single steps of the engine), each also redoes the step's force;
- kept frame: the full prediction (forces and stress) of a kept frame, every 50 steps;
- MD step: the engine's chunk (``lax.while_loop`` of steps) per step, everything included;
- residual: the MD step minus energy + forces, the neighbour check and the amortised rebuilds
  and frames: jax-md's integrator, the loop carry and the frame buffer, less whatever the
  engine's single fused program saves over the parts run as programs of their own (the force
  costs 10-40 % less inside the engine's loop than alone, so the residual comes out negative:
  the integrator's own cost is within that margin).

The host's work (files, checkpoint) happens once per chunk of hundreds of steps and is not
profiled here.

The slot line gives the dense (N, K) layout's padding: K allocated slots per atom against the
mean number of filled slots (pairs within r_max + skin) and of pairs within r_max (the pairs
with a nonzero weight). Compile times are excluded. ``--quick`` is a smoke run (108 atoms,
fewer repeats).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from common import table, write_result
from jax_md import dataclasses as jmd_dataclasses
from md_speed import cu, random_model, reference_model

from apax_core.config import EquivMPConfig, GMNNConfig
from apax_core.config.md import MDConfig
from apax_core.md.build import engine_for
from apax_core.md.model_adapter import dynamics_energy
from apax_core.md.neighbours import MINIMUM_IMAGE, quiet, standard_frame
from apax_core.md.run import neighbour_kind
from apax_core.model.potential import representation
from apax_core.model.readout import Readout
from apax_core.model_dir import Model
from apax_core.precision import network_dtype, x64
from apax_core.predictor import predictor
from apax_core.transforms.derivatives import pair_vectors, zero_strain

SKIN = 0.4
RATE = 50
T = 600.0


def equivmp_model() -> Model:
    """Random EquivMP with the defaults of EquivMPConfig."""
    return random_model(EquivMPConfig(precision="fp32"))


def apax_size_model() -> Model:
    """Random GMNN of apax 0.14's default size (the size bench/vs_apax.py trains): Bessel basis,
    n_basis 16, n_radial 5, r_max 5, readout [256, 256], fp32."""
    return random_model(
        GMNNConfig(
            basis="bessel", n_basis=16, n_radial=5, r_max=5.0, hidden=[256, 256], precision="fp32"
        )
    )


def md_config(steps: int) -> MDConfig:
    """Chunks of ``steps`` steps, a kept frame every min(RATE, steps) steps."""
    return MDConfig(
        temperature={"kind": "constant", "T": T},
        dt=1.0,
        duration=3 * steps,
        n_inner=steps,
        sampling_rate=min(RATE, steps),
        skin=SKIN,
        force_uncertainty=False,
    )


def looped(fn):
    """``run(n, x, *rest)``: ``fn(x, *rest)`` ``n`` times in one jitted loop, each input ``x``
    depending on the previous output (x + 1e-30 * sum(output), which XLA cannot drop), so a
    part is timed as it runs inside the engine's loop: no dispatch per call, nothing hoisted.
    ``n`` is traced: one compilation serves every count."""

    def dep(y, x):
        leaves = [jnp.sum(leaf).astype(x.dtype) for leaf in jax.tree.leaves(y)]
        return x + 1e-30 * sum(leaves)

    @jax.jit
    def run(n, x, *rest):
        return jax.lax.fori_loop(0, n, lambda i, x: dep(fn(x, *rest), x), x)

    return run


def best(fn, *args, repeats: int) -> np.ndarray:
    """(wall, CPU) seconds per evaluation of ``fn(*args)``, timed in a loop (:func:`looped`)
    lasting ~20 ms, after a compiling call: the minimum of each over ``repeats`` rounds. The
    CPU time is this process's (all threads): on a shared machine it is the steadier measure."""
    run = looped(fn)
    jax.block_until_ready(run(1, *args))
    t0 = time.perf_counter()
    jax.block_until_ready(run(1, *args))
    number = max(2, int(0.02 / max(time.perf_counter() - t0, 1e-6)))
    times = []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(run(number, *args))
        times.append([time.perf_counter() - t0, time.process_time() - c0])
    return np.min(times, axis=0) / number


def warm_start(engine, atoms, variables, steps: int, chunks: int = 2):
    """(state, nbrs) after ``chunks`` chunks from the lattice at rest (momenta drawn at T),
    the list grown by a quarter of its slots whenever it overflowed (as the engine does)."""
    pairs, extra = engine.pairs, 0
    R = jnp.asarray(pairs.fractional(atoms.positions))
    while True:
        nbrs = pairs.allocate(R, extra)
        state = engine.init(variables, jax.random.PRNGKey(0), R, None, nbrs)
        for k in range(chunks):
            carry = engine.chunk(
                variables, state, nbrs, jnp.asarray(k * steps), jnp.asarray((k + 1) * steps)
            )
            if pairs.error(carry.nbrs) is not None:
                break
            state, nbrs = carry.state, carry.nbrs
        else:
            return state, nbrs
        extra += max(1, int(nbrs.idx.shape[1]) // 4)


def forced_rebuild(nbrs, kind: str):
    """``nbrs`` with its reference positions moved 0.3 of the cell, so the update rebuilds."""
    if kind == MINIMUM_IMAGE:
        return jmd_dataclasses.replace(nbrs, reference_position=nbrs.reference_position + 0.3)
    return nbrs._replace(reference=nbrs.reference + 0.3)


def profile(name: str, model: Model, n_atoms: int, steps: int, repeats: int, count_steps: int):
    """(rows of the table, slot statistics) of one model and size."""
    config = md_config(steps)
    atoms = cu(n_atoms)
    kind = neighbour_kind(atoms, config, model.config.r_max)
    atoms = standard_frame(atoms) if kind == MINIMUM_IMAGE else atoms.copy()
    cfg, n_species = model.config, len(model.stats.elements)
    dtype = network_dtype(cfg.precision)
    out: dict[str, np.ndarray] = {}
    with x64(), quiet():
        engine = engine_for(model, atoms, config, kind)  # what run_md builds
        pairs = engine.pairs
        variables = jax.device_put(model.variables)
        t0 = time.perf_counter()
        state, nbrs = warm_start(engine, atoms, variables, steps)
        warm_s = time.perf_counter() - t0
        start, end = jnp.asarray(0), jnp.asarray(steps)
        R, cell = state.position, jnp.asarray(pairs.cell)
        Z = jnp.asarray(atoms.numbers, jnp.int32)
        structure = functools.partial(pairs.structure, Z=Z)
        species = jnp.asarray(model.stats.species_table())[Z]
        rep = representation(cfg, n_species, dtype)
        readout = Readout(cfg.hidden, cfg.activation, 1, dtype)
        params = variables.params

        @jax.jit
        def pairs_of(R, nbrs):
            s = structure(R, nbrs, cell=cell)
            return pair_vectors(s.positions, s.offsets, s.idx_j, zero_strain())

        s = jax.jit(lambda R, nbrs: structure(R, nbrs, cell=cell))(R, nbrs)
        idx_j, pair_mask = s.idx_j, s.pair_mask

        def descriptor(p, dr):
            return rep.apply({"params": p}, dr, species, idx_j, pair_mask)

        def head(p, x):
            return readout.apply({"params": p}, x)

        def fwd_bwd(f, x, p):
            y, vjp = jax.vjp(lambda x: f(p, x), x)
            return y, vjp(jnp.cos(y))

        energy = dynamics_energy(predictor(model, "energy"), structure, cell)
        record = predictor(model, "forces", stress=True)

        dr = pairs_of(R, nbrs)
        feats = jax.jit(descriptor)(params["representation"], dr)
        t = functools.partial(best, repeats=repeats)
        prep, pread = params["representation"], params["readout"]
        out["pair vectors"] = t(pairs_of, R, nbrs)
        out["descriptor"] = t(lambda x, p: descriptor(p, x), dr, prep)
        out["readout"] = t(lambda x, p: head(p, x), feats, pread)
        out["energy"] = t(energy, R, nbrs, variables)
        out["energy + forces"] = t(jax.grad(energy), R, nbrs, variables)
        desc_fb = t(functools.partial(fwd_bwd, descriptor), dr, prep)
        head_fb = t(functools.partial(fwd_bwd, head), feats, pread)
        out["backward"] = out["energy + forces"] - out["energy"]
        out["  descriptor bwd"] = desc_fb - out["descriptor"]
        out["  readout bwd"] = head_fb - out["readout"]
        update = jax.jit(lambda nbrs, R: pairs.update(nbrs, R, cell))
        out["neighbour check"] = t(lambda R, nbrs: update(nbrs, R), R, nbrs)
        rebuild = t(lambda R, nbrs: update(nbrs, R), R, forced_rebuild(nbrs, kind))
        rebuilt = jax.jit(pairs.rebuilt)
        if bool(rebuilt(nbrs, update(nbrs, R))) or not bool(
            rebuilt(nbrs, update(forced_rebuild(nbrs, kind), R))
        ):
            raise RuntimeError("the forced rebuild did not rebuild (or the check did)")
        frame = t(lambda R, nbrs, v: record(v, structure(R, nbrs, cell=cell)), R, nbrs, variables)

        # Rebuilds per step, over single steps of the engine from the warm state.
        n_rebuilds, st, nb = 0, state, nbrs
        for k in range(count_steps):
            c = engine.chunk(variables, st, nb, jnp.asarray(steps + k), jnp.asarray(steps + k + 1))
            n_rebuilds += int(rebuilt(nb, c.nbrs))
            st, nb = c.state, c.nbrs
        per_step = n_rebuilds / count_steps
        out["neighbour rebuild (amortised)"] = per_step * (rebuild + out["energy + forces"])
        out["kept frame (amortised)"] = frame / config.sampling_rate

        def chunk():
            return engine.chunk(variables, state, nbrs, start, end)

        out["MD step"] = np.min([_timed(chunk) for _ in range(repeats_chunk(repeats))], 0) / steps
        out["residual: step - parts"] = (
            out["MD step"]
            - out["energy + forces"]
            - out["neighbour check"]
            - out["neighbour rebuild (amortised)"]
            - out["kept frame (amortised)"]
        )

        idx = np.asarray(nbrs.idx)
        filled = idx < n_atoms
        r = np.linalg.norm(np.asarray(dr), axis=-1)
        slots = {
            "model": name,
            "atoms": n_atoms,
            "list": kind,
            "K allocated": int(idx.shape[1]),
            "filled (r_max+skin)": float(filled.sum(1).mean()),
            "within r_max": float(((r < cfg.r_max) & filled).sum(1).mean()),
        }
        slots["padding %"] = 100 * (1 - slots["within r_max"] / slots["K allocated"])
        slots["rebuilds/100 steps"] = 100 * per_step
        slots["neighbour rebuild ms"] = 1e3 * float(rebuild[0])
        slots["kept frame ms"] = 1e3 * float(frame[0])

    step = out["MD step"]
    rows = [
        {
            "model": name,
            "atoms": n_atoms,
            "part": part,
            "ms": 1e3 * v[0],
            "us/atom": 1e6 * v[0] / n_atoms,
            "% of step": 100 * v[0] / step[0],
            "cpu ms": 1e3 * v[1],
            "cpu %": 100 * v[1] / step[1],
        }
        for part, v in out.items()
    ]
    raw = {
        part: {"wall_s": float(v[0]), "cpu_s": None if np.isnan(v[1]) else float(v[1])}
        for part, v in out.items()
    }
    return rows, slots, {**raw, "warm-up s": warm_s}


def _timed(fn) -> list[float]:
    t0, c0 = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn())
    return [time.perf_counter() - t0, time.process_time() - c0]


def repeats_chunk(repeats: int) -> int:
    return max(2, min(repeats, 3))


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="108,864")
    p.add_argument("--models", default="gmnn,equivmp")
    p.add_argument("--repeats", type=int, default=3, help="rounds per part (minimum taken)")
    p.add_argument("--quick", action="store_true", help="smoke run: 108 atoms, 2 repeats")
    p.add_argument("--out", default="profile_md", help="result name under bench/results")
    return p.parse_args()


STEPS = {
    **{("gmnn", 108): 100, ("gmnn", 256): 100, ("gmnn", 864): 50},
    **{("gmnn_apax", 256): 100, ("gmnn_apax", 864): 50},
    **{("equivmp", 108): 50, ("equivmp", 864): 20},
}
"""Steps per chunk (a kept frame every min(50, steps) steps)."""
COUNT_STEPS = {108: 40, 256: 30, 864: 20}


def main() -> None:
    args = arguments()
    logging.basicConfig(level=logging.WARNING)
    sizes = [108] if args.quick else [int(s) for s in args.sizes.split(",")]
    repeats = 2 if args.quick else args.repeats
    makers = {"gmnn": reference_model, "gmnn_apax": apax_size_model, "equivmp": equivmp_model}
    rows, slots, raw = [], [], {}
    t_start = time.perf_counter()
    for name in args.models.split(","):
        model = makers[name]()
        for n in sizes:
            steps = 20 if args.quick else STEPS[(name, n)]
            count = 20 if args.quick else COUNT_STEPS.get(n, 20)
            r, s, out = profile(name, model, n, steps, repeats, count)
            rows += r
            slots.append(s)
            raw[f"{name}_{n}"] = {"seconds": out, "slots": s, "steps_per_chunk": steps}
            print(f"{name} {n} atoms done ({time.perf_counter() - t_start:.0f} s)", flush=True)
    print()
    print("per MD step: wall time (min over repeats) and this process's CPU time (all threads)")
    print(table(rows, ["model", "atoms", "part", "ms", "us/atom", "% of step", "cpu ms", "cpu %"]))
    print()
    print(
        table(
            slots,
            [
                "model",
                "atoms",
                "list",
                "K allocated",
                "filled (r_max+skin)",
                "within r_max",
                "padding %",
                "rebuilds/100 steps",
                "neighbour rebuild ms",
                "kept frame ms",
            ],
        )
    )
    load = os.getloadavg()
    took = time.perf_counter() - t_start
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {took:.0f} s")
    path = write_result(
        args.out,
        {
            "load_average_at_end": load,
            "profile": raw,
            "temperature_K": T,
            "skin": SKIN,
            "sampling_rate": RATE,
            "quick": args.quick,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
