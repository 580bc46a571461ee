"""Data parallelism with JAX sharding (paper sections 3.4, 4.3): every batch is split over the
devices along its structure axis and the parameters are replicated; jit's partitioner adds the
gradient all-reduce, so one step on n devices computes what one step on one device does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from apax_core.errors import InputError


@dataclass(frozen=True)
class Placement:
    batch: Callable
    """Batch -> the batch with its structure axis split over the devices."""
    replicate: Callable
    """Pytree -> the pytree replicated on every device."""


def placement(n_devices: int) -> Placement:
    """How arrays are laid out on ``n_devices`` local devices (1: as they come)."""
    if n_devices == 1:
        return Placement(lambda batch: batch, lambda tree: tree)
    devices = jax.local_devices()
    if n_devices > len(devices):
        raise InputError(
            f"n_devices: {n_devices} requested, {len(devices)} {devices[0].platform} device(s) "
            "here (on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N simulates N)"
        )
    mesh = Mesh(np.asarray(devices[:n_devices]), ("batch",))
    split = NamedSharding(mesh, PartitionSpec("batch"))
    same = NamedSharding(mesh, PartitionSpec())
    return Placement(lambda batch: jax.device_put(batch, split), lambda t: jax.device_put(t, same))
