"""Pyramid geometry: level resolutions and patch coordinates (paper Sec. 4, 4.1; docs/design.md, "Pyramid").

A pyramid is fixed by ``target_res`` (the full video, ``(T, H, W)``) and ``patch_res`` (the size of
every patch). Level ``l`` holds the whole video at ``R_l = patch_res * 2**l``, capped per axis at
``target_res``; level 0 is the whole video at ``patch_res`` (patch scale ``s = 1``) and the last
level is full resolution. Every level-``l`` video is an exact average-pooling of the full video by
the integer factor ``target_res / R_l`` per axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import torch

Res = Tuple[int, int, int]

AXES = ("t", "h", "w")


def _as_res(value: Sequence[int], name: str) -> Res:
    res = tuple(int(v) for v in value)
    if len(res) != 3 or any(v <= 0 for v in res):
        raise ValueError(f"{name} must be three positive integers (T, H, W), got {tuple(value)}")
    return res  # type: ignore[return-value]


def _log2_exact(ratio_num: int, ratio_den: int, axis: str) -> int:
    if ratio_num % ratio_den:
        raise ValueError(
            f"target/patch ratio on axis {axis} is {ratio_num}/{ratio_den}, not an integer; "
            "every axis ratio must be a power of two"
        )
    ratio = ratio_num // ratio_den
    if ratio & (ratio - 1):
        raise ValueError(f"target/patch ratio on axis {axis} is {ratio}, not a power of two")
    return ratio.bit_length() - 1


def level_resolutions(target_res: Sequence[int], patch_res: Sequence[int]) -> list[Res]:
    """Resolution of the whole video at every level, coarse to fine (paper Sec. 4, s_l = 1/2**l).

    ``R_l = patch_res * 2**l`` capped per axis at ``target_res``; the number of levels is one more
    than the largest per-axis ``log2(target / patch)``.
    """
    target = _as_res(target_res, "target_res")
    patch = _as_res(patch_res, "patch_res")
    for axis, t, p in zip(AXES, target, patch):
        if p > t:
            raise ValueError(f"patch_res {patch} exceeds target_res {target} on axis {axis}")
    doublings = [_log2_exact(t, p, a) for a, t, p in zip(AXES, target, patch)]
    num_levels = max(doublings) + 1
    return [
        tuple(min(p << level, t) for p, t in zip(patch, target))  # type: ignore[misc]
        for level in range(num_levels)
    ]


@dataclass(frozen=True)
class Pyramid:
    """The nested patch pyramid of one model (paper Sec. 4, Fig. 2).

    Attributes:
      target_res: full-resolution video size ``(T, H, W)``.
      patch_res: size of every patch ``(t, h, w)``.
      resolutions: one ``(T, H, W)`` per level, coarse to fine.
    """

    target_res: Res
    patch_res: Res

    def __init__(self, target_res: Sequence[int], patch_res: Sequence[int]):
        object.__setattr__(self, "target_res", _as_res(target_res, "target_res"))
        object.__setattr__(self, "patch_res", _as_res(patch_res, "patch_res"))
        object.__setattr__(self, "resolutions", level_resolutions(self.target_res, self.patch_res))

    @property
    def num_levels(self) -> int:
        return len(self.resolutions)

    def pool_factor(self, level: int) -> Res:
        """Integer average-pooling factor from full resolution down to ``level``."""
        self._check_level(level)
        return tuple(t // r for t, r in zip(self.target_res, self.resolutions[level]))  # type: ignore

    def upscale(self, level: int) -> Res:
        """Per-axis resolution ratio ``R_level / R_{level-1}`` (1 or 2) for ``level >= 1``."""
        if level < 1:
            raise ValueError("level 0 has no parent level")
        self._check_level(level)
        return tuple(a // b for a, b in zip(self.resolutions[level], self.resolutions[level - 1]))  # type: ignore

    def max_offsets(self, level: int) -> Res:
        """Largest valid integer patch offset per axis at ``level``."""
        self._check_level(level)
        return tuple(r - p for r, p in zip(self.resolutions[level], self.patch_res))  # type: ignore

    def coords(self, level: int, offsets: Sequence[int]) -> torch.Tensor:
        """Patch coordinates of the patch at integer ``offsets`` in the level grid (see ``patch_coords``)."""
        self._check_level(level)
        return patch_coords(self.resolutions[level], self.patch_res, offsets)

    def _check_level(self, level: int) -> None:
        if not 0 <= level < self.num_levels:
            raise ValueError(f"level {level} out of range for a {self.num_levels}-level pyramid")


def patch_coords(level_res: Sequence[int], patch_res: Sequence[int], offsets: Sequence[int]) -> torch.Tensor:
    """The 6 patch coordinates ``[s_t, s_h, s_w, d_t, d_h, d_w]`` (paper Sec. 4.1, docs/design.md, "Patch coordinates").

    Normalised to the full video extent: the patch covers ``[d, d + s)`` on every axis, with
    ``s = patch / R_l`` and ``d = offset / R_l``. Training and sampling both call this function, so
    the two can never disagree on the normalisation.
    """
    level_res = _as_res(level_res, "level_res")
    patch_res = _as_res(patch_res, "patch_res")
    offs = [int(o) for o in offsets]
    if len(offs) != 3:
        raise ValueError(f"offsets must have 3 entries (t, h, w), got {offsets}")
    for axis, o, p, r in zip(AXES, offs, patch_res, level_res):
        if not 0 <= o <= r - p:
            raise ValueError(f"offset {o} on axis {axis} puts a {p}-patch outside a {r}-long level")
    scale = [p / r for p, r in zip(patch_res, level_res)]
    offset = [o / r for o, r in zip(offs, level_res)]
    return torch.tensor(scale + offset, dtype=torch.float32)


def check_coords(coords: torch.Tensor) -> None:
    """Raise ValueError unless ``coords [..., 6]`` are valid patch coordinates."""
    if coords.shape[-1] != 6:
        raise ValueError(f"coords must end in 6 numbers (3 scales, 3 offsets), got shape {tuple(coords.shape)}")
    if not torch.isfinite(coords).all():
        raise ValueError("coords contain NaN or inf")
    scale, offset = coords[..., :3], coords[..., 3:]
    eps = 1e-5
    if (scale <= 0).any() or (scale > 1 + eps).any():
        raise ValueError("coords scales must lie in (0, 1]")
    if (offset < -eps).any() or (offset + scale > 1 + eps).any():
        raise ValueError("coords describe a patch outside the video: need 0 <= offset and offset + scale <= 1")
