"""XLA's CPU library fusions against our workloads: MD, training steps, force uncertainty.

    python bench/xla_flags.py [--rounds 2] [--quick]

XLA's CPU backend (jaxlib 0.10) hands fusions to YNNPACK (``ynn_fusion`` ops in a profile);
``--xla_cpu_experimental_ynn_fusion_type`` picks which: dots with their element-wise
neighbours, element-wise ops, reductions. In the profile of a GMNN force call the largest op
was such a fusion: the pair-level pull-back (a few flops per pair and a reduction over 3 or 5
components) took 5-10 ms at 864 atoms. This runs each variant of the flag in its own
process, the variants alternating for ``--rounds`` rounds; each quantity is the median of its
rounds, and ``/default`` its ratio to jaxlib's default:

- ``md gmnn N``: our engine's NVT MD (us/atom/step, compilation excluded) with the GMNN of
  apax 0.14's default size (bench/profile_md.py, random weights), fcc Cu, 256 and 864 atoms;
- ``md equivmp 256``: the same with EquivMP at its defaults;
- ``train step``: one training step (forces in the loss) of that GMNN on 8 x 107 atoms of
  cu_bulk_train (ms, the fastest of 3 x 20 steps);
- ``single forces 864`` / ``shallow uncertainty 864``: bench/force_uncertainty.py's (a) and
  (c) (ms, fastest call) and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import DATA, table, write_result

VARIANTS = {
    "default": "",
    "individual_dot": "--xla_cpu_experimental_ynn_fusion_type=individual_dot",
    "none": "--xla_cpu_experimental_ynn_fusion_type=",
}
"""Variant -> the XLA flag its process runs with (``default``: jaxlib's own choice, with
apax_core's tuning (apax_core/xla_cpu.py) switched off; ``none`` is what that tuning sets)."""


def child(out_file: str, quick: bool) -> None:
    """One process's measurements, as JSON in ``out_file``."""
    import jax

    from apax_core.precision import x64

    steps = 20 if quick else 100
    out = {"xla_flags": os.environ.get("XLA_FLAGS", "")}  # as apax_core left them
    with x64():
        out.update(md_rows(steps, quick))
        out["train step (ms)"] = train_step_ms(quick)
        from force_uncertainty import measure

        t = measure(864, calls=3 if quick else 10, repeats=2)
        out["single forces 864 (ms)"] = 1e3 * t["single_forces"]
        out["shallow uncertainty 864 (ms)"] = 1e3 * t["shallow_unc"]
        out["uncertainty / single"] = t["shallow_unc"] / t["single_forces"]
    out["backend"] = jax.default_backend()
    Path(out_file).write_text(json.dumps(out))


def md_rows(steps: int, quick: bool) -> dict[str, float]:
    from md_speed import cu, jax_engine
    from profile_md import apax_size_model, equivmp_model

    gmnn, rows = apax_size_model(), {}
    for n in (256, 864):
        rows[f"md gmnn {n} (us/atom/step)"] = jax_engine(gmnn, cu(n), steps, udd=False)[0]
    equivmp_steps = max(10, steps // 5)
    rows["md equivmp 256 (us/atom/step)"] = jax_engine(
        equivmp_model(), cu(256), equivmp_steps, udd=False
    )[0]
    return rows


def train_step_ms(quick: bool) -> float:
    """Fastest training step (ms) of the apax-size GMNN on 8 x 107 atoms."""
    import jax
    import jax.numpy as jnp
    from vs_apax import GMNN_OURS, LR

    from apax_core.config import TrainConfig
    from apax_core.train import trainer
    from apax_core.train.data import load_training_data

    spec = TrainConfig.model_validate(
        {
            "n_epochs": 1,
            "data": {"batch_size": 8, "val_batch_size": 8},
            "model": GMNN_OURS,
            "optimizer": {"learning_rates": LR},
        }
    )
    data = load_training_data(spec, DATA / "cu_bulk_train.extxyz", DATA / "cu_bulk_val.extxyz")
    data = data.__class__(data.train[:160], data.val[:8], data.stats, None)
    setup, state = trainer._setup(spec, data)
    batches = setup.train.batches(8, spec.data.padding, shuffle=False, seed=0, epoch=0)
    placed = [setup.place.batch(b) for b in batches][: 5 if quick else 20]
    p, o, e = state.params, state.opt_state, state.ema
    decay, weight = jnp.asarray(0.0), jnp.asarray(1.0)
    jax.block_until_ready(setup.train_step(p, o, e, decay, weight, placed[0]))
    best = float("inf")
    for _ in range(3):
        for b in placed:
            start = time.perf_counter()
            p, o, e, _, _ = setup.train_step(p, o, e, decay, weight, b)
            jax.block_until_ready(p)
            best = min(best, time.perf_counter() - start)
    return 1e3 * best


def run_variant(name: str, work: Path, r: int, quick: bool) -> dict:
    out = work / f"{name}_{r}.json"
    flags = " ".join(x for x in (os.environ.get("XLA_FLAGS", ""), VARIANTS[name]) if x)
    env = {**os.environ, "XLA_FLAGS": flags, "APAX_XLA_TUNING": "off"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "_child", str(out)]
    if quick:
        cmd.append("--quick")
    subprocess.run(cmd, env=env, check=True)
    return json.loads(out.read_text())


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "_child":
        child(sys.argv[2], "--quick" in sys.argv)
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="few steps: only shows that it runs")
    args = p.parse_args()
    import tempfile

    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = list(VARIANTS) if r % 2 == 0 else list(VARIANTS)[::-1]
            for name in order:
                print(f"round {r + 1}/{args.rounds}: {name}", flush=True)
                runs[name].append(run_variant(name, Path(tmp), r, args.quick))
    keys = [k for k, v in runs["default"][0].items() if isinstance(v, float)]
    rows = []
    for key in keys:
        med = {name: statistics.median(x[key] for x in rs) for name, rs in runs.items()}
        row = {"quantity": key, **med}
        for name in VARIANTS:
            if name != "default":
                row[f"{name}/default"] = med[name] / med["default"]
        rows.append(row)
    columns = ["quantity", *VARIANTS, *(f"{n}/default" for n in VARIANTS if n != "default")]
    print(table(rows, columns))
    name = "xla_flags_quick" if args.quick else "xla_flags"
    result = {"variants": VARIANTS, "rounds": runs, "medians": rows}
    print(f"wrote {write_result(name, result)}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
