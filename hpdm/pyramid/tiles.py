"""Tile plans and ancestor windows for tiled inference (paper Sec. 4.4, Table 4; docs/design.md, "Inference").

A level ``l >= 1`` is denoised as a whole video through tiles of ``patch_res``. On each axis the
tiles either abut (no overlap) or overlap by 50% (stride ``patch // 2``); in both cases the last
tile is placed flush with the far edge, so no pixel is left uncovered even when the level length is
not a multiple of the stride (the MultiDiffusion ``get_views`` trap).

Every tile needs context from the already generated lower levels: for each ``k < l`` the
``patch_res`` window of the level-``k`` video that contains the tile, centred on it, clamped to the
video, with integer offsets, and nested exactly like training patches (each ancestor window contains
the next finer one). Geometry only: no tensors of pixels here.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import torch

from hpdm.pyramid.geometry import AXES, Pyramid, Res

OVERLAP_AXES = "fhw"  # the paper's names for (t, h, w) in Table 4: f = frames


def parse_overlap(overlap: str | Sequence[bool] | None) -> tuple[bool, bool, bool]:
    """``"fhw"``-style string (any subset of f/t, h, w; ``""``/``"none"`` = no overlap) -> 3 bools."""
    if overlap is None:
        return (False, False, False)
    if not isinstance(overlap, str):
        flags = tuple(bool(v) for v in overlap)
        if len(flags) != 3:
            raise ValueError(f"overlap needs 3 flags (t, h, w), got {overlap}")
        return flags  # type: ignore[return-value]
    text = overlap.strip().lower()
    if text in ("", "none", "no"):
        return (False, False, False)
    bad = set(text) - set("fthw")
    if bad:
        raise ValueError(f"overlap {overlap!r}: use a subset of 'f' (or 't'), 'h', 'w', e.g. 'fhw' or 'hw'")
    return ("f" in text or "t" in text, "h" in text, "w" in text)


def tile_starts(length: int, tile: int, overlap: bool) -> list[int]:
    """Start offsets of the tiles covering ``[0, length)`` along one axis.

    Stride ``tile`` without overlap, ``max(1, tile // 2)`` with 50% overlap; the last tile is flush
    with the far edge (start ``length - tile``). With ``length = m * tile`` and overlap this gives
    the paper's ``2m - 1`` tiles per axis (Sec. 4.4).
    """
    if tile <= 0 or length <= 0:
        raise ValueError(f"tile and length must be positive, got tile={tile}, length={length}")
    if tile > length:
        raise ValueError(f"a {tile}-long tile does not fit a {length}-long axis")
    stride = max(1, tile // 2) if overlap else tile
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)  # flush with the far edge
    return starts


@dataclass(frozen=True)
class TilePlan:
    """All tiles of one level: integer offsets in the level grid and their patch coordinates.

    Attributes:
      level: the pyramid level tiled.
      level_res: ``(T, H, W)`` of the level video.
      patch_res: tile size (the pyramid's patch size).
      overlap: per-axis 50%-overlap flags ``(t, h, w)``.
      offsets: one ``(o_t, o_h, o_w)`` per tile, t-major order.
    """

    level: int
    level_res: Res
    patch_res: Res
    overlap: tuple[bool, bool, bool]
    offsets: tuple[Res, ...]

    @classmethod
    def build(cls, pyramid: Pyramid, level: int, overlap: str | Sequence[bool] | None = "fhw") -> "TilePlan":
        flags = parse_overlap(overlap)
        pyramid.max_offsets(level)  # validates the level with the pyramid's own message
        res = pyramid.resolutions[level]
        per_axis = [tile_starts(r, p, o) for r, p, o in zip(res, pyramid.patch_res, flags)]
        offsets = tuple(itertools.product(*per_axis))
        return cls(level, tuple(res), pyramid.patch_res, flags, offsets)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.offsets)

    def coverage(self) -> torch.Tensor:
        """``[T, H, W]`` float count of tiles covering each pixel (the MultiDiffusion normaliser)."""
        count = torch.zeros(self.level_res)
        for o in self.offsets:
            count[tuple(slice(a, a + p) for a, p in zip(o, self.patch_res))] += 1
        return count


def parent_window(child_offset: int, patch: int, upscale: int, parent_length: int) -> int:
    """Offset of the ``patch``-long parent window containing a child window, centred and clamped.

    The child spans ``[o, o + patch)`` in its own grid, i.e. ``[o / u, (o + patch) / u)`` in the
    parent grid (``u`` = 1 or 2). The parent start is the rounded centred position, clamped first to
    the starts that contain the child's footprint and then to the video; the two ranges always
    intersect because the footprint lies inside the parent video.
    """
    u = upscale
    lo_contain = -(-(child_offset + patch) // u) - patch  # ceil((o + p) / u) - p
    hi_contain = child_offset // u  # floor(o / u)
    lo = max(lo_contain, 0)
    hi = min(hi_contain, parent_length - patch)
    if lo > hi:  # cannot happen for a valid child; guard so a geometry bug fails loudly
        raise AssertionError(f"no parent window for child offset {child_offset} (patch {patch}, upscale {u})")
    # Centre of the footprint, in parent pixels, minus half a window; round half up in integers.
    centred = (2 * child_offset + patch - u * patch + u) // (2 * u)
    return min(max(centred, lo), hi)


def ancestor_offsets(pyramid: Pyramid, level: int, tile_offset: Sequence[int]) -> list[Res]:
    """Offsets of the ancestor windows of one level-``level`` tile, for levels ``0 .. level - 1``.

    Built fine to coarse, so each window contains the next finer one (the training nesting of
    ``sample_nested_offsets``) and hence the tile itself. Level 0's window is the whole level-0 video.
    """
    pyramid.coords(level, tile_offset)  # validates the tile
    windows: list[Res] = []
    child = tuple(int(o) for o in tile_offset)
    for k in range(level - 1, -1, -1):
        up = pyramid.upscale(k + 1)
        child = tuple(
            parent_window(o, p, u, r)
            for o, p, u, r in zip(child, pyramid.patch_res, up, pyramid.resolutions[k])
        )
        windows.append(child)  # type: ignore[arg-type]
    return windows[::-1]


def ancestor_coords(pyramid: Pyramid, level: int, tile_offset: Sequence[int]) -> tuple[list[Res], torch.Tensor]:
    """Ancestor offsets and their patch coordinates ``[level, 6]`` (via the one coordinate function)."""
    offs = ancestor_offsets(pyramid, level, tile_offset)
    if not offs:
        return offs, torch.zeros(0, 6)
    return offs, torch.stack([pyramid.coords(k, o) for k, o in enumerate(offs)])


__all__ = [
    "AXES",
    "OVERLAP_AXES",
    "TilePlan",
    "ancestor_coords",
    "ancestor_offsets",
    "parent_window",
    "parse_overlap",
    "tile_starts",
]
