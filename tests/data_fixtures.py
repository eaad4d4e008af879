"""Tiny on-disk datasets for the data tests (helpers, written with OpenCV into pytest's tmp_path)."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np

CLASSES = ("Archery", "Biking", "Diving")


def write_video(path: str, frames: int, size=(40, 48), seed: int = 0) -> None:
    """A moving gradient plus noise; MJPG for .avi, mp4v for .mp4."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    h, w = size
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.endswith(".avi") else "mp4v"))
    writer = cv2.VideoWriter(path, fourcc, 25.0, (w, h))
    assert writer.isOpened(), path
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=3)
    ys, xs = np.mgrid[0:h, 0:w]
    for t in range(frames):
        frame = np.empty((h, w, 3), np.uint8)
        for c in range(3):
            frame[..., c] = (base[c] + 3 * xs + 2 * ys + 9 * t * (c + 1)) % 256
        writer.write(frame)
    writer.release()


def make_video_tree(root: str) -> dict:
    """UCF-like tree: 3 classes x (1 .avi + 1 .mp4), a corrupt .avi and a 3-frame clip; a captions file."""
    good = []
    for i, cls in enumerate(CLASSES):
        for j, ext in enumerate((".avi", ".mp4")):
            rel = f"{cls}/v_{cls}_g0{j + 1}_c01{ext}"
            write_video(os.path.join(root, rel), frames=12, seed=10 * i + j)
            good.append(rel)
    with open(os.path.join(root, "Biking", "v_Biking_broken.avi"), "wb") as f:
        f.write(b"RIFF\x00\x00 not really a video" + bytes(range(256)) * 4)
    write_video(os.path.join(root, "Diving", "v_Diving_short.avi"), frames=3, seed=99)
    captions = {rel: f"caption of {rel}" for rel in good}
    with open(os.path.join(root, "captions.jsonl"), "w", encoding="utf-8") as f:
        for rel, text in captions.items():
            f.write(json.dumps({"path": rel, "caption": text}) + "\n")
    return {"good": good, "broken": "Biking/v_Biking_broken.avi", "short": "Diving/v_Diving_short.avi", "captions": captions}


def make_ucf101(base: str) -> dict:
    """``base/UCF-101/<class>/...`` plus ``base/ucfTrainTestlist`` with classInd and split 1 lists."""
    root = os.path.join(base, "UCF-101")
    tree = make_video_tree(root)
    # classInd deliberately not alphabetical: labels must follow it, not folder order.
    order = ("Diving", "Archery", "Biking")
    lists = os.path.join(base, "ucfTrainTestlist")
    os.makedirs(lists)
    with open(os.path.join(lists, "classInd.txt"), "w") as f:
        f.writelines(f"{i + 1} {c}\n" for i, c in enumerate(order))
    train = [p for p in tree["good"] if "_g01_" in p] + [tree["short"], tree["broken"]]
    test = [p for p in tree["good"] if "_g02_" in p]
    with open(os.path.join(lists, "trainlist01.txt"), "w") as f:
        # Lower-cased entry: the official lists' capitalisation differs from the archive's.
        f.writelines(f"{p.lower() if i == 0 else p} {order.index(p.split('/')[0]) + 1}\n" for i, p in enumerate(train))
    with open(os.path.join(lists, "testlist01.txt"), "w") as f:
        f.writelines(f"{p}\n" for p in test)
    return {"root": root, "order": order, "train": train, "test": test, **tree}


def make_image_tree(root: str) -> dict:
    good = []
    rng = np.random.default_rng(0)
    for cls in CLASSES:
        for ext in (".png", ".jpg"):
            rel = f"{cls}/img{ext}"
            os.makedirs(os.path.join(root, cls), exist_ok=True)
            assert cv2.imwrite(os.path.join(root, rel), rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
            good.append(rel)
    with open(os.path.join(root, "Archery", "corrupt.png"), "wb") as f:
        f.write(b"definitely not a png")
    return {"good": good, "corrupt": "Archery/corrupt.png"}
