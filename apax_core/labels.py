"""The reference labels a structure may carry, named once: training specs, structures and
error metrics import them from here (a leaf module, light enough for the data layer)."""

from __future__ import annotations

from typing import Literal, get_args

Label = Literal["energy", "forces", "stress"]
"""energy (eV), forces (eV/A), stress (eV/A^3, ASE's sign convention)."""

LABELS: tuple[str, ...] = get_args(Label)
