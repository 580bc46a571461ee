"""EquivMP end to end through the workflow nodes, with no special case anywhere: a shallow
ensemble trains with CRPS and is calibrated (Train), runs UDD MD with two walkers in the JAX
engine, whose forces equal the ASE calculator's (MD), and drives last-layer-gradient selection
(Select), in a real DVC repository. Its physics (symmetries, finite differences, padding,
periodic images, smoothness) is tested with GMNN's in test_model.py."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import zntrack
from conftest import TINY_EQUIVMP
from test_nodes import TRAIN, init_repo, inside, repro
from test_select import brute_force

import apax_nodes as an
from apax_core.calculator import ApaxCalculator
from apax_core.data import from_atoms, read_frames
from apax_core.select.features import compute_features
from apax_core.transforms import UDD, Calibration
from apax_nodes.project import build

CRPS = [
    {"quantity": "energy", "kind": "crps", "atoms_exponent": 1.0},
    {"quantity": "forces", "kind": "crps"},
]


UDD_SETTINGS = {"height": 0.3, "width": 0.05}
MD_SPEC = {
    "temperature": {"kind": "constant", "T": 600.0},
    "dt": 2.0,
    "duration": 120.0,
    "n_inner": 20,
    "sampling_rate": 10,
    "udd": UDD_SETTINGS,
    "checks": [{"kind": "energy_uncertainty", "threshold": 10.0, "per_atom": True}],
}


@pytest.fixture(scope="module")
def repo(data_files, tmp_path_factory):
    """Train -> MD (2 walkers, UDD) -> Select with a shallow EquivMP ensemble."""
    root = init_repo(tmp_path_factory.mktemp("equivmp") / "project")
    shutil.copy(data_files["train"], root / "train.extxyz")
    model = {**TINY_EQUIVMP, "ensemble": {"kind": "shallow", "n_members": 3}}
    with inside(root):
        project = zntrack.Project()
        with project:
            data = an.LoadData(file="train.extxyz")
            spec = {**TRAIN, "model": model, "loss": CRPS}  # validated on a held-out 10 %
            train = an.Train(data=data.frames, config=spec)
            crystal = an.BuildBulk(element="Cu", repeat=[3, 3, 3])
            md = an.MD(model=train, data=crystal.frames, n_walkers=2, config=MD_SPEC)
            an.Select(model=train, pool=md.frames, train_data=data.frames, n=3)
        build(project)
    repro(root)
    return root


def test_shallow_equivmp_trains_with_crps_and_is_calibrated(repo):
    with open(repo / "nodes/Train/model/log.csv") as fh:
        losses = [float(r["train_loss"]) for r in csv.DictReader(fh)]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    with inside(repo):
        model = zntrack.from_rev("Train").get_model()
    assert model.config.kind == "equivmp"
    assert Calibration.load(repo / "nodes/Train/model") == model.calibration
    assert not model.calibration.is_identity


def test_udd_md_walkers_and_selection(repo, data_files):
    with inside(repo):
        model = zntrack.from_rev("Train").get_model()
        md, picked = zntrack.from_rev("MD"), zntrack.from_rev("Select").selected_ids
        frames, status = md.frames, md.status
    assert [f.info["walker"] for f in frames] == [0] * 6 + [1] * 6
    assert status["n_walkers"] == 2 and not status["stopped"]
    # The engine (jax-md neighbour list, fractional coordinates) and the ASE calculator (vesin
    # list) agree on the biased energy, forces and uncertainties of a moved frame.
    ref = frames[-1].copy()
    transforms = [UDD(UDD_SETTINGS["height"], UDD_SETTINGS["width"])]
    ref.calc = ApaxCalculator(model, transforms=transforms, skin=0.0)
    np.testing.assert_allclose(
        ref.get_potential_energy(), frames[-1].get_potential_energy(), rtol=1e-6
    )
    np.testing.assert_allclose(ref.get_forces(), frames[-1].get_forces(), atol=1e-5)
    pool = [from_atoms(f) for f in frames]
    train = [from_atoms(a) for a in read_frames(data_files["train"])]
    features = compute_features(model, train + pool)  # one batch shape: one compilation
    expected = brute_force(features[: len(train)], features[len(train) :], 3)[0]
    assert picked == expected
