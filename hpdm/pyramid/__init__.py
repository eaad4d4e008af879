"""Pyramid geometry only: levels, coordinates, nested patches, tile plans, Eq. 8 remapping."""

from hpdm.pyramid.geometry import Pyramid, check_coords, level_resolutions, patch_coords
from hpdm.pyramid.patches import (
    extract_hierarchy,
    extract_patch,
    level_video,
    sample_hierarchy,
    sample_nested_offsets,
)
from hpdm.pyramid.remap import interpolation_matrices, remap_coords, resample, sampling_grid
from hpdm.pyramid.tiles import TilePlan, ancestor_coords, ancestor_offsets, parse_overlap, tile_starts

__all__ = [
    "Pyramid",
    "TilePlan",
    "ancestor_coords",
    "ancestor_offsets",
    "check_coords",
    "extract_hierarchy",
    "extract_patch",
    "interpolation_matrices",
    "level_resolutions",
    "level_video",
    "parse_overlap",
    "patch_coords",
    "remap_coords",
    "resample",
    "sample_hierarchy",
    "sample_nested_offsets",
    "sampling_grid",
    "tile_starts",
]
