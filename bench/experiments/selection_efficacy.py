"""Does selection beat random? Test force error against labelled structures for last-layer-
gradient max-distance, max-uncertainty and random selection, all drawing from the same pool.

    python bench/experiments/selection_efficacy.py [--quick] [--seeds 3] [--rounds 6]

System: a Cu/Ag alloy (2x2x2 fcc conventional cell, a = 3.75 A, 8 of 32 sites Ag, one
vacancy; 31 atoms), labelled by ASE's EMT. Pool, test and validation sets are EMT Langevin
MD at 300, 600, 900 and 1200 K from differently seeded starts (the pool: one trajectory per
temperature, every 20th step). Each run starts from the same 8 structures at 300 K and adds
``--per-round`` selected pool structures per round; after each round a shallow GMNN ensemble
(4 members, CRPS) is trained from scratch on what is labelled, calibrated on the fixed
validation set, and its force MAE on the test set is recorded. A run's seed sets the model's
initialisation, the batch order and the random picks; the pool is the same for every run.

Writes bench/results/experiments/selection_efficacy.{json,png}.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import matplotlib
import numpy as np
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from experiment import parser, settings, write_json
from pydantic import TypeAdapter

from apax_core.config import SelectionMethod, TrainConfig
from apax_core.data import from_atoms
from apax_core.evaluate import evaluate
from apax_core.model_dir import load_model
from apax_core.select import select
from apax_core.train.trainer import train

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TEMPERATURES = (300.0, 600.0, 900.0, 1200.0)
METHODS = {
    "max_distance": {"kind": "max_distance"},
    "max_uncertainty": {"kind": "max_uncertainty", "quantity": "forces"},
    "random": {"kind": "random"},
}
MODEL = {
    "r_max": 4.5,
    "n_basis": 6,
    "n_radial": 4,
    "hidden": [32, 32],
    "ensemble": {"kind": "shallow", "n_members": 4},
}
LOSS = [
    {"quantity": "energy", "kind": "crps", "weight": 1.0, "atoms_exponent": 1.0},
    {"quantity": "forces", "weight": 1.0},
]


def alloy(seed: int, repeat: int = 2):
    """fcc Cu/Ag, a quarter of the sites Ag, one vacancy (31 atoms; 107 with ``repeat=3``)."""
    atoms = bulk("Cu", "fcc", a=3.75, cubic=True).repeat((repeat,) * 3)
    rng = np.random.default_rng(seed)
    atoms.numbers[rng.choice(len(atoms), len(atoms) // 4, replace=False)] = 47
    del atoms[int(rng.integers(len(atoms)))]
    return atoms


def emt_md(T: float, n_frames: int, every: int, seed: int) -> list:
    """EMT-labelled frames of Langevin MD at ``T``, every ``every`` steps of 2 fs after an
    equilibration of ``10 * every`` steps."""
    atoms = alloy(seed)
    atoms.calc = EMT()
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=T, rng=rng)
    dyn = Langevin(atoms, 2.0 * units.fs, temperature_K=T, friction=0.02, rng=rng)
    dyn.run(10 * every)
    return sampled(dyn, n_frames, every)


def sampled(dyn, n_frames: int, every: int) -> list:
    """Every ``every``-th step of ASE dynamics ``dyn``, labelled by its calculator."""
    frames = []
    for _ in range(n_frames):
        dyn.run(every)
        frames.append(labelled_copy(dyn.atoms))
    return frames


def labelled_copy(atoms):
    """A copy carrying the energy and forces of ``atoms``'s calculator."""
    frame = atoms.copy()
    frame.calc = SinglePointCalculator(
        frame, energy=atoms.get_potential_energy(), forces=atoms.get_forces()
    )
    return frame


def datasets(pool_per_T: int, test_per_T: int, every: int = 20) -> dict[str, list]:
    """Initial (8 at 300 K), validation (4 per T), test and pool sets, seeded apart; MD frames
    ``every`` steps apart (--quick: 2)."""
    sets = {"initial": emt_md(300.0, 8, every, seed=1000)}
    for name, n, base in (("val", 4, 2000), ("test", test_per_T, 3000), ("pool", pool_per_T, 0)):
        sets[name] = [a for k, T in enumerate(TEMPERATURES) for a in emt_md(T, n, every, base + k)]
    return sets


def trained_model(frames: list, val: list, epochs: int, seed: int, directory: Path):
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
    return load_model(train(spec, directory, *structures, progress_bar=False))


def run(method: str, seed: int, sets: dict, args, root: Path) -> list[dict]:
    """One active-learning run: per round the labelled count and the test errors."""
    labelled, remaining = list(sets["initial"]), list(range(len(sets["pool"])))
    pool_s = [from_atoms(a) for a in sets["pool"]]
    test_s = [from_atoms(a) for a in sets["test"]]
    config = {**METHODS[method], **({"seed": seed} if method == "random" else {})}
    rows = []
    for r in range(args.rounds + 1):
        model = trained_model(
            labelled, sets["val"], args.epochs, seed, root / f"{method}{seed}_{r}"
        )
        m = evaluate(model, test_s)
        rows.append(
            {
                "round": r,
                "n_labelled": len(labelled),
                "forces_mae": m["forces_mae"],
                "energy_mae": m["energy_mae"],
            }
        )
        logging.info("%s seed %d round %d: %s", method, seed, r, rows[-1])
        if r == args.rounds:
            break
        method_config = TypeAdapter(SelectionMethod).validate_python(config)
        train_s = [from_atoms(a) for a in labelled]
        candidates = [pool_s[i] for i in remaining]
        picked = select(model, train_s, candidates, args.per_round, method_config)
        chosen = [remaining[i] for i in picked.indices]
        labelled += [sets["pool"][i] for i in chosen]
        remaining = [i for i in remaining if i not in set(chosen)]
    return rows


def summary(runs: dict[str, list[list[dict]]]) -> dict:
    """Per method: labelled counts, mean and standard deviation of the test force MAE over
    seeds, and the labels it needs to reach random selection's final mean error."""
    out = {}
    for method, seeds in runs.items():
        f = np.array([[r["forces_mae"] for r in rows] for rows in seeds])
        out[method] = {
            "n_labelled": [r["n_labelled"] for r in seeds[0]],
            "forces_mae_mean": f.mean(0).tolist(),
            "forces_mae_std": f.std(0).tolist(),
        }
    target = out["random"]["forces_mae_mean"][-1]
    for m in out.values():
        m["labels_to_random_final"] = labels_needed(m["n_labelled"], m["forces_mae_mean"], target)
        m["label_ratio_vs_random"] = (
            None
            if m["labels_to_random_final"] is None
            else m["labels_to_random_final"] / out["random"]["n_labelled"][-1]
        )
    return out


def labels_needed(n: list[int], mae: list[float], target: float) -> float | None:
    """Labelled count at which the curve first reaches ``target`` (linear between rounds)."""
    for k in range(len(n)):
        if mae[k] <= target:
            if k == 0:
                return float(n[0])
            t = (mae[k - 1] - target) / (mae[k - 1] - mae[k])
            return float(n[k - 1] + t * (n[k] - n[k - 1]))
    return None


def plot(result: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for method, m in result.items():
        mean, std = np.array(m["forces_mae_mean"]), np.array(m["forces_mae_std"])
        ax.plot(m["n_labelled"], mean, marker="o", label=method.replace("_", " "))
        ax.fill_between(m["n_labelled"], mean - std, mean + std, alpha=0.2)
    ax.set(xlabel="labelled structures", ylabel="test force MAE (meV/A)", yscale="log")
    ax.set_title("Cu/Ag + vacancy, EMT, 300-1200 K (mean +- std over seeds)", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = parser(__doc__, "1 seed, 1 round of 4, 5 epochs, a pool of 8")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--per-round", type=int, default=8)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--pool-per-T", type=int, default=50)
    p.add_argument("--test-per-T", type=int, default=25)
    args = p.parse_args()
    if args.quick:
        args.seeds, args.rounds, args.per_round, args.epochs = 1, 1, 4, 5
        args.pool_per_T, args.test_per_T = 2, 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("apax_core").setLevel(logging.WARNING)
    start = time.perf_counter()
    sets = datasets(args.pool_per_T, args.test_per_T, every=2 if args.quick else 20)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            m: [run(m, seed, sets, args, Path(tmp)) for seed in range(args.seeds)] for m in METHODS
        }
    result = summary(runs)
    payload = {
        "settings": settings(args),
        "wall_s": time.perf_counter() - start,
        "summary": result,
        "runs": runs,
    }
    stem = write_json(args, "selection_efficacy", payload)
    plot(result, stem.with_suffix(".png"))
    for method, m in result.items():
        curve = " ".join(f"{v:.0f}" for v in m["forces_mae_mean"])
        print(
            f"{method:>16}: F MAE {curve} meV/A; labels to random's final error: "
            f"{m['labels_to_random_final']} (ratio {m['label_ratio_vs_random']})"
        )
    print(f"wrote {stem}.json and .png")


if __name__ == "__main__":
    main()
