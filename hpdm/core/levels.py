"""Adaptive computation: which pyramid levels each RIN block runs (paper Sec. 4.3, Listing 1)."""

from __future__ import annotations

from typing import Sequence

import gin


@gin.configurable
class LevelScheduler:
    """``num_levels_per_block[b]`` = how many levels (from level 0) block ``b`` processes.

    ``[1, 1, 2, 2, 3, 3]`` lets level 2 skip the first four blocks; ``[L+1] * num_blocks`` is the
    full model (no adaptive computation). Every level must run at least one block, so the last
    entry must cover all levels.
    """

    def __init__(self, num_levels_per_block: Sequence[int], num_levels: int):
        loads = [int(n) for n in num_levels_per_block]
        if not loads:
            raise ValueError("num_levels_per_block is empty")
        for b, n in enumerate(loads):
            if not 1 <= n <= num_levels:
                raise ValueError(
                    f"num_levels_per_block[{b}] = {n} is outside 1..{num_levels} for a {num_levels}-level pyramid"
                )
        if max(loads) != num_levels:
            raise ValueError(
                f"num_levels_per_block {loads} never runs level {num_levels - 1}: some block must take all {num_levels} levels"
            )
        self.loads = loads
        self.num_levels = num_levels

    @property
    def num_blocks(self) -> int:
        return len(self.loads)

    def levels_in_block(self, block: int, num_present: int) -> int:
        """Levels block ``block`` runs when only the first ``num_present`` levels are given."""
        return min(self.loads[block], num_present)

    def blocks_for_level(self, level: int) -> list[int]:
        """Indices of the blocks that run ``level``."""
        return [b for b, n in enumerate(self.loads) if n > level]

    def evaluations(self, num_present: int) -> int:
        """Level-block evaluations of one forward over the first ``num_present`` levels."""
        return sum(min(n, num_present) for n in self.loads)
