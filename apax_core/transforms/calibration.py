"""The one calibration value: factors on ensemble spreads, stored with the model.

Post-hoc calibration (paper sec. 2.2) rescales standard deviations by a law fitted on
validation data (fitting, family choice and metrics: :mod:`apax_core.uq`). Three families:

- ``global``: sigma' = f sigma, one energy factor and one force factor;
- ``per_element``: a force factor per element, sigma'_i = f_Z(i) sigma_i (energy stays global);
- ``power``: sigma'_i = a_Z(i) sigma_i ** b_Z(i) for forces (per element, or one a, b for all).

Members move away from their mean by the ratio sigma'/sigma (E_m <- E + g (E_m - E)), so
reported spreads and members stay consistent. Stress is a derivative like forces and takes the
global force factor. It is a results transform, so a UDD bias sees the raw spread.

The numbers are inputs of compiled predictions, not constants in them: a ``Calibration`` is a
pytree of the energy and force factors and two (119,) tables, force factor a and exponent b
indexed by atomic number (index 0 and elements without their own entry hold the global force
factor and b = 1). The structure of the pytree is the same for every family and model, so one
compiled predictor and MD engine serve them all; the family is a label, not a leaf. It is always
applied; factors of 1 leave every output bit for bit unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from apax_core.files import atomic_write
from apax_core.transforms.base import Transform

CALIBRATION = "calibration.json"
Family = Literal["global", "per_element", "power"]
FAMILIES: tuple[str, ...] = get_args(Family)
N_TABLE = len(chemical_symbols)
"""Table length: one entry per atomic number, 0 (padding) included."""


@dataclass(frozen=True)
class Calibration(Transform):
    """Factors applied to energy and force (and stress) standard deviations.

    ``forces`` is the global force factor (stress, and atoms without an entry in ``elements``);
    ``elements`` holds (Z, a, b) per element: sigma' = a sigma ** b for its force components.
    ``held_out_nll`` records each family's held-out force NLL from the fit (not applied).
    """

    energy: float = 1.0
    forces: float = 1.0
    family: Family = "global"
    elements: tuple[tuple[int, float, float], ...] = ()
    held_out_nll: tuple[tuple[str, float], ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        # Python floats: a compiled prediction takes them as weakly typed scalars, which keep
        # the dtype of what they scale and do not change the program with their value.
        object.__setattr__(self, "energy", float(self.energy))
        object.__setattr__(self, "forces", float(self.forces))
        entries = tuple(sorted((int(z), float(a), float(b)) for z, a, b in self.elements))
        object.__setattr__(self, "elements", entries)
        _check(self)
        scale, exponent = np.full(N_TABLE, self.forces), np.ones(N_TABLE)
        for z, a, b in entries:
            scale[z], exponent[z] = a, b
        object.__setattr__(self, "_scale", scale)
        object.__setattr__(self, "_exponent", exponent)

    @property
    def is_identity(self) -> bool:
        """Whether every factor and exponent is 1 (outputs unchanged; the program is the same)."""
        per_element = all(a == 1.0 and b == 1.0 for _, a, b in self.elements)
        return self.energy == 1.0 and self.forces == 1.0 and per_element

    def inverse(self) -> Calibration:
        """The calibration that undoes this one: sigma = (sigma' / a) ** (1 / b)."""
        entries = tuple((z, a ** (-1.0 / b), 1.0 / b) for z, a, b in self.elements)
        return Calibration(1.0 / self.energy, 1.0 / self.forces, self.family, entries)

    def check(self, model) -> None:
        if self.elements:
            raise ValueError(
                f"a {self.family!r} calibration needs each atom's element: give it as the "
                "model's calibration (Model.calibration), not as an extra transform"
            )

    def results(self, out: dict, Z=None) -> dict:
        """Spreads times their ratio g = sigma'/sigma; members moved from their mean as
        E_m + (g - 1)(E_m - E), which is E_m exactly for g = 1. ``Z``: (N,) atomic numbers of
        the atoms (None: every atom takes the global force factor)."""
        out = dict(out)
        ratios = {"energy": self.energy, "stress": self.forces}
        if "forces_uncertainty" in out:
            ratios["forces"] = self.force_ratio(out["forces_uncertainty"], Z)
        for key, ratio in ratios.items():
            if f"{key}_uncertainty" in out:
                out[f"{key}_uncertainty"] = out[f"{key}_uncertainty"] * ratio
            if f"{key}_ensemble" in out:
                members = out[f"{key}_ensemble"]
                mean = jnp.mean(members, axis=-1, keepdims=True)
                g = ratio[..., None] if key == "forces" else ratio  # members on the last axis
                out[f"{key}_ensemble"] = members + (g - 1.0) * (members - mean)
        return out

    def force_ratio(self, sigma, Z=None):
        """(N, 3) sigma'/sigma of force components = a_Z sigma ** (b_Z - 1), exactly a_Z where
        b_Z = 1; a zero sigma stays zero."""
        z = jnp.zeros(sigma.shape[:-1], jnp.int32) if Z is None else Z
        a = jnp.take(jnp.asarray(self._scale), z, axis=0)[..., None].astype(sigma.dtype)
        b = jnp.take(jnp.asarray(self._exponent), z, axis=0)[..., None].astype(sigma.dtype)
        positive = jnp.where(sigma > 0, sigma, 1.0)
        return a * jnp.where(b == 1.0, 1.0, positive ** (b - 1.0))

    def save(self, directory: str | Path) -> None:
        atomic_write(Path(directory) / CALIBRATION, json.dumps(self.to_json(), indent=2))

    def to_json(self) -> dict:
        """The stored form: elements by chemical symbol, held-out scores by family."""
        return {
            "family": self.family,
            "energy": self.energy,
            "forces": self.forces,
            "elements": {chemical_symbols[z]: {"a": a, "b": b} for z, a, b in self.elements},
            "held_out_nll": dict(self.held_out_nll),
        }

    @classmethod
    def from_json(cls, raw: dict) -> Calibration:
        """Inverse of :meth:`to_json`; a file of only ``energy`` and ``forces`` is global."""
        elements = raw.get("elements", {})
        return cls(
            energy=raw.get("energy", 1.0),
            forces=raw.get("forces", 1.0),
            family=raw.get("family", "global"),
            elements=tuple((atomic_numbers[s], e["a"], e["b"]) for s, e in elements.items()),
            held_out_nll=tuple(raw.get("held_out_nll", {}).items()),
        )

    @classmethod
    def load(cls, directory: str | Path) -> Calibration:
        """The calibration stored in a model directory; factors 1 if there is none."""
        path = Path(directory) / CALIBRATION
        return cls.from_json(json.loads(path.read_text())) if path.is_file() else cls()


def _check(cal: Calibration) -> None:
    """ValueError naming the field of ``cal`` that is out of range."""
    if cal.family not in FAMILIES:
        raise ValueError(f"calibration family must be one of {FAMILIES}, got {cal.family!r}")
    if not (cal.energy > 0 and cal.forces > 0):
        raise ValueError(f"calibration factors must be positive, got {cal}")
    for z, a, b in cal.elements:
        if not (0 < z < N_TABLE and a > 0 and b > 0):
            raise ValueError(f"calibration elements: need 0 < Z < {N_TABLE}, a, b > 0: {cal}")
    if cal.family == "global" and cal.elements:
        raise ValueError("calibration elements: a global calibration has none")
    if cal.family == "per_element" and any(b != 1.0 for *_, b in cal.elements):
        raise ValueError("calibration elements: per-element factors have exponent b = 1")


def _unflatten(_, leaves) -> Calibration:
    """A Calibration rebuilt by a JAX transformation, whose leaves are tracers or shapes: not
    converted or checked (that happened when the concrete one was made)."""
    calibration = object.__new__(Calibration)
    for name, leaf in zip(("energy", "forces", "_scale", "_exponent"), leaves, strict=True):
        object.__setattr__(calibration, name, leaf)
    return calibration


jax.tree_util.register_pytree_node(
    Calibration, lambda c: ((c.energy, c.forces, c._scale, c._exponent), None), _unflatten
)
