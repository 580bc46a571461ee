"""Function transformations of the energy model: energy/forces/stress, ensemble statistics,
member derivatives, feature maps, and the ``Transform`` hooks (UDD, calibration)."""

from apax_core.transforms.base import (
    PER_ATOM_KEYS,
    UNCERTAINTY_KEYS,
    Transform,
    has_energy_hook,
    wrapped_apply,
)
from apax_core.transforms.calibration import CALIBRATION, Calibration
from apax_core.transforms.derivatives import (
    batched,
    default_chains,
    energy_forces_stress,
    inverse_volume,
    pair_vectors,
    total_energies,
    zero_strain,
)
from apax_core.transforms.ensemble import (
    ENSEMBLE_DDOF,
    mean_std,
    member_gradients,
    member_predictions,
)
from apax_core.transforms.features import feature_map
from apax_core.transforms.udd import UDD, udd_energy

__all__ = [
    "CALIBRATION",
    "ENSEMBLE_DDOF",
    "PER_ATOM_KEYS",
    "UDD",
    "UNCERTAINTY_KEYS",
    "Calibration",
    "Transform",
    "batched",
    "default_chains",
    "energy_forces_stress",
    "feature_map",
    "has_energy_hook",
    "inverse_volume",
    "mean_std",
    "member_gradients",
    "member_predictions",
    "pair_vectors",
    "total_energies",
    "udd_energy",
    "wrapped_apply",
    "zero_strain",
]
