"""The one calibration value: global factors on ensemble spreads, stored with the model.

Post-hoc calibration (paper sec. 2.2) scales standard deviations by a factor fitted on
validation data (fitting and metrics: :mod:`apax_core.uq`). Members move away from their mean
by the same factor (E_m <- E + f (E_m - E)), so reported spreads and members stay consistent.
Stress is a derivative like forces and shares the force factor. It is a results transform, so
a UDD bias sees the raw spread.

The factors are an input of compiled predictions, not constants in them: a ``Calibration`` is a
pytree whose two leaves are the factors, passed next to the parameters (``Model.variables``),
so a recalibrated model reuses the compiled predictor and MD engine. It is always applied;
factors of 1 leave every output bit for bit unchanged.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import jax
import jax.numpy as jnp

from apax_core.files import atomic_write
from apax_core.transforms.base import Transform

CALIBRATION = "calibration.json"


@dataclass(frozen=True)
class Calibration(Transform):
    """Factors applied to energy and force (and stress) standard deviations."""

    energy: float = 1.0
    forces: float = 1.0

    def __post_init__(self) -> None:
        # Python floats: a compiled prediction takes them as weakly typed scalars, which keep
        # the dtype of what they scale and do not change the program with their value.
        object.__setattr__(self, "energy", float(self.energy))
        object.__setattr__(self, "forces", float(self.forces))
        if not (self.energy > 0 and self.forces > 0):
            raise ValueError(f"calibration factors must be positive, got {self}")

    @property
    def is_identity(self) -> bool:
        """Whether both factors are 1 (outputs unchanged; the program is the same either way)."""
        return self.energy == 1.0 and self.forces == 1.0

    def __mul__(self, other: Calibration) -> Calibration:
        """Both calibrations applied one after the other."""
        return Calibration(self.energy * other.energy, self.forces * other.forces)

    def results(self, out: dict) -> dict:
        """Spreads times their factor; members moved from their mean by the same factor, as
        E_m + (f - 1)(E_m - E), which is E_m exactly for f = 1."""
        out = dict(out)
        for key, factor in (
            ("energy", self.energy),
            ("forces", self.forces),
            ("stress", self.forces),
        ):
            if f"{key}_uncertainty" in out:
                out[f"{key}_uncertainty"] = out[f"{key}_uncertainty"] * factor
            if f"{key}_ensemble" in out:
                members = out[f"{key}_ensemble"]
                mean = jnp.mean(members, axis=-1, keepdims=True)
                out[f"{key}_ensemble"] = members + (factor - 1.0) * (members - mean)
        return out

    def save(self, directory: str | Path) -> None:
        atomic_write(Path(directory) / CALIBRATION, json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> Calibration:
        """The calibration stored in a model directory; factors 1 if there is none."""
        path = Path(directory) / CALIBRATION
        return cls(**json.loads(path.read_text())) if path.is_file() else cls()


def _unflatten(_, factors) -> Calibration:
    """A Calibration rebuilt by a JAX transformation, whose leaves are tracers or shapes: not
    converted or checked (that happened when the concrete one was made)."""
    calibration = object.__new__(Calibration)
    object.__setattr__(calibration, "energy", factors[0])
    object.__setattr__(calibration, "forces", factors[1])
    return calibration


jax.tree_util.register_pytree_node(Calibration, lambda c: ((c.energy, c.forces), None), _unflatten)
