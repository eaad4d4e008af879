"""``torchdata.nodes`` building blocks: the sharded epoch sampler, the skip filter, the collate.

Each node's state is a small dict of plain numbers and strings, so ``Loader.state_dict()`` can be
saved with the training checkpoint and loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from absl import logging
from torchdata.nodes import BaseNode

from hpdm.data.hierarchy import Skipped
from hpdm.data.seeding import derive_seed

_PERMUTATION_SALT = -1  # distinguishes the epoch-permutation seed from per-sample seeds


def shard_indices(length: int, seed: int, epoch: int, rank: int, world_size: int, shuffle: bool = True) -> torch.Tensor:
    """Indices rank ``rank`` visits in ``epoch``: a ``(seed, epoch)`` permutation, strided by rank.

    Shards are disjoint and their union is every index once; sizes differ by at most one (no
    padding, so no sample is seen twice per epoch).
    """
    if shuffle:
        gen = torch.Generator().manual_seed(derive_seed(seed, epoch, _PERMUTATION_SALT))
        order = torch.randperm(length, generator=gen)
    else:
        order = torch.arange(length)
    return order[rank::world_size]


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

    def _fingerprint(self) -> Dict[str, int]:
        return {"length": self.length, "seed": self.seed, "rank": self.rank, "world_size": self.world_size}

    def reset(self, initial_state: Optional[Dict[str, Any]] = None):
        super().reset(initial_state)
        self.epoch, self.position = 0, 0
        if initial_state is not None:
            saved = {k: initial_state[k] for k in self._fingerprint()}
            if saved != self._fingerprint():
                raise ValueError(
                    f"data loader state was saved for {saved}, this loader has {self._fingerprint()}; "
                    "resuming would not reproduce the interrupted run"
                )
            self.epoch, self.position = int(initial_state["epoch"]), int(initial_state["position"])
        self._shard = shard_indices(self.length, self.seed, self.epoch, self.rank, self.world_size, self.shuffle)

    def next(self):
        if self.position >= len(self._shard):
            self.epoch, self.position = self.epoch + 1, 0
            self._shard = shard_indices(self.length, self.seed, self.epoch, self.rank, self.world_size, self.shuffle)
        index = int(self._shard[self.position])
        self.position += 1
        return self.epoch, index

    def get_state(self) -> Dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, **self._fingerprint()}


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
    """Stack samples into the model's batch layout (DESIGN.md): ``x [B, L+1, C, t, h, w]``, ``coords [B, L+1, 6]``.

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
