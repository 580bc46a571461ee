"""Batch selection: max-distance against brute force, feature maps against closed forms,
baselines, diagnostics, input errors, and the CLI."""

from __future__ import annotations

import csv
import dataclasses
import json
import math

import jax
import numpy as np
import pytest
from ase.build import bulk
from conftest import make_model, save_model_dir
from pydantic import TypeAdapter

from apax_core import cli
from apax_core.config import (
    MaxDistance,
    MaxUncertainty,
    PadBinned,
    RandomSelection,
    SelectionMethod,
)
from apax_core.data import DataError, Dataset, from_atoms, write_frames
from apax_core.model_dir import Model
from apax_core.precision import x64
from apax_core.select import (
    compute_features,
    max_distance_selection,
    min_squared_distances,
    projection_matrix,
    random_selection,
    select,
    spaced_top_k,
    write_diagnostics,
)
from apax_core.transforms import total_energies
from apax_core.transforms.features import descriptor_apply, feature_map

# ------------------------------------------------------------------------------------- helpers


def cells(n, seed=0, silver=False, repeat=(2, 1, 1)):
    """Rattled, strained fcc cells (unlabelled: selection needs no labels)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
        if silver:
            atoms.numbers[::3] = 47
        atoms.set_cell(atoms.cell * (1 + rng.uniform(-0.03, 0.03)), scale_atoms=True)
        atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
        out.append(atoms)
    return out


def structures(n, seed=0, **kw):
    return [from_atoms(a) for a in cells(n, seed, **kw)]


def brute_force(train, pool, n):
    """Eq. 12 by loops: pick the pool point whose nearest known point is farthest."""
    known = [t for t in train]
    picks, dists = [], []
    for _ in range(n):
        best, best_d = None, -1.0
        for p, x in enumerate(pool):
            if p in picks:
                continue
            if known:
                d = min(float(np.linalg.norm(x - y)) for y in known)
            else:  # empty training set: the point farthest from the pool mean starts
                d = float(np.linalg.norm(x - pool.mean(axis=0)))
            if d > best_d:
                best, best_d = p, d
        picks.append(best)
        dists.append(best_d if known else math.inf)
        known.append(pool[best])
    return picks, dists


@pytest.fixture(scope="module")
def cu_model():
    return make_model(elements=(29,))


@pytest.fixture(scope="module")
def shallow_model():
    return make_model(elements=(29,), ensemble={"kind": "shallow", "n_members": 3})


@pytest.fixture(scope="module")
def cu_cells():
    return structures(14, seed=3)


# --------------------------------------------------------------------------- max distance (eq. 12)


@pytest.mark.parametrize("n_train", [0, 1, 7])
def test_max_distance_equals_brute_force(n_train):
    rng = np.random.default_rng(n_train)
    train, pool = rng.normal(size=(n_train, 5)), rng.normal(size=(25, 5))
    for n in (1, 4, 25):  # 25: rank the whole pool
        picks, dists = max_distance_selection(train, pool, n)
        ref_picks, ref_dists = brute_force(train, pool, n)
        assert picks.tolist() == ref_picks
        np.testing.assert_allclose(dists, ref_dists, rtol=1e-10)
    assert np.all(np.diff(dists[1:]) <= 1e-12)  # non-increasing


def test_blocked_distances_equal_full_matrix():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(23, 6)), rng.normal(size=(17, 6))
    full = ((a[:, None] - b[None]) ** 2).sum(-1).min(1)
    for block in (1, 5, 17, 1000):
        np.testing.assert_allclose(min_squared_distances(a, b, block_elements=block), full)


def test_training_duplicates_are_never_chosen_while_distinct_points_remain():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(6, 4))
    distinct = rng.normal(size=(9, 4))
    pool = np.concatenate([train[:3], distinct, train[3:]])  # duplicates at 0-2 and 12-14
    order, dists = max_distance_selection(train, pool, len(pool))
    duplicates = {0, 1, 2, 12, 13, 14}
    assert set(order[:9].tolist()) == set(range(3, 12))
    assert set(order[9:].tolist()) == duplicates
    np.testing.assert_allclose(dists[9:], 0.0, atol=1e-6)


def test_training_set_seeds_the_distances_not_the_origin():
    """The reference's probe (its defect 1): it picks the near-duplicate [10, 0.1]."""
    train = np.array([[10.0, 0.0]])
    pool = np.array([[10.0, 0.1], [1.0, 0.0], [0.0, 0.0]])
    picks, dists = max_distance_selection(train, pool, 3)
    assert picks.tolist() == [2, 1, 0]
    np.testing.assert_allclose(dists, [10.0, 1.0, 0.1])


def test_selection_does_not_depend_on_pool_order():
    rng = np.random.default_rng(2)
    train = rng.normal(size=(4, 3))
    pool = np.concatenate([rng.normal(size=(12, 3)), train[:1], np.eye(3), np.eye(3)])  # ties
    for t in (train, train[:0]):
        picks, dists = max_distance_selection(t, pool, len(pool))
        for seed in range(3):
            perm = np.random.default_rng(seed).permutation(len(pool))
            p_picks, p_dists = max_distance_selection(t, pool[perm], len(pool))
            np.testing.assert_array_equal(pool[perm][p_picks], pool[picks])  # same structures
            np.testing.assert_allclose(p_dists, dists, rtol=1e-12, atol=1e-12)


def test_select_with_structures_does_not_depend_on_pool_order(cu_model, cu_cells):
    train, pool = cu_cells[:3], cu_cells[3:]
    sel = select(cu_model, train, pool, 5)
    perm = np.random.default_rng(0).permutation(len(pool))
    permuted = select(cu_model, train, [pool[i] for i in perm], 5)
    assert perm[permuted.indices].tolist() == sel.indices.tolist()
    np.testing.assert_allclose(permuted.scores, sel.scores, rtol=1e-9)


def test_select_never_picks_a_training_structure_while_others_remain(cu_model, cu_cells):
    train = cu_cells[:3]
    pool = [cu_cells[9], *train, *cu_cells[3:7]]  # pool 1-3 are the training structures
    sel = select(cu_model, train, pool, 5, rank_all=True)
    assert not {1, 2, 3} & set(sel.indices.tolist())
    assert len(sel.curve) == len(pool)
    np.testing.assert_allclose(sel.curve[-3:], 0.0, atol=1e-6)  # duplicates come last, at 0
    first = select(cu_model, [], pool, 2)  # no training set: the first pick is the outlier
    assert np.isinf(first.scores[0]) and first.to_json()["distances"][0] is None


def test_min_distance_stops(cu_model, cu_cells):
    rng = np.random.default_rng(3)
    train, pool = rng.normal(size=(3, 4)), rng.normal(size=(30, 4))
    _, all_dists = max_distance_selection(train, pool, len(pool))
    threshold = float(all_dists[6] + all_dists[7]) / 2  # between the 7th and 8th pick
    picks, dists = max_distance_selection(train, pool, 20, min_distance=threshold)
    assert len(picks) == 7 and np.all(dists >= threshold)
    # the API: the same picks whether or not the whole pool is ranked for the curve
    config = MaxDistance(min_distance=0.0)
    full = select(cu_model, cu_cells[:2], cu_cells[2:], 6, config, rank_all=True)
    cut = float(full.curve[3] + full.curve[4]) / 2
    for rank_all in (False, True):
        sel = select(
            cu_model,
            cu_cells[:2],
            cu_cells[2:],
            6,
            MaxDistance(min_distance=cut),
            rank_all=rank_all,
        )
        assert sel.indices.tolist() == full.indices[:4].tolist()


# ------------------------------------------------------------------------------- feature maps


def last_hidden(model: Model, params, s):
    """Per-atom last hidden activation h_a (N, F), by hand from the captured descriptor."""
    x = total_energies_per_atom(descriptor_apply(model.module), params, s)
    for i in range(len(model.config.hidden)):
        layer = params["readout"][f"dense_{i}"]
        x = jax.nn.silu(x @ layer["kernel"] + layer["bias"])
    return x


def total_energies_per_atom(apply, params, s):
    """The apply output per atom (N, ...) for one padded structure."""
    captured = {}

    def capture(p, *args):
        captured["out"] = apply(p, *args)
        return captured["out"]

    total_energies(capture, params, s.positions, np.zeros((3, 3)), s)
    return captured["out"]


@pytest.mark.parametrize(
    ("kind", "ensemble"),
    [("gmnn", None), ("gmnn", {"kind": "shallow", "n_members": 3}), ("equivmp", None)],
)
def test_last_layer_gradient_equals_the_analytic_form(kind, ensemble):
    """dE/db_m = (1/M) sum_a scale[Z_a], dE/dW_fm = (1/M) sum_a scale[Z_a] h_af."""
    model = make_model(elements=(29, 47), kind=kind, ensemble=ensemble)
    params = jax.tree.map(np.asarray, model.params)
    params["scale_shift"]["scale"] = np.array([0.7, 1.3])  # element-dependent scale
    model = dataclasses.replace(model, params=params)
    data = Dataset(structures(3, seed=5, silver=True), model.config.r_max)
    m = model.config.n_members
    with x64():
        batch = next(data.batches(3, PadBinned(), shuffle=False, seed=0))
        got = np.asarray(
            jax.jit(jax.vmap(feature_map(model, "last_layer_gradient"), (None, 0)))(params, batch)
        )
        hidden = jax.jit(lambda p, s: last_hidden(model, p, s))
        for b in range(3):
            s = jax.tree.map(lambda x, b=b: x[b], batch)
            mask = np.asarray(s.atom_mask)
            weight = params["scale_shift"]["scale"][np.where(np.asarray(s.Z) == 47, 1, 0)] * mask
            h = np.asarray(hidden(params, s))
            kernel = np.repeat((weight @ h)[:, None], m, axis=1) / m  # (F, M)
            bias = np.full(m, weight.sum() / m)
            np.testing.assert_allclose(got[b], np.concatenate([kernel.ravel(), bias]), rtol=1e-9)


def test_full_ensemble_kernel_is_the_average_of_member_kernels(cu_cells):
    m = 3
    model = make_model(elements=(29,), ensemble={"kind": "full", "n_members": m})
    for kind in ("last_layer_gradient", "descriptor_mean"):
        phi = compute_features(model, cu_cells[:6], kind)
        single = Model(model.config.model_copy(update={"ensemble": None}), model.stats, None)
        members = [
            compute_features(
                dataclasses.replace(single, params=jax.tree.map(lambda x, k=k: x[k], model.params)),
                cu_cells[:6],
                kind,
            )
            for k in range(m)
        ]
        averaged = sum(g @ g.T for g in members) / m
        np.testing.assert_allclose(phi @ phi.T, averaged, rtol=1e-10)
        assert not np.allclose(phi @ phi.T, sum(members) @ sum(members).T / m)  # not summed


def test_features_do_not_depend_on_padding_or_batch(cu_model, cu_cells):
    mixed = cu_cells[:3] + structures(2, seed=9, repeat=(2, 2, 1))  # two sizes
    for kind in ("last_layer_gradient", "descriptor_mean"):
        one = compute_features(cu_model, mixed, kind, batch_size=1)
        together = compute_features(cu_model, mixed, kind, batch_size=4)
        np.testing.assert_allclose(one, together, rtol=1e-10, atol=1e-12)


def test_random_projection_preserves_distances_and_is_seeded(cu_model, cu_cells):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 2000))
    y = x @ projection_matrix(2000, 400, seed=1)
    i, j = np.triu_indices(20, 1)
    ratio = np.linalg.norm(y[i] - y[j], axis=-1) / np.linalg.norm(x[i] - x[j], axis=-1)
    assert np.all(np.abs(ratio - 1) < 0.2)  # JL: relative error ~ sqrt(1/k) per pair
    assert abs(ratio.mean() - 1) < 0.02
    np.testing.assert_array_equal(projection_matrix(50, 8, 3), projection_matrix(50, 8, 3))
    assert not np.allclose(projection_matrix(50, 8, 3), projection_matrix(50, 8, 4))
    full = compute_features(cu_model, cu_cells[:4])
    projected = compute_features(cu_model, cu_cells[:4], projection_dim=5, projection_seed=2)
    np.testing.assert_allclose(projected, full @ projection_matrix(full.shape[1], 5, 2))


# ----------------------------------------------------------------------------------- baselines


def test_spaced_top_k():
    scores = np.array([0.1, 0.9, 0.8, 0.85, 0.2, 0.7, 0.3, 0.95])
    assert spaced_top_k(scores, 3).tolist() == [7, 1, 3]
    assert spaced_top_k(scores, 3, min_spacing=2).tolist() == [7, 1, 3]
    assert spaced_top_k(scores, 3, min_spacing=3).tolist() == [7, 1, 4]
    assert spaced_top_k(scores, 5, min_spacing=4).tolist() == [7, 1]  # no room for more
    picks = spaced_top_k(np.random.default_rng(0).random(100), 10, min_spacing=5)
    assert np.all(np.abs(picks[:, None] - picks[None])[~np.eye(10, dtype=bool)] >= 5)


def test_random_selection_is_seeded_and_distinct():
    a = random_selection(50, 10, seed=4)
    assert len(set(a.tolist())) == 10 and a.max() < 50
    np.testing.assert_array_equal(a, random_selection(50, 10, seed=4))
    assert not np.array_equal(a, random_selection(50, 10, seed=5))


def test_max_uncertainty_picks_the_largest_ensemble_spread(shallow_model, cu_cells):
    pool = cu_cells
    sel = select(shallow_model, [], pool, 4, MaxUncertainty(min_spacing=2))
    data = Dataset(pool, shallow_model.config.r_max)
    with x64():
        batch = next(data.batches(len(pool), PadBinned(), shuffle=False, seed=0))

        def energies(p, s):
            return total_energies(shallow_model.apply, p, s.positions, np.zeros((3, 3)), s)

        members = np.asarray(jax.jit(jax.vmap(energies, (None, 0)))(shallow_model.params, batch))
    std = members.std(axis=1, ddof=1)
    assert sel.indices.tolist() == spaced_top_k(std, 4, 2).tolist()
    np.testing.assert_allclose(sel.scores, std[sel.indices], rtol=1e-9)
    forces = select(shallow_model, [], pool, 2, MaxUncertainty(quantity="forces"))
    assert np.all(forces.scores > 0) and forces.scores[0] >= forces.scores[1]


# -------------------------------------------------------------------------------- API and CLI


def test_bad_input_fails_early(cu_model, cu_cells):
    train, pool = cu_cells[:2], cu_cells[2:6]
    # A short pool gives all it has (ranked), an empty pool nothing: MD that stops early is fine.
    assert len(select(cu_model, train, [], 1).indices) == 0
    assert sorted(select(cu_model, train, pool, 5).indices) == [0, 1, 2, 3]
    for method in (RandomSelection(seed=1), MaxDistance(feature_map="descriptor_mean")):
        assert sorted(select(cu_model, train, pool, 9, method).indices) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="at least 1"):
        select(cu_model, train, pool, 0)
    with pytest.raises(DataError, match="pool: element Ag"):
        select(cu_model, train, pool + structures(1, silver=True), 2)
    with pytest.raises(ValueError, match="needs an ensemble"):
        select(cu_model, train, pool, 2, MaxUncertainty())
    with pytest.raises(ValueError, match="kind"):
        TypeAdapter(SelectionMethod).validate_python({"kind": "max_dist"})
    method = TypeAdapter(SelectionMethod).validate_python({"kind": "random", "seed": 2})
    assert method == RandomSelection(seed=2)


def test_diagnostics_files(cu_model, cu_cells, tmp_path):
    train, pool = cu_cells[:4], cu_cells[4:]
    sel = select(cu_model, train, pool, 3, rank_all=True)
    paths = write_diagnostics(sel, tmp_path)
    assert {p.name for p in paths} == {"distances.csv", "distances.png", "pca.csv", "pca.png"}
    for png in tmp_path.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "distances.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(pool)
    assert [int(r["selected"]) for r in rows] == [1] * 3 + [0] * (len(pool) - 3)
    np.testing.assert_allclose([float(r["distance"]) for r in rows[:3]], sel.scores)
    with open(tmp_path / "pca.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(train) + len(pool)
    assert sorted(int(r["index"]) for r in rows if r["set"] == "selected") == sorted(sel.indices)
    assert sum(r["set"] == "train" for r in rows) == len(train)
    assert not list(tmp_path.glob(".*.tmp"))  # written whole


def test_cli_select(cu_model, tmp_path):
    model_dir = save_model_dir(tmp_path / "model", cu_model)
    write_frames(tmp_path / "train.extxyz", cells(3, seed=1))
    pool = cells(8, seed=2)
    write_frames(tmp_path / "pool.extxyz", pool)
    out = tmp_path / "sel"
    argv = ["select", str(model_dir), str(tmp_path / "train.extxyz"), str(tmp_path / "pool.extxyz")]
    assert cli.main([*argv, "-n", "3", "--out", str(out)]) == 0
    result = json.loads((out / "selection.json").read_text())
    assert len(result["indices"]) == 3 and len(result["distances"]) == 3
    assert result["n_pool"] == 8 and result["method"]["kind"] == "max_distance"
    from apax_core.data import read_frames

    picked = read_frames(out / "selected.extxyz")
    for atoms, i in zip(picked, result["indices"], strict=True):
        np.testing.assert_allclose(atoms.positions, pool[i].positions, atol=1e-6)  # text file
    for name in ("distances.csv", "distances.png", "pca.csv", "pca.png"):
        assert (out / name).is_file()
    assert cli.main([*argv, "-n", "9", "--out", str(out / "all")]) == 0  # more than the pool:
    assert len(json.loads((out / "all" / "selection.json").read_text())["indices"]) == 8  # all
    assert cli.main([*argv, "-n", "0", "--out", str(out)]) == 2  # bad input: one line, exit 2


def test_cli_select_flags_are_the_fields_of_the_selection_spec():
    """Every field of every selection method is a flag with the spec's default, and the flags
    of the chosen method make its spec."""
    base = ["select", "model", "train.extxyz", "pool.extxyz", "-n", "2"]
    args = cli.parser().parse_args(base)
    assert cli._select_method(args) == MaxDistance()
    for kind, spec in {"random": RandomSelection, "max_uncertainty": MaxUncertainty}.items():
        assert cli._select_method(cli.parser().parse_args([*base, "--method", kind])) == spec()
    flags = ["--method", "max_uncertainty", "--quantity", "forces", "--min-spacing", "3"]
    args = cli.parser().parse_args([*base, *flags])
    assert cli._select_method(args) == MaxUncertainty(quantity="forces", min_spacing=3)
    args = cli.parser().parse_args(
        [*base, "--feature-map", "descriptor_mean", "--projection-seed", "4"]
    )
    assert cli._select_method(args) == MaxDistance(feature_map="descriptor_mean", projection_seed=4)
    with pytest.raises(SystemExit):  # a Literal's values are the flag's choices
        cli.parser().parse_args([*base, "--quantity", "stress"])
