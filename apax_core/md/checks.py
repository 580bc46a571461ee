"""Stop checks on kept frames, as one traceable function: frame -> reason code.

Code 0: keep going; 1: non-finite energy, forces or positions (always checked; such a frame is
not written); 2 + k: ``checks[k]`` fired (the frame that fired is written as the last one).
The first firing check in config order names the reason; :func:`stop_detail` says, with
units, what value crossed which threshold when.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp

from apax_core.config.md import (
    EnergyUncertaintyCheck,
    ForcesUncertaintyCheck,
    StopCheck,
    TemperatureCheck,
    VolumeCheck,
)
from apax_core.errors import InputError

NAN = 1


def reasons(checks: Sequence[StopCheck]) -> list[str | None]:
    """Reason text of each code."""
    return [None, "nan", *(c.kind for c in checks)]


def check_value(check: StopCheck, frame: dict, n_atoms: int, volume0=None):
    """The () quantity ``check`` compares with its threshold, in ``check.unit``. ``frame``:
    energy_uncertainty () (eV), forces_uncertainty (N, 3) (eV/A), temperature () (K), cell
    (3, 3) (A) as the engine records them; ``volume0`` the initial cell volume (A^3) of a
    volume check."""
    if isinstance(check, EnergyUncertaintyCheck):
        sigma = frame["energy_uncertainty"]
        return sigma / n_atoms if check.per_atom else sigma
    if isinstance(check, ForcesUncertaintyCheck):
        sigma = frame["forces_uncertainty"]
        if check.reduce == "norm":
            return jnp.max(jnp.linalg.norm(sigma, axis=-1))
        return jnp.max(sigma)
    if isinstance(check, TemperatureCheck):
        return frame["temperature"]
    if isinstance(check, VolumeCheck):
        from apax_core.md.barostats import volume_factor  # jax-md: imported only when needed

        return volume_factor(frame["cell"], volume0)
    raise TypeError(f"unknown check {check!r}")


def threshold(check: StopCheck) -> float:
    """The threshold of ``check``, in its unit (``check.unit``)."""
    if isinstance(check, TemperatureCheck):
        return check.max_T
    return check.max_factor if isinstance(check, VolumeCheck) else check.threshold


def reason_code(checks: Sequence[StopCheck], frame: dict, n_atoms: int, volume0=None):
    """() int32 reason code of ``frame`` (0 if no check fires); ``frame`` holds energy (),
    positions (N, 3), forces (N, 3) and what the checks read; ``volume0`` (A^3) as in
    :func:`check_value`."""
    code = jnp.zeros((), jnp.int32)
    for k in reversed(range(len(checks))):
        fired = check_value(checks[k], frame, n_atoms, volume0) > threshold(checks[k])
        code = jnp.where(fired, 2 + k, code)
    finite = jnp.isfinite(frame["energy"]) & jnp.all(jnp.isfinite(frame["positions"]))
    finite = finite & jnp.all(jnp.isfinite(frame["forces"]))
    return jnp.where(finite, code, NAN)


def stop_detail(
    checks: Sequence[StopCheck], code: int, frame: dict, n_atoms: int, volume0: float, dt: float
) -> dict:
    """What stopped a run, for its status: the check, its value and threshold in ``unit``, the
    time and one line, e.g. ``energy_uncertainty 0.081 eV/atom > 0.05 eV/atom at 840 fs``.

    Args: ``code`` a non-zero :func:`reason_code`; ``frame`` the host copy of the frame that
    fired (with its ``step``); ``volume0`` (A^3) as in :func:`check_value`; ``dt`` in fs.
    """
    time_fs = float(frame["step"]) * dt
    detail = {"check": "nan", "value": None, "threshold": None, "unit": None, "time_fs": time_fs}
    if code == NAN:
        return {**detail, "message": f"non-finite energy, forces or positions at {time_fs:g} fs"}
    check = checks[code - 2]
    value, limit = float(check_value(check, frame, n_atoms, volume0)), threshold(check)
    unit = f" {check.unit}" if check.unit else ""
    name = "volume max(V/V0, V0/V)" if isinstance(check, VolumeCheck) else check.kind
    shown = f"{value:.3g}" if abs(value) < 1e3 else f"{value:.0f}"  # 0.0812, 1234
    line = f"{name} {shown}{unit} > {limit:g}{unit} at {time_fs:g} fs"
    detail |= {"check": check.kind, "value": value, "threshold": limit, "unit": check.unit}
    return {**detail, "message": line}


def validate(checks: Sequence[StopCheck], n_members: int, force_uncertainty: bool) -> None:
    """Raise InputError before any work if a check needs what the model cannot give."""
    for c in checks:
        if isinstance(c, EnergyUncertaintyCheck | ForcesUncertaintyCheck) and n_members < 2:
            raise InputError(f"the {c.kind} check needs an ensemble model, got a single model")
        if isinstance(c, ForcesUncertaintyCheck) and not force_uncertainty:
            raise InputError("the forces_uncertainty check needs force_uncertainty: true")
