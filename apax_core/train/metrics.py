"""Error metrics accumulated exactly over an epoch: sums on device per batch, ratios on the host.

Energies per atom in meV/atom, forces in meV/A, stress in meV/A^3; padding never counts.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from apax_core.data.batch import Batch
from apax_core.residuals import batch_reference, per_atom


def error_sums(pred: dict, batch: Batch, labels: tuple[str, ...]) -> dict:
    """Sums of absolute and squared errors and the number of real entries, per label."""
    out = {}
    for q in labels:
        ref, mask, n = batch_reference(q, batch)
        err = jnp.where(mask, per_atom(q, pred[q] - ref, n), 0.0)
        out[q] = jnp.stack([jnp.sum(jnp.abs(err)), jnp.sum(err**2), jnp.sum(mask)])
    return out


def accumulate(total: dict | None, sums: dict) -> dict:
    sums = {k: np.asarray(v, dtype=np.float64) for k, v in sums.items()}
    return sums if total is None else {k: total[k] + sums[k] for k in total}


def finalize(total: dict, prefix: str) -> dict[str, float]:
    """MAE and RMSE in milli-units, e.g. ``val_forces_mae`` in meV/A."""
    out = {}
    for q, (abs_sum, sq_sum, count) in total.items():
        count = max(count, 1.0)
        out[f"{prefix}{q}_mae"] = 1000.0 * abs_sum / count
        out[f"{prefix}{q}_rmse"] = 1000.0 * float(np.sqrt(sq_sum / count))
    return out
