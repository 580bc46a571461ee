"""A molecular liquid from scratch: 16 H2O labelled with GFN2-xTB, sampled at 1 bar.

Run in an empty directory with git and DVC initialised (it writes dvc.yaml, params.yaml and
zntrack.json there; needs tblite: pip install -e ".[xtb]"):

    python /path/to/example_project/water.py [--iterations 4]
    dvc repro                 # or: apax-nodes grow /path/to/example_project/water.py

Two boxes of 16 randomly placed and rotated molecules at 0.997 g/cm^3 (BuildLiquid). Seed
data, from the second box: 6 rattled copies with every largest force below 5 eV/A under xTB
after a short relaxation (BoundedBootstrap), not the 10-60 eV/A of a plain rattle, and 10
frames of xTB Langevin MD at 330 K (ReferenceMD; hydrogens of 4 amu in the dynamics, for
1.5 fs steps). Test data: the same MD from the first box; the loop never sees it. Each
iteration trains a shallow ensemble (warm-started), samples with 4 walkers of
uncertainty-driven NPT MD at 1 bar between 300 K and 360 K from the first box, selects 8
frames, labels them with xTB and grows the data; its models are calibrated on the loop's own
MD frames. After the loop, the last model runs up to
20 ps of NPT at 300 K and 1 bar: density and O-O g(r) (``final_LiquidStructure``).
"""

from __future__ import annotations

import argparse

import zntrack

import apax_nodes as an
from apax_nodes.grow import Until
from apax_nodes.loop import LoopSettings, build_loop
from apax_nodes.project import build

MODEL = {
    "r_max": 5.0,
    "n_basis": 6,
    "n_radial": 4,
    "hidden": [32, 32],
    "ensemble": {"kind": "shallow", "n_members": 4},
}
LOSS = [
    {"quantity": "energy", "kind": "crps", "weight": 1.0, "atoms_exponent": 1.0},
    {"quantity": "forces", "weight": 1.0},
]
TRAIN = {"n_epochs": 200, "model": MODEL, "loss": LOSS, "data": {"batch_size": 2}}
WARM_TRAIN = {**TRAIN, "n_epochs": 80}
NPT = {
    "kind": "npt_scr",
    "thermostat": {"kind": "langevin", "friction": 0.01},
    "tau_p": 500.0,
    "compressibility": 4.5e-5,
    "pressure": {"kind": "constant", "P": 1.01325},
}
MD_SETTINGS = {
    "dynamics": NPT,
    "temperature": {"kind": "oscillating", "T_low": 300.0, "T_high": 360.0, "period": 2000.0},
    "dt": 0.5,
    "duration": 4000.0,
    "n_inner": 200,
    "sampling_rate": 10,
    "udd": {"height": 0.2, "width": 1.0},
    "checks": [
        {"kind": "forces_uncertainty", "threshold": 2.0},
        {"kind": "volume", "max_factor": 1.5},
    ],
}
PRODUCTION = {
    **MD_SETTINGS,
    "temperature": {"kind": "constant", "T": 300.0},
    "duration": 20000.0,
    "n_inner": 1000,
    "sampling_rate": 100,
    "udd": None,
    "checks": [{"kind": "volume", "max_factor": 1.5}],
}
REFERENCE_MD = {
    "temperature": 330.0,
    "dt": 1.5,
    "masses": {"H": 4.0},  # same configurations, 3x longer steps than at 0.5 fs
    "equilibration": 240.0,
    "duration": 240.0,
    "sampling_rate": 16,
    "friction": 0.02,
}
"""xTB Langevin MD: 240 fs unsampled, then a frame every 24 fs (10 frames)."""
UNTIL = Until(patience=2, force_change_percent=10.0, max_iterations=8)


def main(n_iterations: int) -> None:
    xtb = an.XTBLabeller(method="GFN2-xTB")
    project = zntrack.Project()
    with project.group("data"):
        liquid = an.BuildLiquid(molecule="H2O", n_molecules=16, density=0.997, seed=0)
        other = an.BuildLiquid(molecule="H2O", n_molecules=16, density=0.997, seed=1)
        boot = an.BoundedBootstrap(
            data=other.frames,
            labeller=xtb,
            n=6,
            rattle={"H": 0.05, "O": 0.03},
            strain=0.0,  # a strained cell stretches the molecules too
            max_force=5.0,
            relax_steps=40,  # random molecules start at 6+ eV/A under xTB
            seed=0,
        )
        test = an.ReferenceMD(data=liquid.frames, labeller=xtb, **REFERENCE_MD, seed=1)
        thermal = an.ReferenceMD(data=other.frames, labeller=xtb, **REFERENCE_MD, seed=2)
        split = an.Split(data=boot.frames + thermal.frames, fractions=[0.75, 0.25, 0.0], seed=0)
    settings = LoopSettings(
        n_iterations=n_iterations,
        train=TRAIN,
        warm_train=WARM_TRAIN,
        md=MD_SETTINGS,
        n_walkers=4,
        n_select=8,
        val_fraction=0.25,
    )
    iterations = build_loop(
        project,
        settings,
        initial_data=split,
        test_data=test,
        start_structures=liquid,
        labeller=xtb,
        until=UNTIL,
    )
    with project.group("final"):
        md = an.MD(model=iterations[-1]["train"], data=liquid.frames, config=PRODUCTION)
        an.LiquidStructure(data=md.frames, pairs=[["O", "O"], ["O", "H"]], r_max=3.6)
    build(project)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=4)
    main(parser.parse_args().iterations)
