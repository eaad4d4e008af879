"""Sources, clips and batches: shapes, ranges, labels, captions, skips (hpdm/data)."""

from __future__ import annotations

import importlib
import os
import pkgutil

import cv2
import gin
import pytest
import torch

import hpdm
import hpdm.data as data
from hpdm.data.base import ClipSpec
from hpdm.data.index import INDEX_NAME
from data_fixtures import CLASSES, make_image_tree, make_ucf101, make_video_tree

TARGET, PATCH = (8, 32, 32), (2, 8, 8)  # 3 levels: 2x8x8 -> 4x16x16 -> 8x32x32



def _check_batch(batch, batch_size, num_levels=3):
    x, coords = batch["x"], batch["coords"]
    assert x.shape == (batch_size, num_levels, 3, *PATCH) and x.dtype == torch.float32
    assert coords.shape == (batch_size, num_levels, 6)
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert (coords[:, 0] == torch.tensor([1.0, 1, 1, 0, 0, 0])).all()
    assert x.std() > 0.05  # real content, not a constant


def _first_batch(**kwargs):
    loader = data.build_train_loader(target_res=TARGET, patch_res=PATCH, **kwargs)
    try:
        return next(loader)
    finally:
        loader.close()


def _label_of(path):
    return CLASSES.index(path.split("/")[0])


def test_video_folder_batches_labels_and_skips(tree, warnings):
    root, info = tree
    source = data.VideoFolder(root)
    assert source.num_classes == 3 and source.class_names == CLASSES
    loader = data.build_train_loader(batch_size=4, target_res=TARGET, patch_res=PATCH, source=source)
    # Two bad files among eight: one unreadable, one too short (3 frames for an 8-frame clip).
    assert len(source) == len(info["good"]) == 6
    assert source.skips.count == 2
    assert dict(source.skips.by_reason) == {"unreadable": 1, "too short": 1}
    assert len(warnings) == 1
    assert "Skipped 2 of 8 videos" in warnings[0] and root in warnings[0]
    assert info["broken"] in warnings[0] and info["short"] in warnings[0]
    for _ in range(3):  # crosses an epoch boundary (6 videos, batches of 4)
        batch = next(loader)
        _check_batch(batch, 4)
        paths = [source.items[i].path for i in batch["index"].tolist()]
        assert batch["label"].dtype == torch.long
        assert batch["label"].tolist() == [_label_of(p) for p in paths]
        assert "text" not in batch
    loader.close()


def test_index_is_cached_next_to_the_data(tree, monkeypatch):
    root, _ = tree
    data.VideoFolder(root).prepare(ClipSpec(TARGET))
    assert os.path.isfile(os.path.join(root, INDEX_NAME))

    def no_probe(path):
        raise AssertionError(f"probed {path} although the index is cached")

    monkeypatch.setattr(data.VideoFolder, "probe", staticmethod(no_probe))
    source = data.VideoFolder(root)
    source.prepare(ClipSpec(TARGET))
    assert len(source) == 6 and source.skips.count == 2


def test_read_only_root_uses_cache_dir(tree, tmp_path, monkeypatch):
    root, _ = tree
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    data.VideoFolder(root, cache_dir=str(tmp_path / "cache")).prepare(ClipSpec(TARGET))
    assert not os.path.exists(os.path.join(root, INDEX_NAME))
    assert len(os.listdir(tmp_path / "cache")) == 1


def test_captions_from_jsonl_and_csv(tree, tmp_path):
    root, info = tree
    source = data.VideoFolder(root, captions="captions.jsonl")
    batch = _first_batch(batch_size=3, source=source)
    _check_batch(batch, 3)
    paths = [source.items[i].path for i in batch["index"].tolist()]
    assert batch["text"] == [info["captions"][p] for p in paths]
    assert batch["label"].tolist() == [_label_of(p) for p in paths]

    csv_path = tmp_path / "pairs.csv"
    with open(csv_path, "w", encoding="utf-8") as f:
        f.write("path,caption\n")
        for rel in info["good"][:4]:
            f.write(f'{rel},"a clip, {rel}"\n')
        f.write(f"{info['short']},too short\n")
        f.write("Archery/missing.avi,gone\n")
    pairs = data.TextVideoPairs(root, str(csv_path))
    batch = _first_batch(batch_size=4, source=pairs)
    _check_batch(batch, 4)
    assert pairs.num_classes == 0 and "label" not in batch
    assert sorted(batch["text"]) == sorted(f"a clip, {rel}" for rel in info["good"][:4])
    assert dict(pairs.skips.by_reason) == {"too short": 1, "missing": 1}


def test_no_usable_video_names_the_root(tmp_path):
    root = tmp_path / "bad"
    (root / "Cls").mkdir(parents=True)
    (root / "Cls" / "x.mp4").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="no usable videos under .*bad"):
        data.build_train_loader(batch_size=1, target_res=TARGET, patch_res=PATCH, source=data.VideoFolder(str(root)))


def test_ucf101_split_files(tmp_path, warnings):
    ucf = make_ucf101(str(tmp_path))
    train = data.UCF101(ucf["root"], split=1, subset="train")
    assert train.class_names == ucf["order"]
    loader = data.build_train_loader(batch_size=3, target_res=TARGET, patch_res=PATCH, source=train)
    assert sorted(i.path for i in train.items) == sorted(p for p in ucf["train"] if "_g01_" in p)
    assert dict(train.skips.by_reason) == {"unreadable": 1, "too short": 1}
    assert any("Skipped 2 of 5 videos" in w for w in warnings)
    batch = next(loader)
    loader.close()
    _check_batch(batch, 3)
    paths = [train.items[i].path for i in batch["index"].tolist()]
    assert batch["label"].tolist() == [ucf["order"].index(p.split("/")[0]) for p in paths]

    test = data.UCF101(ucf["root"], subset="test")
    test.prepare(ClipSpec(TARGET))
    assert sorted(i.path for i in test.items) == sorted(ucf["test"]) and test.skips.count == 0
    both = data.UCF101(ucf["root"], subset="all")
    both.prepare(ClipSpec(TARGET))
    assert len(both) == 6
    with pytest.raises(FileNotFoundError, match="classInd"):
        data.UCF101(str(tmp_path / "UCF-101" / "Archery"))


def test_image_folder_still_videos_and_joint_mixing(tree, tmp_path, warnings):
    image_root = str(tmp_path / "images")
    images_info = make_image_tree(image_root)
    images = data.ImageFolder(image_root)
    batch = _first_batch(batch_size=4, source=images)
    _check_batch(batch, 4)
    assert images.skips.count == 1 and images_info["corrupt"] in warnings[-1]
    # A still video: every frame of every patch equals the first.
    assert torch.equal(batch["x"], batch["x"][:, :, :, :1].expand_as(batch["x"]))
    paths = [images.items[i].path for i in batch["index"].tolist()]
    assert batch["label"].tolist() == [_label_of(p) for p in paths]

    root, _ = tree
    joint = data.JointImageVideo(data.VideoFolder(root), data.ImageFolder(image_root), image_ratio=0.5)
    loader = data.build_train_loader(batch_size=6, target_res=TARGET, patch_res=PATCH, source=joint)
    assert len(joint) == 12  # 6 videos + 6 stills per epoch
    seen_still = seen_moving = 0
    for _ in range(2):
        batch = next(loader)
        _check_batch(batch, 6)
        still = (batch["x"] == batch["x"][:, :, :, :1]).flatten(1).all(1)
        assert still.tolist() == [i >= 6 for i in batch["index"].tolist()]
        seen_still += int(still.sum())
        seen_moving += int((~still).sum())
    loader.close()
    assert seen_still == seen_moving == 6
    with pytest.raises(ValueError, match="captions on only one"):
        data.JointImageVideo(data.VideoFolder(root, captions="captions.jsonl"), data.ImageFolder(image_root))


def test_frame_stride_and_fps(tree):
    root, _ = tree
    spec = ClipSpec((4, 32, 32), frame_stride=3)
    assert spec.span(25.0) == 10
    source = data.VideoFolder(root)
    source.prepare(spec)
    assert len(source) == 6  # 12-frame videos fit a 10-frame span
    assert ClipSpec((4, 32, 32), fps=12.5).stride_for(25.0) == 2
    source = data.VideoFolder(root)
    # Span 13 > 12 frames: every video is too short, and the error names the root.
    with pytest.raises(ValueError, match="no usable videos"):
        data.VideoFolder(root).prepare(ClipSpec((4, 32, 32), frame_stride=4))


def test_eval_videos_uint8_deterministic_and_sharded(tree):
    root, _ = tree
    clips = list(data.build_eval_videos(target_res=TARGET, source=data.VideoFolder(root), num_videos=4))
    assert len(clips) == 4
    for clip in clips:
        assert clip.shape == (8, 32, 32, 3) and clip.dtype == torch.uint8
    again = list(data.build_eval_videos(target_res=TARGET, source=data.VideoFolder(root), num_videos=4))
    assert all(torch.equal(a, b) for a, b in zip(clips, again))
    shards = [
        list(data.build_eval_videos(target_res=TARGET, source=data.VideoFolder(root), num_videos=4, rank=r, world_size=2))
        for r in range(2)
    ]
    assert [len(s) for s in shards] == [2, 2]
    synthetic = next(data.build_eval_videos(target_res=(4, 16, 16)))
    assert synthetic.shape == (4, 16, 16, 3) and synthetic.dtype == torch.uint8


def _import_all_hpdm():
    # Register every configurable a shipped gin file may name.
    for mod in pkgutil.walk_packages(hpdm.__path__, "hpdm."):
        try:
            importlib.import_module(mod.name)
        except Exception:  # noqa: BLE001 - a module that needs optional deps is not ours to test
            pass


@pytest.mark.parametrize("gin_file", ["data/folder.gin", "data/synthetic.gin"])
def test_gin_builds_the_loader(tree, gin_file):
    from hpdm import gin_utils

    root, _ = tree
    gin.clear_config()
    try:
        gin_utils.parse(
            [f"gin/{gin_file}"],
            [
                "build_train_loader.batch_size = 2",
                "build_train_loader.target_res = (8, 32, 32)",
                "build_train_loader.patch_res = (2, 8, 8)",
                f"DATA_ROOT = '{root}'",
            ],
        )
        loader = data.build_train_loader()
        _check_batch(next(loader), 2)
        expected = data.VideoFolder if "folder" in gin_file else data.SyntheticVideos
        assert isinstance(loader.source, expected)
        loader.close()
    finally:
        gin.clear_config()


def test_quickstart_with_folder_gin(tree):
    from hpdm import gin_utils

    _import_all_hpdm()
    root, _ = tree
    gin.clear_config()
    try:
        # The test videos have 12 frames: an 8-frame target keeps the quickstart's 3 levels.
        gin_utils.parse(
            ["gin/quickstart.gin", "gin/data/folder.gin"], [f"DATA_ROOT = '{root}'", "TARGET_RES = (8, 64, 64)"]
        )
        loader = data.build_train_loader()
        batch = next(loader)
        assert batch["x"].dim() == 6 and batch["label"].max() < 3
        assert isinstance(loader.source, data.VideoFolder)
        loader.close()
    finally:
        gin.clear_config()


def test_every_data_gin_file_parses(tmp_path):
    from hpdm import gin_utils

    gin_dir = os.path.join(gin_utils.GIN_ROOT, "data")
    for name in sorted(os.listdir(gin_dir)):
        gin.clear_config()
        try:
            gin_utils.parse(
                [os.path.join(gin_dir, name)],
                [f"DATA_ROOT = '{tmp_path}'", f"IMAGE_ROOT = '{tmp_path}'", "CAPTIONS = 'c.jsonl'"],
            )
        finally:
            gin.clear_config()


def test_fixture_videos_decode(tmp_path):
    tree = make_video_tree(str(tmp_path))
    for rel in tree["good"]:
        cap = cv2.VideoCapture(str(tmp_path / rel))
        assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
        cap.release()
