"""Exact resume, sharding and throughput of the training loader (hpdm/data/loader.py)."""

from __future__ import annotations

import io
import threading

import pytest
import torch

import hpdm.data as data
from hpdm.data.nodes import shard_indices
from data_fixtures import make_video_tree

TARGET, PATCH = (4, 16, 16), (2, 8, 8)


def _take(loader, n):
    return [next(loader) for _ in range(n)]


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def _roundtrip(state):
    # The state travels inside a checkpoint that is read back with weights_only=True.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize(
    "num_workers,method,source_kind",
    [(0, "thread", "synthetic"), (2, "thread", "synthetic"), (2, "thread", "folder"), (2, "process", "synthetic")],
)
def test_resume_is_bit_exact(tmp_path, num_workers, method, source_kind):
    if source_kind == "folder":
        root = str(tmp_path / "videos")
        make_video_tree(root)

        def make_source():
            return data.VideoFolder(root, captions="captions.jsonl")

    else:

        def make_source():
            return data.SyntheticVideos(length=10)  # 10 items, batches of 3: resume crosses epochs

    def build():
        return data.build_train_loader(
            batch_size=3, target_res=TARGET, patch_res=PATCH, source=make_source(), seed=7,
            num_workers=num_workers, worker_method=method,
        )

    k, m = 3, 4
    reference = build()
    expected = _take(reference, k + m)
    reference.close()

    interrupted = build()
    _take(interrupted, k)
    state = _roundtrip(interrupted.state_dict())
    interrupted.close()

    fresh = build()
    assert not torch.equal(next(fresh)["x"], expected[k]["x"])  # restoring must matter
    fresh.close()

    resumed = build()
    resumed.load_state_dict(state)
    for want, got in zip(expected[k:], _take(resumed, m)):
        _assert_same(want, got)
    resumed.close()


def test_workers_do_not_change_the_data():
    def batches(num_workers):
        loader = data.build_train_loader(
            batch_size=2, target_res=TARGET, patch_res=PATCH, source=data.SyntheticVideos(length=50), num_workers=num_workers
        )
        out = _take(loader, 3)
        loader.close()
        return out

    for a, b in zip(batches(0), batches(2)):
        _assert_same(a, b)


def test_restore_into_a_different_loader_is_an_error():
    loader = data.build_train_loader(batch_size=2, target_res=TARGET, patch_res=PATCH, source=data.SyntheticVideos(length=10))
    next(loader)
    state = loader.state_dict()
    loader.close()
    other = data.build_train_loader(batch_size=2, target_res=TARGET, patch_res=PATCH, source=data.SyntheticVideos(length=12))
    other.load_state_dict(state)
    with pytest.raises(ValueError, match="resuming would not reproduce"):
        next(other)
    other.close()


def test_shards_are_disjoint_and_complete():
    for epoch in range(3):
        shards = [set(shard_indices(11, seed=3, epoch=epoch, rank=r, world_size=2).tolist()) for r in range(2)]
        assert not shards[0] & shards[1]
        assert shards[0] | shards[1] == set(range(11))

    # Through the loaders themselves: one epoch of each rank covers the 10 items once.
    seen = []
    for rank in range(2):
        loader = data.build_train_loader(
            batch_size=1, target_res=TARGET, patch_res=PATCH, source=data.SyntheticVideos(length=10),
            rank=rank, world_size=2,
        )
        seen.append([int(next(loader)["index"]) for _ in range(5)])
        loader.close()
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(10))


def test_epochs_reshuffle():
    first, second = (shard_indices(100, 0, e, 0, 1).tolist() for e in range(2))
    assert sorted(first) == sorted(second) == list(range(100)) and first != second


@pytest.mark.parametrize("num_workers", [0, 2])
def test_measure_throughput(num_workers):
    stats = data.measure_throughput(
        num_batches=3, warmup_batches=1, batch_size=2, target_res=TARGET, patch_res=PATCH, num_workers=num_workers
    )
    assert stats["hierarchies_per_s"] > 0 and stats["batch_size"] == 2 and stats["num_batches"] == 3


def test_folder_throughput_per_worker(tmp_path):
    paths = data.write_test_videos(str(tmp_path), count=3, frames=10, height=20, width=24, codec="MJPG")
    assert len(paths) == 3 and all(p.endswith(".avi") for p in paths)
    stats = data.measure_folder_throughput(
        TARGET, PATCH, num_workers=2, batch_size=2, num_batches=2, warmup_batches=1, videos=3, frame_size=(20, 24)
    )
    assert stats["num_workers"] == 2 and stats["batch_size"] == 2
    assert stats["hierarchies_per_s_per_worker"] == pytest.approx(stats["hierarchies_per_s"] / 2)
    assert stats["videos"] == "3 x 8 frames 20x24 mp4v"
    given = data.measure_folder_throughput(TARGET, PATCH, batch_size=2, num_batches=1, root=str(tmp_path / "videos"))
    assert given["num_workers"] == 1 and given["videos"] == str(tmp_path / "videos")
    with pytest.raises(ValueError, match="num_workers"):
        data.measure_folder_throughput(TARGET, PATCH, num_workers=0)


class _WatchedSource:
    """Synthetic clips that record which thread loaded them and signal once ``signal_after`` have."""

    def __init__(self, signal_after: int):
        self.inner = data.SyntheticVideos(length=16)
        self.num_classes, self.class_names, self.has_text = self.inner.num_classes, self.inner.class_names, False
        self.threads, self.signal_after, self.enough = [], signal_after, threading.Event()

    def prepare(self, spec):
        self.inner.prepare(spec)

    def __len__(self):
        return len(self.inner)

    def load(self, index, spec, generator):
        self.threads.append(threading.get_ident())
        if len(self.threads) >= self.signal_after:
            self.enough.set()
        clip = self.inner.load(index, spec, generator)
        clip.text = None
        return clip


@pytest.mark.parametrize("num_workers", [0, 2])
def test_decoding_runs_off_the_trainers_thread(num_workers):
    """The trainer's ``next()`` returns a batch while later clips are still being loaded, by other threads."""
    source = _WatchedSource(signal_after=3)  # the one taken + the two prefetched
    loader = data.build_train_loader(
        batch_size=1, target_res=TARGET, patch_res=PATCH, source=source, num_workers=num_workers, prefetch=2
    )
    try:
        next(loader)
        # No further next(): the clips of the batches after the first load in the background.
        assert source.enough.wait(timeout=60)
        assert threading.get_ident() not in source.threads
    finally:
        loader.close()


def _world_loaders(world: int, global_batch: int = 6):
    return [
        data.build_train_loader(
            batch_size=global_batch // world, target_res=TARGET, patch_res=PATCH,
            source=data.SyntheticVideos(length=24), seed=5, rank=rank, world_size=world,
        )
        for rank in range(world)
    ]


def _global_steps(loaders, steps):
    """Each step's global batch in the trainer's order: sample j of rank r sits at W * j + r."""
    out = []
    for _ in range(steps):
        batches = [next(loader)["index"].tolist() for loader in loaders]
        out.append([batch[j] for j in range(len(batches[0])) for batch in batches])
    return out


@pytest.mark.parametrize("worlds", [(2, 1), (1, 2), (2, 3, 1)])
def test_resume_on_another_world_size_continues_the_global_order(worlds):
    """Three steps on each world size in turn (crossing epochs of four steps): every step's global
    batch is the uninterrupted single-process run's, so no sample is replayed or skipped."""
    reference = _world_loaders(1)
    expected = _global_steps(reference, 3 * len(worlds))
    reference[0].close()
    seen, states = [], None
    for world in worlds:
        loaders = _world_loaders(world)
        if states is not None:
            for loader in loaders:
                loader.continue_from(states)
        seen += _global_steps(loaders, 3)
        states = [_roundtrip(loader.state_dict()) for loader in loaders]
        for loader in loaders:
            loader.close()
    assert seen == expected


def test_ranks_in_different_epochs_continue_the_older_one():
    """Shards differ by one item when the length is odd: a rank already in the next epoch counts as
    done with the current one, the rest of which is still visited once."""
    from hpdm.data.nodes import continue_epoch, epoch_order

    base = {"length": 5, "seed": 1, "world_size": 2}
    states = [dict(base, rank=0, epoch=0, position=2), dict(base, rank=1, epoch=1, position=1)]
    state = continue_epoch(states, rank=0, world_size=1)
    assert (state["epoch"], state["position"], state["handover"]) == (0, 0, [[2, [2, 2]]])
    order = epoch_order(5, 1, 0).tolist()
    assert shard_indices(5, 1, 0, 0, 1, handover=state["handover"]).tolist() == [order[4]]
