"""Per-structure feature maps for batch selection (paper eq. 11), built from the model by
function transformations:

- last-layer gradient: the gradient of the (ensemble-mean) energy w.r.t. the kernel and bias of
  the last readout layer, flattened. Its linear kernel is the last-layer neural tangent kernel.
- descriptor mean: the representation's per-atom features averaged over the atoms.

Full ensembles (parameters stacked on axis 0) get the per-member features concatenated and
scaled by 1/sqrt(M), so that the linear kernel is the average of the member kernels.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from apax_core.config.select import FeatureMapName
from apax_core.transforms.derivatives import total_energies, zero_strain

FeatureFn = Callable[..., jax.Array]
"""(params, one padded structure) -> (D,) features."""


def last_layer_name(model) -> str:
    """Name of the last readout layer (the one with M outputs)."""
    return f"dense_{len(model.config.hidden)}"


def last_layer_gradient(apply, params, s, layer: str) -> jax.Array:
    """Flattened gradient of the mean energy over the M outputs w.r.t. ``layer``'s kernel and
    bias, (F * M + M,): kernel first (row-major), then bias."""

    def mean_energy(last):
        p = {**params, "readout": {**params["readout"], layer: last}}
        return jnp.mean(total_energies(apply, p, s.positions, zero_strain(), s))

    grad = jax.grad(mean_energy)(params["readout"][layer])
    return jnp.concatenate([grad["kernel"].ravel(), grad["bias"].ravel()])


def descriptor_apply(module):
    """An apply-like function (params, *args) -> per-atom descriptor (N, n_features): the
    output of the model's ``representation`` submodule, captured from a normal model call (XLA
    prunes the unused readout)."""

    def apply(params, *args):
        _, state = module.apply(
            {"params": params},
            *args,
            capture_intermediates=lambda mdl, method: mdl.name == "representation",
            mutable=["intermediates"],
        )
        return state["intermediates"]["representation"]["__call__"][0]

    return apply


def descriptor_mean(apply, params, s) -> jax.Array:
    """Descriptor averaged over the real atoms, (n_features,). ``apply`` is a
    :func:`descriptor_apply`; padding atoms have no neighbours and so a zero descriptor."""
    total = total_energies(apply, params, s.positions, zero_strain(), s)  # sum over atoms, fp64
    return total / jnp.maximum(jnp.sum(s.atom_mask), 1)


def concat_members(member_fn: FeatureFn) -> FeatureFn:
    """Full ensemble: per-member features (D,) concatenated to (M * D,) and scaled by
    1/sqrt(M), so that phi(S) . phi(S') = (1/M) sum_m g_m(S) . g_m(S') (the averaged kernel,
    not a sum)."""

    def fn(stacked_params, s):
        per_member = jax.vmap(lambda p: member_fn(p, s))(stacked_params)
        return per_member.reshape(-1) / jnp.sqrt(per_member.shape[0])

    return fn


def feature_map(model, kind: FeatureMapName) -> FeatureFn:
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
