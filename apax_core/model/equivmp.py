"""Equivariant message passing (paper sec. 2.1: a NequIP-like model), built on e3nn-jax.

Node features are irreps of degree 0..l_max (even scalars, odd vectors, even l=2, ...). Each
layer sends every neighbour's features through a tensor product with the spherical harmonics
of the pair direction, weights each path by an MLP of (radial basis, element pair), sums the
messages on the centre atom, adds a species-indexed self-interaction and applies a gated
nonlinearity. The per-atom scalars of the last layer are the features the readout sees.

Dense layout: neighbour j of atom n is slot k, idx_j[n, k]; padded slots (pair_mask False)
get zero weight in every layer, so they contribute nothing, and padded atoms send nothing
because no real atom has a slot pointing at them.
"""

from __future__ import annotations

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp

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


class Interaction(nn.Module):
    """One message-passing step: (N, irreps) node features -> (N, hidden irreps).

    Inputs: h (N, irreps), sh (N, K, l = 1..l_max harmonics), edge (N, K, n_basis + 2 A)
    radial basis and element-pair one-hots, envelope (N, K) cutoff times pair mask, species
    (N,), idx_j (N, K); A species.
    """

    config: EquivMPConfig
    n_species: int

    @nn.compact
    def __call__(self, h, sh, edge, envelope, species, idx_j):
        cfg = self.config
        target = gate_input_irreps(hidden_irreps(cfg))
        h_j = e3nn.IrrepsArray(h.irreps, h.array[idx_j])  # (N, K, irreps): neighbour features
        parts = [h_j.filter(keep=target)]  # the l = 0 harmonic: the neighbour's own irreps
        if sh.irreps:
            parts.append(e3nn.tensor_product(h_j, sh, filter_ir_out=target))
        messages = e3nn.concatenate(parts).regroup()
        weights = e3nn.flax.MultiLayerPerceptron(
            [*cfg.radial_hidden, messages.irreps.num_irreps], jax.nn.silu, output_activation=False
        )(edge)
        messages = messages * (weights * envelope[..., None])
        summed = e3nn.sum(messages, axis=1) / jnp.sqrt(cfg.avg_neighbours)
        linear = dict(irreps_out=target, force_irreps_out=True)  # zeros where Schur forbids
        update = e3nn.flax.Linear(**linear, name="message")(summed)
        self_part = e3nn.flax.Linear(**linear, num_indexed_weights=self.n_species, name="self")(
            species, h
        )
        return e3nn.gate(update + self_part)


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
        sh_irreps = e3nn.Irreps([(1, (l, (-1) ** l)) for l in range(1, cfg.l_max + 1)])
        sh = e3nn.spherical_harmonics(sh_irreps, dr, normalize=True, normalization="component")
        onehot = jax.nn.one_hot(species, self.n_species, dtype=self.dtype)
        pair_onehot = jnp.concatenate(
            [jnp.broadcast_to(onehot[:, None], (*r.shape, self.n_species)), onehot[idx_j]], -1
        )
        edge = jnp.concatenate([bessel_basis(r, cfg.n_basis, cfg.r_max), pair_onehot], -1)
        envelope = cosine_cutoff(r, cfg.r_max) * pair_mask
        embed = nn.Embed(self.n_species, cfg.n_channels, param_dtype=self.dtype, name="embed")
        h = e3nn.IrrepsArray(f"{cfg.n_channels}x0e", embed(species))
        for layer in range(cfg.n_layers):
            h = Interaction(cfg, self.n_species, name=f"layer_{layer}")(
                h, sh, edge, envelope, species, idx_j
            )
        return h.filter(keep="0e").array
