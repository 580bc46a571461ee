"""Batch active learning: feature maps, greedy max-distance selection, baselines, diagnostics."""

from apax_core.select.api import Selection, check_request, select, write_diagnostics
from apax_core.select.baselines import random_selection, spaced_top_k, uncertainties
from apax_core.select.diagnostics import pca_2d, write_distance_curve, write_pca
from apax_core.select.features import compute_features, feature_dim, projection_matrix
from apax_core.select.maxdist import max_distance_selection, min_squared_distances

__all__ = [
    "Selection",
    "check_request",
    "compute_features",
    "feature_dim",
    "max_distance_selection",
    "min_squared_distances",
    "pca_2d",
    "projection_matrix",
    "random_selection",
    "select",
    "spaced_top_k",
    "uncertainties",
    "write_diagnostics",
    "write_distance_curve",
    "write_pca",
]
