"""Data pipeline: files -> Structures -> neighbour lists -> padded, fixed-shape Batches (numpy)."""

from apax_core.data.batch import Batch
from apax_core.data.dataset import Dataset, epoch_order, prefetch
from apax_core.data.io import DataError, read_frames, write_frames
from apax_core.data.neighbours import NeighbourList, neighbour_list
from apax_core.data.padding import collate, pad_sizes
from apax_core.data.statistics import (
    element_counts,
    energy_residual_rms,
    energy_shift,
    force_scale,
)
from apax_core.data.structure import Structure, check_labels, from_atoms, species_index

__all__ = [
    "Batch",
    "DataError",
    "Dataset",
    "NeighbourList",
    "Structure",
    "check_labels",
    "collate",
    "element_counts",
    "energy_residual_rms",
    "energy_shift",
    "epoch_order",
    "force_scale",
    "from_atoms",
    "neighbour_list",
    "pad_sizes",
    "prefetch",
    "read_frames",
    "species_index",
    "write_frames",
]
