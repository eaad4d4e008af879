"""Interleaved timing: the ratios ``hpdm-bench`` reports, robust to a shared machine (issue 24, item 1).

A ratio of two times measured one after the other mixes the two code paths with whatever else the
machine did in between: on a shared CPU a neighbour's job that starts halfway through makes the
second path look slower. Here every contender runs once per round, rounds repeat (A, B, A, B, ...),
and each round gives one ratio from two times taken seconds apart. The reported ratio is the median
over rounds and its spread is ``[min, max]`` over the same rounds, so two runs can be compared by
their ranges, not only by their medians.

Everything here is pure bookkeeping around callables; what a call does (a training step, a matmul,
a sampling step) and how it is clocked (wall clock on CPU, CUDA events or a self-timed block on GPU)
is the caller's.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

Clock = Callable[[Callable[[], object]], float]

MIN_ROUNDS = 3


@dataclass(frozen=True)
class Spread:
    """One ratio over interleaved rounds: every round's value, their median and ``[min, max]``."""

    values: tuple

    @property
    def median(self) -> float:
        return float(statistics.median(self.values))

    @property
    def range(self) -> list:
        return [float(min(self.values)), float(max(self.values))]

    @classmethod
    def constant(cls, value: float) -> "Spread":
        """A quantity that is computed, not timed (a memory or FLOP ratio): the same in every round."""
        return cls((float(value),))


def interleave(
    calls: Mapping[str, Callable[[], object]],
    clock: Clock,
    rounds: int = MIN_ROUNDS,
    warmup: int = 1,
    best_of: int | Mapping[str, int] = 1,
) -> dict:
    """Seconds of every call in ``calls`` (name -> zero-argument callable), ``rounds`` times round-robin.

    ``warmup`` untimed rounds come first (allocator growth, kernel selection, lazy initialisation
    make the first calls slower). ``clock(fn)`` runs ``fn`` once and returns its seconds. Within a
    round each call is timed ``best_of`` times back to back and its shortest time kept: a neighbour's
    burst of work only ever lengthens a call, so the shortest is the least disturbed. Returns name ->
    list of ``rounds`` times, round ``i`` of every name measured within the same round. ``best_of``
    may name a count per call (a mapping; calls it leaves out take 1): cheap calls can afford more
    tries, and a call right after a heavy one (whose freed memory the next call pays for in page
    faults) needs them.
    """
    tries = {name: int(best_of.get(name, 1) if isinstance(best_of, Mapping) else best_of) for name in calls}
    if rounds < 1 or min(tries.values(), default=1) < 1:
        raise ValueError(f"rounds and best_of must be at least 1, got {rounds} and {best_of}")
    for _ in range(max(0, warmup)):
        for fn in calls.values():
            fn()
    times: dict = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            times[name].append(min(float(clock(fn)) for _ in range(tries[name])))
    return times


def ratio(numerator: Sequence[float], denominator: Sequence[float], scale: float = 1.0) -> Spread:
    """``scale * numerator[i] / denominator[i]`` for each round ``i`` (two times of the same round)."""
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError(f"need the same non-zero number of rounds, got {len(numerator)} and {len(denominator)}")
    return Spread(tuple(scale * a / b for a, b in zip(numerator, denominator)))


def interleave_pair(
    a: Callable[[], object],
    b: Callable[[], object],
    clock: Clock,
    pairs: int = MIN_ROUNDS,
    warmup: int = 1,
    best_of: int = 1,
) -> dict:
    """A and B interleaved (``warmup`` untimed pairs, then ``pairs`` timed ones): per-pair seconds and
    the per-pair ratio ``time(A) / time(B)`` with its median and ``[min, max]``."""
    times = interleave({"a": a, "b": b}, clock, rounds=pairs, warmup=warmup, best_of=best_of)
    spread = ratio(times["a"], times["b"])
    return {"a_seconds": times["a"], "b_seconds": times["b"], "ratios": list(spread.values),
            "ratio": spread.median, "range": spread.range}
