"""Feature maps of structures for batch selection (paper eq. 11), evaluated in jitted batches.

A feature map is a pure function ``(params, s) -> (D,)`` of one padded structure, built from the
model by a function transformation; :func:`compute_features` maps it over structures.

- last-layer gradient: the gradient of the (ensemble-mean) energy w.r.t. the kernel and bias of
  the last readout layer, flattened. Its linear kernel is the last-layer neural tangent kernel.
- descriptor mean: the descriptor averaged over the atoms of the structure.

Full ensembles (parameters stacked on axis 0) get the per-member features concatenated and
scaled by 1/sqrt(M), so that the linear kernel is the average of the member kernels.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from apax_core.config import FeatureMapName, PadBinned
from apax_core.data import (
    Batch,
    DataError,
    Structure,
    collate,
    neighbour_list,
    pad_sizes,
    prefetch,
)
from apax_core.model.gmnn import descriptor_size
from apax_core.model_dir import Model
from apax_core.precision import x64
from apax_core.transforms import batched, total_energies

logger = logging.getLogger(__name__)

BINNED = PadBinned()
FeatureFn = Callable[..., jax.Array]
"""(params, one padded structure) -> (D,) features."""


def last_layer_name(model: Model) -> str:
    """Name of the last readout layer (the one with M outputs)."""
    return f"dense_{len(model.config.hidden)}"


def last_layer_gradient(apply, params, s, layer: str) -> jax.Array:
    """Flattened gradient of the mean energy over the M outputs w.r.t. ``layer``'s kernel and
    bias, (F * M + M,): kernel first (row-major), then bias."""
    strain = jnp.zeros((3, 3), dtype=jnp.float64)

    def mean_energy(last):
        p = {**params, "readout": {**params["readout"], layer: last}}
        return jnp.mean(total_energies(apply, p, s.positions, strain, s))

    grad = jax.grad(mean_energy)(params["readout"][layer])
    return jnp.concatenate([grad["kernel"].ravel(), grad["bias"].ravel()])


def descriptor_apply(module):
    """An apply-like function (params, *args) -> per-atom descriptor (N, n_features): the
    output of the model's ``representation`` submodule, captured from a normal model call (so
    group scales and any representation change come along; XLA prunes the unused readout)."""

    def apply(params, *args):
        _, state = module.apply(
            {"params": params}, *args,
            capture_intermediates=lambda mdl, method: mdl.name == "representation",
            mutable=["intermediates"],
        )  # fmt: skip
        return state["intermediates"]["representation"]["__call__"][0]

    return apply


def descriptor_mean(apply, params, s) -> jax.Array:
    """Descriptor averaged over the real atoms, (n_features,). ``apply`` is a
    :func:`descriptor_apply`; padding atoms have no neighbours and so a zero descriptor."""
    strain = jnp.zeros((3, 3), dtype=jnp.float64)
    total = total_energies(apply, params, s.positions, strain, s)  # sum over atoms, in fp64
    return total / jnp.maximum(jnp.sum(s.atom_mask), 1)


def concat_members(member_fn: FeatureFn) -> FeatureFn:
    """Full ensemble: per-member features concatenated and scaled by 1/sqrt(M), so that
    phi(S) . phi(S') = (1/M) sum_m g_m(S) . g_m(S') (the averaged kernel, not a sum)."""

    def fn(stacked_params, s):
        per_member = jax.vmap(lambda p: member_fn(p, s))(stacked_params)
        return per_member.reshape(-1) / jnp.sqrt(per_member.shape[0])

    return fn


def feature_map(model: Model, kind: FeatureMapName = "last_layer_gradient") -> FeatureFn:
    """The per-structure feature function of ``model``: (model.params, s) -> (D,)."""
    full = model.member_apply is not None
    if kind == "last_layer_gradient":
        layer = last_layer_name(model)
        apply = model.member_apply if full else model.apply

        def member(params, s):
            return last_layer_gradient(apply, params, s, layer)

    elif kind == "descriptor_mean":
        apply = descriptor_apply(model.module)

        def member(params, s):
            return descriptor_mean(apply, params, s)

    else:
        raise ValueError(f"unknown feature map {kind!r}")
    return concat_members(member) if full else member


def projection_matrix(d_in: int, d_out: int, seed: int) -> np.ndarray:
    """Gaussian random projection (d_in, d_out) with N(0, 1/d_out) entries: squared distances
    are preserved in expectation, to a relative error of order sqrt(8 log(n) / d_out) (JL)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((d_in, d_out)) / np.sqrt(d_out)


def padded_batches(
    structures: Sequence[Structure], cutoff: float, batch_size: int, padding: PadBinned = BINNED
) -> Iterator[Batch]:
    """Padded batches in input order, neighbour lists computed batch by batch: memory stays
    bounded for any pool size, and in a prefetch thread the host work overlaps evaluation."""
    for start in range(0, len(structures), batch_size):
        chunk = structures[start : start + batch_size]
        nls = [neighbour_list(s, cutoff) for s in chunk]
        n_pad, k_pad = pad_sizes(
            [s.n_atoms for s in chunk],
            [nl.max_neighbours(s.n_atoms) for s, nl in zip(chunk, nls, strict=True)],
            padding,
        )
        yield collate(chunk, nls, n_pad, k_pad, batch_size=batch_size)


def map_structures(
    fn,
    params,
    structures: Sequence[Structure],
    cutoff: float,
    *,
    batch_size: int = 4,
    padding: PadBinned = BINNED,
    progress: bool = False,
    desc: str = "features",
    post: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Stack ``fn(params, batch)`` (jitted, batched) over structures, padding rows dropped.

    ``post`` transforms each batch's host array (e.g. a projection) so only its result is kept.
    Compiles once per padded shape (one per padding bin). Neighbour lists and collation run in
    a background thread, overlapped with the evaluation of the previous batch.
    """
    structures = list(structures)
    if not structures:
        raise ValueError("no structures to evaluate")
    empty = [k for k, s in enumerate(structures) if s.n_atoms == 0]
    if empty:
        raise DataError(f"structure {empty[0]} has no atoms")
    chunks = []
    with x64():
        batches = prefetch(padded_batches(structures, cutoff, batch_size, padding), 4)
        total = -(-len(structures) // batch_size)
        for batch in tqdm(batches, total=total, desc=desc, disable=not progress):
            out = np.asarray(fn(params, batch), dtype=np.float64)[batch.structure_mask]
            chunks.append(out if post is None else post(out))
    return np.concatenate(chunks)


def compute_features(
    model: Model,
    structures: Sequence[Structure],
    kind: FeatureMapName = "last_layer_gradient",
    *,
    projection_dim: int | None = None,
    projection_seed: int = 0,
    batch_size: int = 4,
    padding: PadBinned = BINNED,
    progress: bool = False,
    fn=None,
) -> np.ndarray:
    """Features (n_structures, D) in fp64, optionally randomly projected to ``projection_dim``.

    The projection is applied batch by batch, so only (n_structures, projection_dim) is kept.
    Projections with the same seed and dimensions are identical, so training and pool features
    computed in separate calls live in the same space. ``fn`` reuses a :func:`feature_fn`.
    """
    fn = fn or feature_fn(model, kind)
    d_in, post = feature_dim(model, kind), None
    if projection_dim is not None:
        if projection_dim < d_in:
            matrix = projection_matrix(d_in, projection_dim, projection_seed)

            def post(features):
                return features @ matrix

        else:
            logger.info("projection_dim %d >= feature dimension %d: not projecting",
                        projection_dim, d_in)  # fmt: skip
    if len(structures) == 0:
        return np.zeros((0, d_in if post is None else projection_dim))
    return map_structures(
        fn, model.params, structures, model.config.r_max,
        batch_size=batch_size, padding=padding, progress=progress, desc=kind, post=post,
    )  # fmt: skip


def feature_fn(model: Model, kind: FeatureMapName = "last_layer_gradient"):
    """Jitted (params, Batch) -> (B, D) features. Parameters are an argument, so one compiled
    function serves every model of the same architecture and statistics (cached)."""
    return _jitted_feature_fn(type(model.config), model.config.model_dump_json(), model.stats, kind)


@functools.lru_cache(maxsize=16)
def _jitted_feature_fn(config_type, config_json: str, stats, kind: FeatureMapName):
    model = Model(config_type.model_validate_json(config_json), stats, params=None)
    return jax.jit(batched(feature_map(model, kind)))


def feature_dim(model: Model, kind: FeatureMapName = "last_layer_gradient") -> int:
    """Length D of the feature vector, from parameter shapes (nothing is evaluated)."""
    members = model.config.n_members if model.member_apply is not None else 1
    if kind == "last_layer_gradient":
        last = model.params["readout"][last_layer_name(model)]
        return int(np.size(last["kernel"]) + np.size(last["bias"]))  # stacked: all members
    if kind == "descriptor_mean":
        return members * descriptor_size(model.config.n_radial, model.config.n_contr)
    raise ValueError(f"unknown feature map {kind!r}")
