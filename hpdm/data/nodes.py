"""``torchdata.nodes`` building blocks: the sharded epoch sampler, the skip filter, the collate.

This is hpdm's one seam to torchdata (maintenance-only upstream; ``setup.py`` bounds it to the
tested series): no other module imports it (``tests/test_dependencies.py``). The loader takes the
stock nodes it composes from here, and ``shutdown_pipeline`` keeps the knowledge of torchdata's
internals (how a node graph stops its threads and worker processes) in this file too.

Each node's state is a small dict of plain numbers and strings, so ``Loader.state_dict()`` can be
saved with the training checkpoint and loaded with ``torch.load(weights_only=True)``.

Elastic resume: every rank visits an epoch's permutation strided by rank, so the samplers' positions
of all ranks say exactly which items of the epoch were visited, whatever the world size. A run
resumed on another number of ranks (``continue_epoch``) shards what is left of the epoch over the new
ranks in the same global order, and from the next epoch on every rank shards the whole permutation
again. The state records each such change (``handover``: the old world size and its ranks'
positions), so the order stays a function of the state alone and a later resume is exact.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
from absl import logging
from torchdata.nodes import Batcher, BaseNode, Loader, Mapper, ParallelMapper, Prefetcher  # noqa: F401

from hpdm.data.hierarchy import Skipped
from hpdm.data.seeding import derive_seed

_PERMUTATION_SALT = -1  # distinguishes the epoch-permutation seed from per-sample seeds


def epoch_order(length: int, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    """Every index once, in the global order of ``epoch``: a ``(seed, epoch)`` permutation."""
    if not shuffle:
        return torch.arange(length)
    gen = torch.Generator().manual_seed(derive_seed(seed, epoch, _PERMUTATION_SALT))
    return torch.randperm(length, generator=gen)


def unvisited(order: torch.Tensor, world_size: int, positions: Sequence[int]) -> torch.Tensor:
    """What is left of ``order`` once rank ``r`` of ``world_size`` (sharding it strided by rank) has
    visited the first ``positions[r]`` items of its shard; in the same global order."""
    if len(positions) != world_size:
        raise ValueError(f"{len(positions)} positions for {world_size} ranks")
    keep = torch.ones(len(order), dtype=torch.bool)
    for rank, position in enumerate(positions):
        keep[rank : rank + world_size * int(position) : world_size] = False
    return order[keep]


def shard_indices(
    length: int,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    shuffle: bool = True,
    handover: Sequence = (),
) -> torch.Tensor:
    """Indices rank ``rank`` visits in ``epoch``: a ``(seed, epoch)`` permutation, strided by rank.

    Shards are disjoint and their union is every index once; sizes differ by at most one (no
    padding, so no sample is seen twice per epoch). ``handover``: ``(world_size, positions)`` of
    the runs that visited part of this epoch before, oldest first; only the rest is sharded.
    """
    order = epoch_order(length, seed, epoch, shuffle)
    for old_world, positions in handover:
        order = unvisited(order, int(old_world), positions)
    return order[rank::world_size]


def continue_epoch(states: Sequence[Dict[str, Any]], rank: int, world_size: int) -> Dict[str, Any]:
    """The ``EpochSampler`` state of rank ``rank`` of ``world_size`` that continues the global order
    where the samplers of another world size (``states``, one per old rank, in rank order) stopped.

    The ranks of a run are at most one epoch apart (the strided shards differ by at most one item,
    or by a rank's skipped samples): a rank already in the next epoch counts as having finished the
    current one, and the items it visited in the next are visited again (logged). No other item is
    visited twice or left out.
    """
    old_world = len(states)
    for r, state in enumerate(states):
        if (state["rank"], state["world_size"]) != (r, old_world):
            raise ValueError(f"sampler state {r} is rank {state['rank']} of {state['world_size']}, expected {r} of {old_world}")
        if (state["length"], state["seed"]) != (states[0]["length"], states[0]["seed"]):
            raise ValueError("the sampler states come from different data (length or seed differ)")
    epoch = min(int(s["epoch"]) for s in states)
    current = [s for s in states if int(s["epoch"]) == epoch]
    handover = [list(h) for h in current[0].get("handover", [])]
    length, seed = int(states[0]["length"]), int(states[0]["seed"])
    positions, replayed = [], 0
    for r, state in enumerate(states):
        if int(state["epoch"]) == epoch:
            positions.append(int(state["position"]))
        else:
            # Shard sizes depend on counts only, not on the permutation.
            positions.append(len(shard_indices(length, seed, epoch, r, old_world, False, handover)))
            replayed += int(state["position"])
    if replayed:
        logging.warning(
            "Resuming %d ranks' data on %d: %d items some ranks had already visited in epoch %d are visited again",
            old_world,
            world_size,
            replayed,
            epoch + 1,
        )
    return {
        "epoch": epoch,
        "position": 0,
        "handover": handover + [[old_world, positions]],
        "length": length,
        "seed": seed,
        "rank": rank,
        "world_size": world_size,
    }


class EpochSampler(BaseNode):
    """Endless ``(epoch, index)`` pairs over this rank's shard; a new permutation each epoch."""

    def __init__(self, length: int, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        super().__init__()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world size {world_size}")
        if length < world_size:
            raise ValueError(f"{length} samples cannot be sharded over {world_size} ranks")
        self.length, self.seed, self.rank, self.world_size, self.shuffle = length, seed, rank, world_size, shuffle
        self._shard: Optional[torch.Tensor] = None
        self._origin: Optional[Dict[str, Any]] = None

    def _fingerprint(self) -> Dict[str, int]:
        return {"length": self.length, "seed": self.seed, "rank": self.rank, "world_size": self.world_size}

    def start_at(self, state: Dict[str, Any]) -> None:
        """Start the next ``reset()`` without a state at ``state`` instead of epoch 0 (elastic resume:
        the pipeline above this node starts empty, this node continues the global order)."""
        self._check_fingerprint(state)
        self._origin = dict(state)

    def _check_fingerprint(self, state: Dict[str, Any]) -> None:
        saved = {k: state[k] for k in self._fingerprint()}
        if saved != self._fingerprint():
            raise ValueError(
                f"data loader state was saved for {saved}, this loader has {self._fingerprint()}; "
                "resuming would not reproduce the interrupted run"
            )

    def reset(self, initial_state: Optional[Dict[str, Any]] = None):
        super().reset(initial_state)
        state = initial_state if initial_state is not None else self._origin
        self.epoch, self.position, self.handover = 0, 0, []
        if state is not None:
            self._check_fingerprint(state)
            self.epoch, self.position = int(state["epoch"]), int(state["position"])
            self.handover = [list(h) for h in state.get("handover", [])]  # absent before elastic resume
        self._shard = self._epoch_shard()

    def _epoch_shard(self) -> torch.Tensor:
        return shard_indices(
            self.length, self.seed, self.epoch, self.rank, self.world_size, self.shuffle, self.handover
        )

    def next(self):
        if self.position >= len(self._shard):
            self.epoch, self.position, self.handover = self.epoch + 1, 0, []
            self._shard = self._epoch_shard()
        index = int(self._shard[self.position])
        self.position += 1
        return self.epoch, index

    def get_state(self) -> Dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "handover": [list(h) for h in self.handover],
            **self._fingerprint(),
        }


class DropSkipped(BaseNode):
    """Drops ``Skipped`` markers, counts them, and logs the count with the first paths.

    The log fires at the 1st, 2nd, 4th, 8th, ... skip, so a few bad files are reported once and a
    steady stream of failures stays visible without flooding the log. ``max_consecutive`` failures
    in a row mean the data is unusable, which is an error naming the root.
    """

    def __init__(self, source: BaseNode, root: str, max_paths: int = 5, max_consecutive: int = 1000):
        super().__init__()
        self.source, self.root, self.max_paths, self.max_consecutive = source, root, max_paths, max_consecutive

    def reset(self, initial_state: Optional[Dict[str, Any]] = None):
        super().reset(initial_state)
        if initial_state is not None:
            self.source.reset(initial_state["source"])
            self.count, self.first = int(initial_state["count"]), list(initial_state["first"])
        else:
            self.source.reset()
            self.count, self.first = 0, []

    def next(self):
        consecutive = 0
        while True:
            item = next(self.source)
            if not isinstance(item, Skipped):
                return item
            self.count += 1
            consecutive += 1
            if len(self.first) < self.max_paths:
                self.first.append(f"{item.path} ({item.reason})")
            if self.count & (self.count - 1) == 0:
                logging.warning("%s", self.message())
            if consecutive >= self.max_consecutive:
                raise RuntimeError(f"{consecutive} samples in a row failed to load from {self.root}. {self.message()}")

    def message(self) -> str:
        return f"Skipped {self.count} samples at load time under {self.root}; first: {'; '.join(self.first)}"

    def get_state(self) -> Dict[str, Any]:
        return {"source": self.source.state_dict(), "count": self.count, "first": list(self.first)}


def collate(samples: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Stack samples into the model's batch layout (docs/design.md, "Batch layout"): ``x [B, L+1, C, t, h, w]``, ``coords [B, L+1, 6]``.

    ``label`` (LongTensor[B]) is present when the source has classes, ``text`` (list[str]) when it
    has captions; ``index`` (LongTensor[B]) names the source items, for debugging and tests.
    """
    batch: Dict[str, Any] = {
        "x": torch.stack([torch.as_tensor(s["x"]) for s in samples]),
        "coords": torch.stack([torch.as_tensor(s["coords"]) for s in samples]),
        "index": torch.tensor([s["index"] for s in samples], dtype=torch.long),
    }
    if samples[0]["label"] is not None:
        batch["label"] = torch.tensor([s["label"] for s in samples], dtype=torch.long)
    if samples[0]["text"] is not None:
        batch["text"] = [s["text"] for s in samples]
    return batch


def shutdown_pipeline(obj: Any, seen: Optional[set] = None) -> None:
    """Stop the background threads/processes of a torchdata node graph (they have ``_shutdown``)."""
    seen = set() if seen is None else seen
    if obj is None or id(obj) in seen:
        return
    seen.add(id(obj))
    for name in ("_it", "source", "root", "_loader"):
        shutdown_pipeline(getattr(obj, name, None), seen)
    if hasattr(obj, "_shutdown"):
        obj._shutdown()
