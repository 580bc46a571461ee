"""Global post-hoc calibration of ensemble spreads as a results transform.

Every member's deviation from the ensemble mean is scaled, E_m <- E_mean + e (E_m - E_mean) and
F_m <- F_mean + f (F_m - F_mean), and the standard deviations with it (sigma_E <- e sigma_E,
sigma_F <- f sigma_F), so members and uncertainties stay consistent. Means are unchanged and
stress is left as predicted. Because it post-processes results, a UDD bias sees the raw spread;
UDD on calibrated energies is UDD with width B / e.
"""

from __future__ import annotations

import jax.numpy as jnp

from apax_core.md.transforms import Transform


def _scaled(members, mean, factor):
    return jnp.expand_dims(mean, -1) + factor * (members - jnp.expand_dims(mean, -1))


class GlobalCalibration(Transform):
    """Scale energy spreads by ``energy_factor`` and force spreads by ``forces_factor``."""

    def __init__(self, energy_factor: float = 1.0, forces_factor: float = 1.0) -> None:
        if not (energy_factor > 0 and forces_factor > 0):
            raise ValueError("calibration factors must be positive")
        self.energy_factor, self.forces_factor = float(energy_factor), float(forces_factor)

    def __repr__(self) -> str:
        return f"GlobalCalibration({self.energy_factor}, {self.forces_factor})"

    def results(self, out: dict) -> dict:
        out = dict(out)
        for key, factor in (("energy", self.energy_factor), ("forces", self.forces_factor)):
            if f"{key}_uncertainty" in out:
                out[f"{key}_uncertainty"] = factor * out[f"{key}_uncertainty"]
            if f"{key}_ensemble" in out:
                out[f"{key}_ensemble"] = _scaled(out[f"{key}_ensemble"], out[key], factor)
        return out
