"""EquivMP end to end, with no special case anywhere: a shallow ensemble trains with CRPS and
is calibrated, runs UDD MD in the JAX engine (whose forces equal the ASE calculator's), and
drives last-layer-gradient selection. Its physics (symmetries, finite differences, padding,
periodic images, smoothness) is tested with GMNN's in test_model.py."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from conftest import TINY_EQUIVMP, tiny_config
from test_select import brute_force

from apax_core.calculator import ApaxCalculator
from apax_core.config import MDConfig
from apax_core.data import from_atoms
from apax_core.md import read_trajectory, run_md
from apax_core.model_dir import load_model
from apax_core.select import select
from apax_core.select.features import compute_features
from apax_core.transforms import UDD, Calibration

CRPS = [
    {"quantity": "energy", "kind": "crps", "atoms_exponent": 1.0},
    {"quantity": "forces", "kind": "crps"},
]


@pytest.fixture(scope="module")
def trained(data_files, tmp_path_factory):
    model = {**TINY_EQUIVMP, "ensemble": {"kind": "shallow", "n_members": 3}}
    job = tiny_config(
        tmp_path_factory.mktemp("equivmp") / "m", data_files, n_epochs=4, model=model, loss=CRPS
    )
    return job.run()


def test_shallow_equivmp_trains_with_crps_and_is_calibrated(trained):
    import csv

    with open(trained / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    losses = [float(r["train_loss"]) for r in rows]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    model = load_model(trained)
    assert model.config.kind == "equivmp"
    assert Calibration.load(trained) == model.calibration and not model.calibration.is_identity


def test_udd_md_and_selection(trained, tmp_path):
    model = load_model(trained)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 3, 3))
    udd = {"height": 0.3, "width": 0.05}
    config = MDConfig(
        temperature={"kind": "constant", "T": 600.0},
        dt=2.0,
        duration=120.0,
        n_inner=20,
        sampling_rate=10,
        udd=udd,
        checks=[{"kind": "energy_uncertainty", "threshold": 10.0, "per_atom": True}],
    )
    result = run_md(model, atoms, config, tmp_path / "md")
    frames = read_trajectory(result.trajectory)
    assert len(frames) == 6 and not result.status["stopped"]
    # The engine (jax-md neighbour list, fractional coordinates) and the ASE calculator (vesin
    # list) agree on the biased energy, forces and uncertainties of a moved frame.
    ref = frames[-1].copy()
    ref.calc = ApaxCalculator(model, transforms=[UDD(udd["height"], udd["width"])], skin=0.0)
    np.testing.assert_allclose(
        ref.get_potential_energy(), frames[-1].get_potential_energy(), rtol=1e-6
    )
    np.testing.assert_allclose(ref.get_forces(), frames[-1].get_forces(), atol=1e-5)

    pool = [from_atoms(f) for f in frames]
    train = [from_atoms(frames[0])]
    picked = select(model, train, pool, 3)
    pool_f = compute_features(model, pool)
    train_f = compute_features(model, train)
    assert picked.indices.tolist() == brute_force(train_f, pool_f, 3)[0]
    assert 0 not in picked.indices  # the training frame itself is never worth labelling
