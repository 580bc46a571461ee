"""Global post-hoc calibration of ensemble spreads as a results transform.

The scaling itself is :func:`apax_core.transforms.calibrate` (members and standard deviations
together; stress shares the force factor). Because it post-processes results, a UDD bias sees
the raw spread; UDD on calibrated energies is UDD with width B / e.
"""

from __future__ import annotations

from apax_core.md.transforms import Transform
from apax_core.transforms import calibrate


class GlobalCalibration(Transform):
    """Scale energy spreads by ``energy_factor`` and force spreads by ``forces_factor``."""

    def __init__(self, energy_factor: float = 1.0, forces_factor: float = 1.0) -> None:
        if not (energy_factor > 0 and forces_factor > 0):
            raise ValueError("calibration factors must be positive")
        self.energy_factor, self.forces_factor = float(energy_factor), float(forces_factor)

    def __repr__(self) -> str:
        return f"GlobalCalibration({self.energy_factor}, {self.forces_factor})"

    def results(self, out: dict) -> dict:
        return calibrate(out, self.energy_factor, self.forces_factor)


def stored_calibration(model) -> tuple[Transform, ...]:
    """The calibration saved with ``model`` (calibration.json) as a transform; none if unit."""
    cal = model.calibration
    if cal.energy == 1.0 and cal.forces == 1.0:
        return ()
    return (GlobalCalibration(cal.energy, cal.forces),)
