"""Per-atom MLP readout: descriptor -> atomic energy (or M energies for a shallow ensemble)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS = {
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "softplus": jax.nn.softplus,
}


class Readout(nn.Module):
    """Dense layers ``dense_0 .. dense_L``; the last has ``n_outputs`` units and no activation.
    x: (N, F) per-atom features -> (N, n_outputs)."""

    hidden: Sequence[int]
    activation: str
    n_outputs: int = 1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        act = ACTIVATIONS[self.activation]
        for i, width in enumerate(self.hidden):
            x = act(nn.Dense(width, dtype=self.dtype, param_dtype=self.dtype, name=f"dense_{i}")(x))
        return nn.Dense(
            self.n_outputs,
            dtype=self.dtype,
            param_dtype=self.dtype,
            name=f"dense_{len(self.hidden)}",
        )(x)
