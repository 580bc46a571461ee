"""Equivariant message passing (paper sec. 2.1: a NequIP-like model), built on e3nn-jax.

Node features are irreps of degree 0..l_max (even scalars, odd vectors, even l=2, ...). Each
layer sends every neighbour's features through a tensor product with the spherical harmonics
of the pair direction, weights each path by an MLP of (radial basis, element pair), sums the
messages on the centre atom, adds a species-indexed self-interaction and applies a gated
nonlinearity. The per-atom scalars of the last layer are the features the readout sees.

Dense layout: neighbour j of atom n is slot k, idx_j[n, k]; padded slots (pair_mask False)
get zero weight in every layer, so they contribute nothing, and padded atoms send nothing
because no real atom has a slot pointing at them.

The per-pair work is written with plain arrays, not e3nn's IrrepsArray: the weighted tensor
product summed over the slots is contracted path by path (the harmonics with the Clebsch-Gordan
coefficients first, term by term), paths of a scalar input or into a scalar output together,
and the last layer computes only the paths into scalars (the only output read). It is the
function of e3nn.tensor_product + MultiLayerPerceptron + sum with the same parameter tree, up
to rounding (tests/test_equivmp.py keeps that implementation as the reference).
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from apax_core.config import EquivMPConfig
from apax_core.model.basis import bessel_basis, cosine_cutoff, masked_pairs


def hidden_irreps(config: EquivMPConfig) -> e3nn.Irreps:
    """C channels of each degree l <= l_max with parity (-1)^l (the parity a polynomial of the
    pair vectors has): C x 0e + C x 1o + C x 2e + ..."""
    return e3nn.Irreps([(config.n_channels, (l, (-1) ** l)) for l in range(config.l_max + 1)])


def gate_input_irreps(irreps: e3nn.Irreps) -> e3nn.Irreps:
    """What e3nn.gate needs to return ``irreps``: the scalars, one gate scalar per non-scalar
    irrep, then the non-scalars."""
    scalars = irreps.filter(keep=["0e"])
    gated = irreps.filter(drop=["0e"])
    return (scalars + e3nn.Irreps(f"{gated.num_irreps}x0e") + gated).simplify()


class Path(NamedTuple):
    """One weighted message path: neighbour chunk ``chunk`` (degree l1) times the harmonic of
    degree ``l2`` (l2 = 0: the neighbour's features themselves) reduced to ``ir_out``."""

    chunk: int
    l1: int
    l2: int
    ir_out: e3nn.Irrep
    mul: int


def message_paths(irreps: e3nn.Irreps, l_max: int, target: e3nn.Irreps) -> list[Path]:
    """The paths of a layer whose input has ``irreps``, in the order of the radial MLP's
    outputs and of the summed message's channels: e3nn's order for the concatenation of the
    neighbour features (filtered to ``target``) and their tensor product with the l = 1..l_max
    harmonics (filtered to ``target``), regrouped: by output irrep, then the identity path,
    then the product paths in loop order (input chunk, harmonic degree, output irrep)."""
    keep = {ir for _, ir in target}
    paths = [Path(i, ir.l, 0, ir, mul) for i, (mul, ir) in enumerate(irreps) if ir in keep]
    for i, (mul, ir) in enumerate(irreps):
        for l2 in range(1, l_max + 1):
            paths += [
                Path(i, ir.l, l2, ir_out, mul)
                for ir_out in ir * e3nn.Irrep(l2, (-1) ** l2)
                if ir_out in keep
            ]
    order = sorted(range(len(paths)), key=lambda n: (paths[n].ir_out, n))  # e3nn's stable sort
    return [paths[n] for n in order]


def _coupling(path: Path) -> np.ndarray:
    """(2 l1 + 1, 2 l2 + 1, 2 l3 + 1) Clebsch-Gordan coefficients with e3nn's "component"
    normalisation, those of e3nn.tensor_product."""
    return e3nn.clebsch_gordan(path.l1, path.l2, path.ir_out.l) * math.sqrt(path.ir_out.dim)


def _couple(y, cg: np.ndarray):
    """y (..., 2 l2 + 1), cg (2 l1 + 1, 2 l2 + 1, 2 l3 + 1) -> sum_j cg_ijm y_j (..., 2 l1 + 1,
    2 l3 + 1), written out term by term over the nonzero coefficients: XLA on CPU turns the
    contraction with a small constant into a slow matrix product, a sum of scaled slices
    into one elementwise loop."""
    d1, d2, d3 = cg.shape
    terms = [
        [
            sum(float(cg[i, j, m]) * y[..., j] for j in range(d2) if abs(cg[i, j, m]) > 1e-12)
            for m in range(d3)
        ]
        for i in range(d1)
    ]
    zero = jnp.zeros_like(y[..., 0])
    rows = [jnp.stack([zero if isinstance(t, int) else t for t in row], -1) for row in terms]
    return jnp.stack(rows, -2)


def _groups(paths: list[Path], needed: list[int]) -> tuple[list[int], list[int], list[int]]:
    """The needed paths split into those computed together: from the (single) scalar input
    chunk, into scalars from distinct non-scalar chunks (l1 = l2, all of one multiplicity),
    and the others, one by one."""
    outer = [n for n in needed if paths[n].l1 == 0]
    if len({paths[n].chunk for n in outer}) > 1:
        outer = []
    inner = [n for n in needed if paths[n].ir_out.l == 0 and paths[n].l1 > 0]
    if len({paths[n].chunk for n in inner}) < len(inner) or len({paths[n].mul for n in inner}) > 1:
        inner = []
    general = [n for n in needed if n not in outer and n not in inner]
    return outer, inner, general


class _Kernel(nn.Module):
    """A bias-free Dense layer's kernel, initialised like flax.linen.Dense's (the parameter
    tree of e3nn.flax.MultiLayerPerceptron), returned instead of applied."""

    shape: tuple[int, int]
    dtype: jnp.dtype

    @nn.compact
    def __call__(self):
        return self.param("kernel", nn.initializers.normal(stddev=1.0), self.shape, self.dtype)


class RadialMLP(nn.Module):
    """e3nn.flax.MultiLayerPerceptron(widths, silu, output_activation=False) with its "path"
    gradient normalisation and parameter tree, evaluating only the output ``columns``
    (the weights of the paths a layer needs)."""

    widths: tuple[int, ...]
    columns: tuple[int, ...]

    @nn.compact
    def __call__(self, x):
        act = e3nn.normalize_function(jax.nn.silu)
        for i, width in enumerate(self.widths):
            kernel = _Kernel((x.shape[-1], width), x.dtype, name=f"Dense_{i}")()
            if i == len(self.widths) - 1 and self.columns != tuple(range(width)):
                kernel = kernel[:, jnp.asarray(self.columns)]
            x = x @ (kernel / math.sqrt(x.shape[-1]))
            if i < len(self.widths) - 1:
                x = act(x)
        return x


class Interaction(nn.Module):
    """One message-passing step: (N, irreps) node features -> (N, hidden irreps).

    Inputs: h (N, irreps), harmonics ((N, K, 2l + 1) for l = 0..l_max, each times the cutoff
    envelope and the pair mask; l = 0 is the envelope itself), edge (N, K, n_basis + 2 A)
    radial basis and element-pair one-hots, species (N,), idx_j (N, K); A species.
    ``scalars_only``: only the scalar outputs will be used (the last layer), so only the paths
    into scalars are computed; the others are exact zeros that nothing reads.

    Per path (l1 x l2 -> l3), with weights w (N, K, C) from the radial MLP, the message summed
    over the slots is sum_k w_c sum_ij C_ijm h_j[c, i] Y_j = sum_{k,i} (w_c h_j[c, i]) Yc_im:
    the harmonics are contracted with the coefficients first (no channel axis), so no
    (N, K, C, 2 l3 + 1) product is ever formed; this is e3nn.tensor_product of the neighbour
    features with the harmonics, weighted and summed, up to rounding.
    """

    config: EquivMPConfig
    n_species: int
    scalars_only: bool = False

    @nn.compact
    def __call__(self, h, harmonics, edge, species, idx_j):
        cfg = self.config
        target = gate_input_irreps(hidden_irreps(cfg))
        paths = message_paths(h.irreps, cfg.l_max, target)
        starts = [0, *itertools.accumulate(p.mul for p in paths)]
        needed = [n for n, p in enumerate(paths) if not self.scalars_only or p.ir_out.l == 0]
        outer, inner, general = _groups(paths, needed)
        order = outer + inner + general  # the MLP's columns in this order: contiguous groups
        columns = tuple(c for n in order for c in range(starts[n], starts[n + 1]))
        weights = RadialMLP(
            (*cfg.radial_hidden, starts[-1]), columns, name="MultiLayerPerceptron_0"
        )(edge)  # (N, K, needed)
        messages, column = {}, 0
        for fn, group in ((_outer, outer), (_inner, inner), (_general, general)):
            width = sum(paths[n].mul for n in group)
            if group:
                w = weights[..., column : column + width]
                messages |= fn([paths[n] for n in group], group, w, h, idx_j, harmonics)
            column += width
        summed = _regrouped(paths, messages, h, idx_j.shape[0], weights.dtype)
        summed = summed / jnp.sqrt(cfg.avg_neighbours)
        linear = dict(irreps_out=target, force_irreps_out=True)  # zeros where Schur forbids
        update = e3nn.flax.Linear(**linear, name="message")(summed)
        self_part = e3nn.flax.Linear(**linear, num_indexed_weights=self.n_species, name="self")(
            species, h
        )
        return e3nn.gate(update + self_part)


def _coupled(p: Path, harmonics):
    """(N, K, 2 l1 + 1, 2 l3 + 1): sum_j C_ijm Y_j, the harmonics (with the envelope) contracted
    with the coupling coefficients; the envelope alone for l2 = 0."""
    if p.l2 == 0:
        return harmonics[0][..., None]
    return _couple(harmonics[p.l2], _coupling(p))


def _outer(paths, ids, w, h, idx_j, harmonics) -> dict:
    """Paths from the scalar input: sum_k Y_m (w_c h_j[c]), one product for all of them."""
    n_atoms, n_slots = idx_j.shape
    mul = paths[0].mul
    w = w.reshape(n_atoms, n_slots, len(paths), mul)
    x = w * h.chunks[paths[0].chunk][idx_j][..., None, :, 0]  # (N, K, P, C)
    y = jnp.concatenate([_coupled(p, harmonics)[..., 0, :] for p in paths], -1)
    out = jnp.einsum("nkm,nkpc->npcm", y, x)  # (N, P, C, sum of 2 l3 + 1)
    ends = list(itertools.accumulate(p.ir_out.dim for p in paths))
    return {
        n: out[:, q, :, end - p.ir_out.dim : end]
        for q, (n, p, end) in enumerate(zip(ids, paths, ends, strict=True))
    }


def _inner(paths, ids, w, h, idx_j, harmonics) -> dict:
    """Paths into scalars: sum_k w_c sum_i h_j[c, i] Yc_i, summed per path."""
    n_atoms, n_slots = idx_j.shape
    w = w.reshape(n_atoms, n_slots, len(paths), paths[0].mul)
    chunks = [h.chunks[p.chunk].swapaxes(-1, -2) for p in paths]  # (N, d, C)
    x = jnp.concatenate(chunks, axis=1)[idx_j]  # (N, K, sum of 2 l1 + 1, C)
    y = jnp.concatenate([_coupled(p, harmonics)[..., 0] for p in paths], -1)
    x = x * y[..., None]
    ends = list(itertools.accumulate(2 * p.l1 + 1 for p in paths))
    z = [
        jnp.sum(x[:, :, end - 2 * p.l1 - 1 : end], axis=2)
        for p, end in zip(paths, ends, strict=True)
    ]
    out = jnp.sum(w * jnp.stack(z, axis=2), axis=1)  # (N, P, C)
    return {n: out[:, q, :, None] for q, n in enumerate(ids)}


def _general(paths, ids, w, h, idx_j, harmonics) -> dict:
    """Any other path, one by one: sum_{k,i} (w_c h_j[c, i]) Yc_im."""
    messages, column = {}, 0
    for n, p in zip(ids, paths, strict=True):
        x = w[..., column : column + p.mul, None] * h.chunks[p.chunk][idx_j]  # (N, K, C, 2l1+1)
        column += p.mul
        if p.l2 == 0:
            messages[n] = jnp.einsum("nkci,nk->nci", x, harmonics[0][..., 0])
        else:
            messages[n] = jnp.einsum("nkci,nkim->ncm", x, _coupled(p, harmonics))
    return messages


def _regrouped(paths, messages: dict, h, n_atoms: int, dtype) -> e3nn.IrrepsArray:
    """The summed messages as one IrrepsArray: consecutive paths with the same output irrep form
    one chunk; a path left out is zeros, not None, so e3nn's Linear keeps its weights."""
    irreps, chunks = [], []
    for ir, group in itertools.groupby(range(len(paths)), key=lambda n: paths[n].ir_out):
        group = list(group)
        irreps.append((sum(paths[n].mul for n in group), ir))
        parts = [
            messages.get(n, jnp.zeros((n_atoms, paths[n].mul, paths[n].ir_out.dim), dtype))
            for n in group
        ]
        chunks.append(jnp.concatenate(parts, axis=1))
    return e3nn.from_chunks(irreps, chunks, (n_atoms,), h.dtype)


class EquivMP(nn.Module):
    """(dr_vec, species, idx_j, pair_mask) -> per-atom scalar features (N, n_channels).

    Dense neighbours: dr_vec (N, K, 3), species (N,), idx_j and pair_mask (N, K).
    """

    config: EquivMPConfig
    n_species: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, dr_vec, species, idx_j, pair_mask):
        cfg = self.config
        dr, r = masked_pairs(dr_vec, pair_mask, self.dtype)
        envelope = (cosine_cutoff(r, cfg.r_max) * pair_mask)[..., None]
        harmonics = [envelope]
        if cfg.l_max > 0:
            sh_irreps = e3nn.Irreps([(1, (l, (-1) ** l)) for l in range(1, cfg.l_max + 1)])
            sh = e3nn.spherical_harmonics(sh_irreps, dr, normalize=True, normalization="component")
            harmonics += [envelope * chunk[..., 0, :] for chunk in sh.chunks]
        onehot = jax.nn.one_hot(species, self.n_species, dtype=self.dtype)
        pair_onehot = jnp.concatenate(
            [jnp.broadcast_to(onehot[:, None], (*r.shape, self.n_species)), onehot[idx_j]], -1
        )
        edge = jnp.concatenate([bessel_basis(r, cfg.n_basis, cfg.r_max), pair_onehot], -1)
        embed = nn.Embed(self.n_species, cfg.n_channels, param_dtype=self.dtype, name="embed")
        h = e3nn.IrrepsArray(f"{cfg.n_channels}x0e", embed(species))
        for layer in range(cfg.n_layers):
            last = layer == cfg.n_layers - 1
            interaction = Interaction(cfg, self.n_species, last, name=f"layer_{layer}")
            h = interaction(h, harmonics, edge, species, idx_j)
        return h.filter(keep="0e").array
