"""Seam score: how visible the last-level tile edges of tiled inference are (paper Sec. 4.4).

At the last pyramid level a video is denoised through ``patch_res`` tiles (paper Sec. 4.4, Tab. 4
compares overlap strategies). A visible seam is a jump in intensity across a tile edge. Per axis,
the score is

    mean |x[i+1] - x[i]| over neighbour pairs straddling a tile edge
    ---------------------------------------------------------------
    mean |x[i+1] - x[i]| over neighbour pairs away from every edge

so 1.0 means the edges look like any other place in the video and larger values mean seams.
The score is a pure function of the video and the edge positions; ``tile_edges`` derives those
from the tiling (last tile flush with the far edge, as the sampler tiles).

Videos are ``[..., T, H, W, C]`` (uint8 or float; the layout of video files and sampler output).
An edge position ``e`` is the boundary between pixels ``e - 1`` and ``e`` on its axis.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

AXES = ("t", "h", "w")


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` every ``stride`` pixels, the last flush with the end."""
    if tile <= 0 or stride <= 0:
        raise ValueError(f"tile ({tile}) and stride ({stride}) must be positive")
    if tile > length:
        raise ValueError(f"tile {tile} is larger than the axis length {length}")
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def tile_edges(length: int, tile: int, stride: int) -> list[int]:
    """Interior tile boundaries (tile starts and ends strictly inside ``(0, length)``), sorted."""
    edges = set()
    for start in tile_starts(length, tile, stride):
        edges.update((start, start + tile))
    return sorted(e for e in edges if 0 < e < length)


def overlap_stride(tile: int, overlap: float) -> int:
    """Stride of tiles overlapping by the fraction ``overlap`` (0 or 0.5 in the paper)."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    # Floor, as the sampler's ``tile // 2``: odd tiles must land on the same grid.
    return max(1, int(tile * (1.0 - overlap)))


def video_tile_edges(
    shape_thw: Sequence[int], patch_res: Sequence[int], overlap: Sequence[float]
) -> dict[str, list[int]]:
    """Edge positions per axis for a ``(T, H, W)`` video tiled by ``patch_res`` tiles."""
    return {
        axis: tile_edges(int(length), int(tile), overlap_stride(int(tile), float(ov)))
        for axis, length, tile, ov in zip(AXES, shape_thw, patch_res, overlap)
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
