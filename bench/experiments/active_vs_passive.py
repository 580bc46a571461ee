"""Active against passive learning: the default loop (UDD MD + max-distance selection) against
plain MD + random selection, the two mixed arms, and the active arm with a tuned UDD bias,
from the same start on equal label budgets.

    python bench/experiments/active_vs_passive.py [--quick] [--seeds 3] [--rounds 4]

System: the default project's fcc Cu with a vacancy (3x3x3 cubic cell, a = 3.61 A, 107 atoms),
labelled by ASE's EMT. Start: 12 rattled (0.12 A) and strained (2 %) copies, 9 for training
and 3 for validation; iteration 0 is one scratch model per seed (150 epochs) that all the
arms share. Each round runs one MD walker of the current model (Langevin, 300 <-> 900 K over
2 ps, a frame every 20 fs, stopped on energy uncertainty as in the default loop) with or
without the UDD bias, selects ``--per-round`` frames by max-distance or at random, labels them
with EMT (6 to training, 2 to validation) and warm-starts the next model (60 epochs). A walker
that leaves fewer frames than twice the picks is followed by another (new seed, at most 3).
The default loop's bias (A = 0.5 eV, B = 1 eV) is nearly flat for 107 atoms; ``active_tuned``
uses A = 1 eV and udd.py's width (half deep at 3x the median training uncertainty).

Test sets, all EMT-labelled: in-distribution (EMT MD at 300, 600 and 900 K), hot (EMT MD at
1.5x the top temperature, 1350 K) and rare: the vacancy hop (NEB, EMT, 5 images, plus rattled
copies) and a Cu(111) slab (EMT MD at 600 K). The final model of each arm then runs plain MD
at 1350 K (``--stability-ps``) and is judged unphysical when a sampled frame has its closest
pair below 0.7x the nearest-neighbour distance or the temperature passes 3x the target.

Writes bench/results/experiments/active_vs_passive.{json,png}.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.mep import NEB
from ase.optimize import FIRE
from continuous_learning import emt_labels
from experiment import parser, settings, write_json
from matplotlib.figure import Figure
from pydantic import TypeAdapter
from selection_efficacy import LOSS, MODEL, labelled_copy, labels_needed, sampled
from udd import width_for

from apax_core.config import MDConfig, SelectionMethod, TrainConfig
from apax_core.data import from_atoms
from apax_core.data.sampling import bootstrap
from apax_core.evaluate import evaluate
from apax_core.md import read_trajectory
from apax_core.md.run import run_md
from apax_core.md.walkers import run_walkers
from apax_core.model_dir import load_model
from apax_core.select import select
from apax_core.train.trainer import train

A = 3.61
NN = A / np.sqrt(2.0)
"""Nearest-neighbour distance of fcc Cu (A): the equilibrium distance of the stability test."""
T_LOW, T_HIGH = 300.0, 900.0
T_HOT = 1.5 * T_HIGH
ARMS = {
    "active": ("default", "max_distance"),
    "udd_random": ("default", "random"),
    "plain_maxdist": (None, "max_distance"),
    "passive": (None, "random"),
    "active_tuned": ("tuned", "max_distance"),
}
"""Arm: (UDD bias of the sampling MD: the default loop's, tuned or none; selection method)."""
MD = {
    "dynamics": {"kind": "langevin", "friction": 0.01},
    "temperature": {"kind": "oscillating", "T_low": T_LOW, "T_high": T_HIGH, "period": 2000.0},
    "dt": 2.0,
    "n_inner": 100,
    "sampling_rate": 10,
    "skin": 0.4,
    "extra_capacity": 8,
    "checks": [{"kind": "energy_uncertainty", "threshold": 0.05, "per_atom": True}],
}
UDD = {"height": 0.5, "width": 1.0}
"""The default loop's bias: for 107 atoms and 4 members nearly flat (E_b ~ -A s^2 / 428 eV^2)."""
TUNED_HEIGHT = 1.0
"""A (eV) of the tuned bias, whose width is udd.py's: half deep at 3x the median training s."""
TEST_SETS = ("in_distribution", "hot", "rare", "neb", "slab")


def crystal():
    atoms = bulk("Cu", "fcc", a=A, cubic=True).repeat((3, 3, 3))
    del atoms[0]
    return atoms


def emt_md(atoms, T: float, n: int, every: int, seed: int) -> list:
    """EMT-labelled frames of Langevin MD of ``atoms`` at ``T`` after ``10 * every`` steps."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=T, rng=rng)
    dyn = Langevin(atoms, 2.0 * units.fs, temperature_K=T, friction=0.02, rng=rng)
    dyn.run(10 * every)
    return sampled(dyn, n, every)


def relaxed(atoms, steps: int):
    atoms = atoms.copy()
    atoms.calc = EMT()
    FIRE(atoms, logfile=None).run(fmax=0.05, steps=steps)
    return atoms


def neb_path(n_images: int, steps: int) -> list:
    """Images of the vacancy hop (a neighbour of the vacancy into it), EMT NEB, interior only."""
    perfect = bulk("Cu", "fcc", a=A, cubic=True).repeat((3, 3, 3))
    d = perfect.get_distances(0, range(1, len(perfect)), mic=True)
    j = 1 + int(np.argmin(d))
    start = perfect.copy()
    del start[0]
    end = start.copy()
    end.positions[j - 1] = perfect.positions[0]
    images = [relaxed(start, steps)]
    images += [images[0].copy() for _ in range(n_images)] + [relaxed(end, steps)]
    for image in images[1:-1]:
        image.calc = EMT()
    neb = NEB(images)
    neb.interpolate(method="idpp", mic=True)
    FIRE(neb, logfile=None).run(fmax=0.1, steps=steps)
    return [labelled_copy(a) for a in images[1:-1]]


def rattled(frames: list, copies: int, sigma: float, seed: int) -> list:
    copies_ = bootstrap(frames, copies * len(frames), sigma, 0.0, seed)
    return emt_labels(copies_)


def datasets(args) -> dict[str, list]:
    """Initial training/validation frames and the test sets (see the module docstring)."""
    seeds = emt_labels(bootstrap([crystal()], 12, 0.12, 0.02, 0))
    every = 2 if args.quick else 20
    n = args.test_per_T
    sets = {"initial": seeds[:9], "val": seeds[9:]}
    sets["in_distribution"] = [
        a
        for k, T in enumerate((300.0, 600.0, 900.0))
        for a in emt_md(crystal(), T, n, every, 10 + k)
    ]
    sets["hot"] = emt_md(crystal(), T_HOT, n, every, 20)
    path = neb_path(args.neb_images, 20 if args.quick else 200)
    sets["neb"] = path + rattled(path, args.neb_copies, 0.05, 1)
    slab = fcc111("Cu", size=(3, 3, 4), a=A, vacuum=6.0, periodic=True)
    sets["slab"] = emt_md(slab, 600.0, n, every, 30)
    sets["rare"] = sets["neb"] + sets["slab"]
    return sets


def fit(frames, val, epochs: int, seed: int, directory: Path, base: Path | None) -> Path:
    spec = TrainConfig.model_validate(
        {
            "n_epochs": epochs,
            "seed": seed,
            "model": MODEL,
            "loss": LOSS,
            "data": {"batch_size": 4, "shuffle_seed": seed},
        }
    )
    structures = [from_atoms(a) for a in frames], [from_atoms(a) for a in val]
    train(spec, directory, *structures, base_model=base, progress_bar=False)
    return directory


def sample(model_dir: Path, udd: dict | None, args, directory: Path, seed: int):
    """Frames of MD walkers (one, then more while fewer than twice the picks; at most 3)."""
    spec = {**MD, "duration": 2.0 * args.md_steps, "udd": udd}
    frames, stopped = [], []
    for k in range(3):
        config = MDConfig.model_validate({**spec, "seed": seed + 1000 * k})
        w, status = run_walkers(model_dir, [crystal()], config, directory / f"w{k}")[0]
        path = directory / f"w{k}" / w.name / "md.h5"
        frames += read_trajectory(path) if path.is_file() else []
        stopped.append(status["stopped"])
        if len(frames) >= 2 * args.per_round:
            break
    return frames, {"n_walkers": len(stopped), "n_stopped": sum(stopped), "n_pool": len(frames)}


def scores(model_dir: Path, tests: dict) -> dict:
    model = load_model(model_dir)
    out = {}
    for name, structures in tests.items():
        m = evaluate(model, structures)
        out[f"{name}_forces_mae"], out[f"{name}_energy_mae"] = m["forces_mae"], m["energy_mae"]
    return out


def pick(model_dir: Path, method: str, seed: int, known: list, pool: list, n: int) -> list:
    config = {"kind": method, **({"seed": seed} if method == "random" else {})}
    method_config = TypeAdapter(SelectionMethod).validate_python(config)
    known_s, pool_s = [from_atoms(a) for a in known], [from_atoms(a) for a in pool]
    return list(select(load_model(model_dir), known_s, pool_s, n, method_config).indices)


def arm(name: str, seed: int, base: tuple, tests: dict, args, root: Path) -> tuple[list, Path]:
    """Rounds 1.. of one arm from the seed's shared iteration-0 model; rows and final model."""
    bias, method = ARMS[name]
    model_dir, train_set, val_set, first, tuned = base
    udd = {"default": UDD, "tuned": tuned, None: None}[bias]
    rows = [first]
    for r in range(1, args.rounds + 1):
        start = time.perf_counter()
        pool, md = sample(model_dir, udd, args, root / f"{name}{seed}_md{r}", 100 * seed + r)
        chosen = pick(model_dir, method, seed + 17 * r, train_set, pool, args.per_round)
        new = emt_labels([pool[k] for k in chosen])
        n_val = len(new) // 4
        train_set, val_set = train_set + new[n_val:], val_set + new[:n_val]
        model_dir = fit(
            train_set, val_set, args.warm_epochs, seed, root / f"{name}{seed}_{r}", model_dir
        )
        row = {"round": r, "n_labelled": len(train_set) + len(val_set), **md}
        rows.append(row | scores(model_dir, tests) | {"seconds": time.perf_counter() - start})
        logging.info("%s seed %d round %d: %s", name, seed, r, rows[-1])
    return rows, model_dir


def stability(model_dir: Path, args, directory: Path, seed: int) -> dict:
    """Plain MD of the model at T_HOT; the first unphysical sampled frame, if any."""
    config = MDConfig.model_validate(
        {
            "dynamics": {"kind": "langevin", "friction": 0.01},
            "temperature": {"kind": "constant", "T": T_HOT},
            "dt": 2.0,
            "duration": 1000.0 * args.stability_ps,
            "n_inner": 250,
            "sampling_rate": 25,
            "skin": 0.4,
            "extra_capacity": 8,
            "seed": seed,
            "checks": [{"kind": "max_temperature", "max_T": 3.0 * T_HOT}],
        }
    )
    start = time.perf_counter()
    result = run_md(load_model(model_dir), crystal(), config, directory, progress_bar=False)
    frames = read_trajectory(directory / "md.h5") if (directory / "md.h5").is_file() else []
    closest = [closest_pair(a) for a in frames]
    temps = [a.get_temperature() if a.has("momenta") else float("nan") for a in frames]
    bad = [
        k
        for k, (d, t) in enumerate(zip(closest, temps, strict=True))
        if not d >= 0.7 * NN or t > 3.0 * T_HOT
    ]
    status = result.status
    failed = bool(bad) or (status["stopped"] and status["reason"] is not None)
    return {
        "ps_run": float(status.get("time_fs", 0.0)) / 1000.0,
        "stable": not failed,
        "first_bad_ps": (bad[0] + 1) * 0.05 if bad else None,
        "stop_reason": status["reason"] if status["stopped"] else None,
        "min_closest_A": float(np.nanmin(closest)) if closest else None,
        "max_T_K": float(np.nanmax(temps)) if temps else None,
        "seconds": time.perf_counter() - start,
    }


def closest_pair(atoms) -> float:
    d = atoms.get_all_distances(mic=True)
    np.fill_diagonal(d, np.inf)
    return float(d.min())


def summary(runs: dict, stable: dict) -> dict:
    """Per arm and test set: the force MAE's mean and standard deviation over seeds per round;
    the labels each arm needs to reach the passive arm's final mean rare-set force MAE."""
    out = {}
    for name, seeds in runs.items():
        n = np.array([[r["n_labelled"] for r in rows] for rows in seeds], float)
        out[name] = {"n_labelled": n.mean(0).tolist()}
        for t in TEST_SETS:
            f = np.array([[r[f"{t}_forces_mae"] for r in rows] for rows in seeds])
            out[name][f"{t}_mean"], out[name][f"{t}_std"] = f.mean(0).tolist(), f.std(0).tolist()
        checks = stable.get(name, [])
        out[name]["stable"] = f"{sum(c['stable'] for c in checks)}/{len(checks)}"
    passive = out["passive"]
    n0, n_end = passive["n_labelled"][0], passive["n_labelled"][-1]
    target = passive["rare_mean"][-1]
    for m in out.values():
        need = labels_needed(m["n_labelled"], m["rare_mean"], target)
        m["labels_to_passive_rare"] = need
        m["ratio_vs_passive"] = None if need is None else need / n_end
        m["added_ratio_vs_passive"] = None if need is None else (need - n0) / (n_end - n0)
    return out


def plot(result: dict, path: Path) -> None:
    fig = Figure(figsize=(11, 3.8))
    for ax, t in zip(fig.subplots(1, 3), ("in_distribution", "hot", "rare"), strict=True):
        for name, m in result.items():
            mean, std = np.array(m[f"{t}_mean"]), np.array(m[f"{t}_std"])
            ax.plot(m["n_labelled"], mean, marker="o", label=name)
            ax.fill_between(m["n_labelled"], mean - std, mean + std, alpha=0.15)
        ax.set(xlabel="labelled structures", ylabel=f"{t} force MAE (meV/A)", yscale="log")
        ax.legend(frameon=False, fontsize=8)
    fig.suptitle("Cu + vacancy, EMT: mean +- std over seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def one_seed(seed: int, sets: dict, tests: dict, args, root: Path) -> tuple[dict, dict]:
    """Every arm of one seed from its shared iteration-0 model; rows and stability checks."""
    model0 = fit(sets["initial"], sets["val"], args.epochs, seed, root / f"s{seed}_0", None)
    first = {"round": 0, "n_labelled": 12, **scores(model0, tests)}
    width, sigma = width_for(model0, sets["initial"])
    tuned = {"height": TUNED_HEIGHT, "width": width}
    base = (model0, list(sets["initial"]), list(sets["val"]), first, tuned)
    rows, checks = {"tuned_udd": tuned | {"median_train_sigma": sigma}}, {}
    for name in args.arms.split(","):
        rows[name], final = arm(name, seed, base, tests, args, root)
        if seed < args.stability_seeds:
            checks[name] = stability(final, args, root / f"{name}{seed}_hot", seed)
            logging.info("%s seed %d stability: %s", name, seed, checks[name])
    return rows, checks


def main() -> None:
    p = parser(__doc__, "active and passive, 1 seed, 1 round of 4, 40 MD steps, 0.1 ps check")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--per-round", type=int, default=8)
    p.add_argument("--epochs", type=int, default=150, help="iteration 0 (from scratch)")
    p.add_argument("--warm-epochs", type=int, default=60)
    p.add_argument("--md-steps", type=int, default=1000, help="per walker, 2 fs each")
    p.add_argument("--test-per-T", type=int, default=10)
    p.add_argument("--neb-images", type=int, default=5)
    p.add_argument("--neb-copies", type=int, default=3)
    p.add_argument("--stability-ps", type=float, default=20.0)
    p.add_argument("--stability-seeds", type=int, default=3, help="seeds with the MD check")
    p.add_argument("--arms", default=",".join(ARMS))
    args = p.parse_args()
    if args.quick:
        args.seeds, args.rounds, args.per_round, args.epochs, args.warm_epochs = 1, 1, 4, 3, 2
        args.md_steps, args.test_per_T, args.neb_images, args.neb_copies = 40, 2, 1, 1
        args.stability_ps, args.stability_seeds, args.arms = 0.1, 1, "active,passive"
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("apax_core").setLevel(logging.ERROR)
    start = time.perf_counter()
    sets = datasets(args)
    tests = {t: [from_atoms(a) for a in sets[t]] for t in TEST_SETS}
    runs, stable, tuned = {}, {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            rows, checks = one_seed(seed, sets, tests, args, Path(tmp))
            tuned.append(rows.pop("tuned_udd"))
            for name in rows:
                runs.setdefault(name, []).append(rows[name])
                if name in checks:
                    stable.setdefault(name, []).append(checks[name])
    result = summary(runs, stable)
    payload = {
        "settings": settings(args),
        "wall_s": time.perf_counter() - start,
        "test_sizes": {t: len(sets[t]) for t in TEST_SETS},
        "summary": result,
        "stability": stable,
        "tuned_udd": tuned,
        "runs": runs,
    }
    stem = write_json(args, "active_vs_passive", payload)
    plot(result, stem.with_suffix(".png"))
    for name, m in result.items():
        curve = " ".join(f"{v:.0f}" for v in m["rare_mean"])
        print(
            f"{name:>14}: rare F MAE {curve} meV/A; labels to passive's final: "
            f"{m['labels_to_passive_rare']} (ratio {m['ratio_vs_passive']}); stable {m['stable']}"
        )
    print(f"wrote {stem}.json and .png ({payload['wall_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
