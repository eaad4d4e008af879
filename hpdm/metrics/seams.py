"""Seam score: how visible the last-level tile edges of tiled inference are (paper Sec. 4.4).

At the last pyramid level a video is denoised through ``patch_res`` tiles (paper Sec. 4.4, Tab. 4
compares overlap strategies). A visible seam is a jump in intensity across a tile edge. Per axis,
the score is

    mean |x[i+1] - x[i]| over neighbour pairs straddling a tile edge
    ---------------------------------------------------------------
    mean |x[i+1] - x[i]| over neighbour pairs away from every edge

so 1.0 means the edges look like any other place in the video and larger values mean seams.
The score is a pure function of the video and the edge positions; ``tile_edges`` derives those
from the sampler's own tiling (``hpdm.pyramid.tiles``: last tile flush with the far edge).

Videos are ``[..., T, H, W, C]`` (uint8 or float; the layout of video files and sampler output).
An edge position ``e`` is the boundary between pixels ``e - 1`` and ``e`` on its axis.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from hpdm.pyramid.tiles import parse_overlap, tile_starts

AXES = ("t", "h", "w")


def tile_edges(length: int, tile: int, overlap: bool) -> list[int]:
    """Interior tile boundaries (tile starts and ends strictly inside ``(0, length)``), sorted.

    The tiles are the sampler's own (``hpdm.pyramid.tiles.tile_starts``): abutting, or overlapping
    by 50% with stride ``tile // 2``, the last one flush with the far edge.
    """
    edges = set()
    for start in tile_starts(length, tile, overlap):
        edges.update((start, start + tile))
    return sorted(e for e in edges if 0 < e < length)


def video_tile_edges(
    shape_thw: Sequence[int], patch_res: Sequence[int], overlap: str | Sequence[bool] | None
) -> dict[str, list[int]]:
    """Edge positions per axis for a ``(T, H, W)`` video tiled by ``patch_res`` tiles.

    ``overlap`` is the sampler's: the 50%-overlap axes as ``"fhw"``-style text or three flags
    (``hpdm.pyramid.tiles.parse_overlap``).
    """
    per_axis = parse_overlap(overlap)
    return {
        axis: tile_edges(int(length), int(tile), axis_overlap)
        for axis, length, tile, axis_overlap in zip(AXES, shape_thw, patch_res, per_axis)
    }


def _edge_masks(length: int, edges: Sequence[int], margin: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks over the ``length - 1`` neighbour pairs: on an edge, and at least ``margin`` away."""
    boundaries = np.arange(1, length)  # pair i straddles boundary i + 1
    edges = np.asarray(sorted(set(int(e) for e in edges)), dtype=np.int64)
    if edges.size and (edges.min() <= 0 or edges.max() >= length):
        raise ValueError(f"edge positions must lie in (0, {length}), got {edges.tolist()}")
    if edges.size == 0:
        return np.zeros(length - 1, bool), np.ones(length - 1, bool)
    distance = np.abs(boundaries[:, None] - edges[None, :]).min(axis=1)
    return distance == 0, distance >= margin


class SeamAccumulator:
    """Streams seam statistics over many videos; ``scores()`` gives the per-axis ratios."""

    def __init__(self, margin: int = 1):
        if margin < 1:
            raise ValueError("margin must be at least 1 (0 would count edge pairs as 'away')")
        self.margin = margin
        self._sums = {axis: np.zeros(4, dtype=np.float64) for axis in AXES}

    def update(self, videos, edges: Mapping[str, Sequence[int]]) -> None:
        """Adds videos ``[..., T, H, W, C]`` with tile edges ``{"t": [...], "h": [...], "w": [...]}``."""
        videos = np.asarray(videos.cpu() if hasattr(videos, "cpu") else videos)
        if videos.ndim < 4:
            raise ValueError(f"videos must be [..., T, H, W, C], got shape {videos.shape}")
        values = videos.astype(np.float64)
        for axis_index, axis in enumerate(AXES):
            axis_edges = edges.get(axis, ())
            if not axis_edges:
                continue
            dim = values.ndim - 4 + axis_index
            diffs = np.abs(np.diff(values, axis=dim))
            diffs = np.moveaxis(diffs, dim, -1).reshape(-1, diffs.shape[dim])
            per_pair = diffs.sum(axis=0)
            on_edge, away = _edge_masks(values.shape[dim], axis_edges, self.margin)
            self._sums[axis] += (
                per_pair[on_edge].sum(), on_edge.sum() * diffs.shape[0],
                per_pair[away].sum(), away.sum() * diffs.shape[0],
            )

    def scores(self) -> dict[str, float]:
        """Per-axis ratio for every axis that had edges and away pairs; absent axes are omitted.

        A perfectly flat video has no differences at all; it has no visible seam, so 0/0 reads 1.
        """
        result = {}
        for axis, (edge_sum, edge_count, away_sum, away_count) in self._sums.items():
            if edge_count == 0 or away_count == 0:
                continue
            edge_mean, away_mean = edge_sum / edge_count, away_sum / away_count
            if away_mean == 0.0:
                result[axis] = 1.0 if edge_mean == 0.0 else float("inf")
            else:
                result[axis] = float(edge_mean / away_mean)
        return result


def seam_score(videos, edges: Mapping[str, Sequence[int]], margin: int = 1) -> dict[str, float]:
    """Per-axis seam score of ``videos`` ``[..., T, H, W, C]`` at the given tile edge positions."""
    accumulator = SeamAccumulator(margin)
    accumulator.update(videos, edges)
    return accumulator.scores()
