"""Video sources read from disk with OpenCV: a class-folder tree, UCF-101 splits, text-video pairs."""

from __future__ import annotations

import os
from typing import List, Optional, Sequence

import gin

from hpdm.data.captions import read_captions
from hpdm.data.index import list_files
from hpdm.data.indexed import IndexedSource, Item, class_folders, folder_items
from hpdm.video.files import VIDEO_EXTENSIONS
from hpdm.video.skips import SkipReport


@gin.configurable
class VideoFolder(IndexedSource):
    """Videos in one subfolder per class (the UCF-101 layout): ``root/<class>/**/<video>``.

    Labels are the indices of the sorted class-folder names. Videos directly under ``root`` (no
    class folder) are used unlabelled when there are no class folders at all. With ``captions``
    (a JSONL/CSV file, see ``hpdm.data.captions``) every sample also carries a caption, and videos
    without one are skipped and counted.
    """

    def __init__(
        self,
        root: str = gin.REQUIRED,
        captions: Optional[str] = None,
        cache_dir: Optional[str] = None,
        extensions: Sequence[str] = VIDEO_EXTENSIONS,
    ):
        super().__init__(root, cache_dir)
        self.extensions = tuple(extensions)
        self.captions_file = captions
        self.class_names = tuple(class_folders(self.root))
        self.num_classes = len(self.class_names)
        self.has_text = captions is not None

    def candidates(self, report: SkipReport) -> List[Item]:
        return folder_items(self.root, self.extensions, self.class_names, self.captions_file, report)


@gin.configurable
class UCF101(IndexedSource):
    """UCF-101 (paper Sec. 5.1) with its official split files.

    Args:
      root: the directory holding the 101 class folders (``UCF-101/``).
      split: 1, 2 or 3 (``trainlist0N.txt`` / ``testlist0N.txt``).
      subset: "train", "test", or "all" (train + test; generative benchmarks train on all 13,320).
      splits_dir: directory with ``classInd.txt`` and the lists; by default the first of
        ``root/ucfTrainTestlist``, ``root/../ucfTrainTestlist``, ``root`` that has ``classInd.txt``.

    List entries are matched case-insensitively, because the official lists and the released
    archive disagree on the capitalisation of some names (e.g. ``HandStandPushups``).
    """

    def __init__(
        self,
        root: str = gin.REQUIRED,
        split: int = 1,
        subset: str = "train",
        splits_dir: Optional[str] = None,
        cache_dir: Optional[str] = None,
    ):
        super().__init__(root, cache_dir)
        if split not in (1, 2, 3):
            raise ValueError(f"UCF-101 split must be 1, 2 or 3, got {split}")
        if subset not in ("train", "test", "all"):
            raise ValueError(f"subset must be 'train', 'test' or 'all', got {subset!r}")
        self.split, self.subset = split, subset
        self.splits_dir = splits_dir or self._find_splits_dir()
        self.class_names = tuple(self._read_class_index())
        self.num_classes = len(self.class_names)

    def _find_splits_dir(self) -> str:
        for d in (
            os.path.join(self.root, "ucfTrainTestlist"),
            os.path.join(os.path.dirname(os.path.abspath(self.root)), "ucfTrainTestlist"),
            self.root,
        ):
            if os.path.isfile(os.path.join(d, "classInd.txt")):
                return d
        raise FileNotFoundError(
            f"no classInd.txt in {self.root!r}/ucfTrainTestlist, next to it, or in it; set UCF101.splits_dir"
        )

    def _read_lines(self, name: str) -> List[str]:
        path = os.path.join(self.splits_dir, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"UCF-101 split file {path!r} not found")
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]

    def _read_class_index(self) -> List[str]:
        classes = {}
        for line in self._read_lines("classInd.txt"):
            number, name = line.split()
            classes[int(number)] = name
        if sorted(classes) != list(range(1, len(classes) + 1)):
            raise ValueError(f"classInd.txt in {self.splits_dir!r} must number classes 1..N")
        return [classes[i] for i in sorted(classes)]

    def candidates(self, report: SkipReport) -> List[Item]:
        lists = {"train": ["trainlist"], "test": ["testlist"], "all": ["trainlist", "testlist"]}[self.subset]
        on_disk = {p.lower(): p for p in list_files(self.root, VIDEO_EXTENSIONS, report)}
        label_of = {name.lower(): i for i, name in enumerate(self.class_names)}
        items = []
        for prefix in lists:
            for line in self._read_lines(f"{prefix}0{self.split}.txt"):
                listed = line.split()[0].replace("\\", "/")
                folder = listed.split("/", 1)[0].lower()
                if folder not in label_of:
                    raise ValueError(f"{prefix}0{self.split}.txt lists {listed!r}, whose class is not in classInd.txt")
                # A listed file absent from disk keeps its listed name and is reported as missing.
                items.append(Item(on_disk.get(listed.lower(), listed), label_of[folder]))
        return items


@gin.configurable
class TextVideoPairs(IndexedSource):
    """Text-video pairs (paper Sec. 5.2): the videos named in a captions file, paths relative to ``root``."""

    has_text = True

    def __init__(self, root: str = gin.REQUIRED, captions: str = gin.REQUIRED, cache_dir: Optional[str] = None):
        super().__init__(root, cache_dir)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"data root {self.root!r} is not a directory")
        self.captions_file = captions

    def candidates(self, report: SkipReport) -> List[Item]:
        captions = read_captions(self.captions_file, self.root, report)
        return [Item(path, None, tuple(texts)) for path, texts in sorted(captions.items())]
