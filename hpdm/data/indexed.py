"""Shared machinery of file-backed sources: candidates -> cached index -> usable items, with skips.

A subclass lists candidate files (with label and captions); ``prepare`` probes them through the
cached index (``hpdm.data.index``), drops unreadable files and clips too short for the request,
logs the count with the first paths, and fails naming the root when nothing usable is left.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from hpdm.data.base import Clip, ClipSpec, SkipSample
from hpdm.data.clips import choose_start
from hpdm.data.captions import read_captions
from hpdm.data.index import build_index, list_files
from hpdm.data.seeding import randint
from hpdm.video.files import VIDEO_EXTENSIONS, UnreadableMedia, probe_video, read_frames
from hpdm.video.frames import resize_crop, to_float
from hpdm.video.skips import SkipReport


@dataclass(frozen=True)
class Item:
    """One usable file: relative path, label (or None), captions (or None), frames and fps."""

    path: str
    label: Optional[int] = None
    captions: Optional[Tuple[str, ...]] = None
    frames: int = 1
    fps: float = 0.0


def class_folders(root: str) -> List[str]:
    """Sorted names of the (non-hidden) immediate subdirectories of ``root``: the class names."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"data root {root!r} is not a directory")
    try:
        names = os.listdir(root)
    except OSError as e:
        raise OSError(f"cannot list the data root {root!r} ({e.strerror or e}); check its permissions") from e
    return sorted(d for d in names if not d.startswith(".") and os.path.isdir(os.path.join(root, d)))


class IndexedSource:
    """Base of the file-backed sources; subclasses implement ``candidates`` (and may override ``load``)."""

    what = "videos"
    extensions: Sequence[str] = VIDEO_EXTENSIONS
    num_classes = 0
    class_names: Sequence[str] = ()
    has_text = False

    def __init__(self, root: str, cache_dir: Optional[str] = None):
        self.root = os.fspath(root)
        self.cache_dir = cache_dir
        self.items: List[Item] = []
        self.skips: Optional[SkipReport] = None
        self._prepared_for: Optional[tuple] = None

    # --- subclass hooks -----------------------------------------------------------------------
    def candidates(self, report: SkipReport) -> List[Item]:
        """Files to consider (frames/fps unknown yet); record files rejected up front in ``report``."""
        raise NotImplementedError

    @staticmethod
    def probe(path: str):
        return probe_video(path)

    def usable(self, entry: dict, spec: ClipSpec) -> Optional[str]:
        """None if the indexed file can serve ``spec``, else why not."""
        span = spec.span(entry.get("fps", 0.0))
        if entry["frames"] < span:
            return f"{entry['frames']} frames, a clip needs {span}"
        return None

    # --- the Source interface -----------------------------------------------------------------
    def prepare(self, spec: ClipSpec) -> None:
        key = (spec.target_res[0], spec.frame_stride, spec.fps)
        if self._prepared_for == key:
            return
        report = SkipReport(self.what, self.root)
        candidates = self.candidates(report)
        total = len(candidates) + report.count
        index = build_index(self.root, [c.path for c in candidates], self.probe, self.cache_dir)
        items = []
        for c in candidates:
            entry = index[c.path]
            if "error" in entry:
                missing = entry["error"] == "missing file"
                report.add(c.path, "missing" if missing else "unreadable", "" if missing else entry["error"])
                continue
            why = self.usable(entry, spec)
            if why is not None:
                report.add(c.path, "too short", why)
                continue
            items.append(Item(c.path, c.label, c.captions, int(entry["frames"]), float(entry.get("fps", 0.0))))
        report.log(total)
        if not items:
            detail = f" {report.message(total)}" if report.count else ""
            raise ValueError(f"no usable {self.what} under {self.root!r} ({total} found).{detail}")
        self.items, self.skips, self._prepared_for = items, report, key

    def __len__(self) -> int:
        if self._prepared_for is None:
            raise RuntimeError(f"{type(self).__name__} is not prepared; call prepare(spec) first")
        return len(self.items)

    def describe(self, index: int) -> str:
        return os.path.join(self.root, self.items[index].path)

    def load(self, index: int, spec: ClipSpec, generator: torch.Generator) -> Clip:
        item = self.items[index]
        stride = spec.stride_for(item.fps)
        start = choose_start(item.frames, spec.span(item.fps), spec.random_offset, generator)
        try:
            frames = read_frames(os.path.join(self.root, item.path), start, spec.target_res[0], stride)
        except UnreadableMedia as e:
            raise SkipSample(self.describe(index), str(e)) from None
        frames = resize_crop(frames, spec.target_res[1:], spec.random_crop, generator)
        return Clip(video=to_float(frames), label=item.label, text=self.pick_caption(item, generator))

    @staticmethod
    def pick_caption(item: Item, generator: torch.Generator) -> Optional[str]:
        if not item.captions:
            return None
        return item.captions[randint(generator, len(item.captions))] if len(item.captions) > 1 else item.captions[0]


def attach_captions(items: List[Item], captions: dict, report: SkipReport) -> List[Item]:
    """Keep the items that have captions (the others are counted as "no caption")."""
    kept = []
    for item in items:
        texts = captions.get(item.path)
        if texts:
            kept.append(Item(item.path, item.label, tuple(texts)))
        else:
            report.add(item.path, "no caption")
    return kept


def folder_items(
    root: str, extensions, class_names, captions_file: Optional[str], report: SkipReport
) -> List[Item]:
    """Files under ``root`` labelled by their top-level class folder (when ``class_names`` is not
    empty), with captions attached from ``captions_file`` when given."""
    label_of = {name: i for i, name in enumerate(class_names)}
    items = []
    for rel in list_files(root, extensions, report):
        folder = rel.split("/", 1)[0] if "/" in rel else None
        if class_names and folder is None:
            report.add(rel, "outside class folders")
            continue
        items.append(Item(rel, label_of[folder] if class_names else None))
    if captions_file is not None:
        items = attach_captions(items, read_captions(captions_file, root, report), report)
    return items
