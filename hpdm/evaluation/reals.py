"""The real videos of an evaluation: a folder, a UCF-101 split or a data config (paper Appendix B).

Every source gives uint8 ``[T, H, W, C]`` videos (``hpdm.metrics.FeatureExtractor`` cuts and
crops them like training clips), says how many it holds and how its classes are distributed (the
sampler draws labels with those frequencies), and describes itself twice: ``cache_id`` names
exactly the clips it yields, for the real-statistics cache, and ``record`` says what they are, for
the result.
"""

from __future__ import annotations

import collections
import hashlib
import os
from typing import Iterator, Protocol, Sequence

import gin
import numpy as np
import torch

from hpdm import gin_utils
from hpdm.data.eval_videos import class_counts, first_frame_clips
from hpdm.data.sources import UCF101
from hpdm.evaluation import video_folders
from hpdm.evaluation.settings import EvaluationSettings, SettingsError
from hpdm.metrics import PREPARATION
from hpdm.video.skips import SkipReport


class RealVideos(Protocol):
    """What an evaluation reads real videos through (``FolderReals``, ``UCF101Reals``, ``DataConfigReals``)."""

    skips: SkipReport
    total: int | None

    def cache_id(self, num_frames: int, resolution: Sequence[int]) -> str: ...

    def label_counts(self) -> np.ndarray | None: ...

    def videos(self, num_frames: int, resolution: Sequence[int]) -> Iterator: ...

    def record(self) -> dict: ...


def class_frequencies(real_dir: str) -> tuple[list[str], np.ndarray] | None:
    """Sorted class names and their video counts in a ``<class>/<video>`` folder, else ``None``."""
    classes = [video_folders.class_of(sample.name) for sample in video_folders.list_samples(real_dir)]
    if not classes or any(c is None for c in classes):
        return None
    counts = collections.Counter(classes)
    names = sorted(counts)
    return names, np.array([counts[n] for n in names], dtype=np.float64)


def _folder_fingerprint(root: str, limit: int | None) -> str:
    """Identifies a folder's videos (relative paths and sizes) for the statistics cache."""
    digest = hashlib.sha256()
    for sample in video_folders.list_samples(root):
        for relative in sample.files:
            digest.update(f"{relative}\0{os.path.getsize(os.path.join(root, relative))}\n".encode())
    return f"folder:{os.path.abspath(root)}:{digest.hexdigest()}:limit={limit}:prep={PREPARATION}"


class FolderReals:
    """Every (or the first ``limit``) video of a folder, read as samples (``video_folders.list_samples``)."""

    def __init__(self, root: str, limit: int | None):
        self.root, self.limit = root, limit
        self.skips = SkipReport("videos", root)
        self.total = min(len(video_folders.list_samples(root)), limit or np.inf)

    def cache_id(self, num_frames: int, resolution) -> str:
        return _folder_fingerprint(self.root, self.limit)

    def label_counts(self) -> np.ndarray | None:
        """Videos per class, classes indexed in sorted folder-name order (``VideoFolder``'s labels)."""
        frequencies = class_frequencies(self.root)
        return None if frequencies is None else frequencies[1]

    def videos(self, num_frames: int, resolution) -> Iterator[np.ndarray]:
        items = video_folders.iterate_folder(self.root, num_frames, num_frames, self.skips, self.limit)
        return (video for video, _ in items)

    def record(self) -> dict:
        return {"kind": "folder", "path": self.root, "limit": self.limit}


class UCF101Reals:
    """A UCF-101 split's clips (the protocols' reals: the train split of split 1, Appendix B).

    ``hpdm.data.UCF101`` reads the official split lists; clips are the first frames of each video
    in a seed-fixed order, so ``limit`` clips are a uniform sample, the same every time.
    """

    def __init__(self, root: str, split: int, subset: str, limit: int | None, seed: int):
        self.root, self.split, self.subset, self.limit, self.seed = root, split, subset, limit, seed
        self.skips = SkipReport("videos", root)  # first_frame_clips reports its own skips
        self.source = UCF101(root=root, split=split, subset=subset)
        self._listed = None

    def _listing(self) -> list:
        if self._listed is None:
            self._listed = self.source.candidates(SkipReport("videos", self.root))
        return self._listed

    @property
    def total(self) -> int:
        return min(len(self._listing()), self.limit or np.inf)

    def cache_id(self, num_frames: int, resolution) -> str:
        digest = hashlib.sha256()
        for item in self._listing():
            path = os.path.join(self.root, item.path)
            size = os.path.getsize(path) if os.path.isfile(path) else -1
            digest.update(f"{item.path}\0{item.label}\0{size}\n".encode())
        return (
            f"ucf101:{os.path.abspath(self.root)}:split={self.split}:subset={self.subset}:{digest.hexdigest()}"
            f":limit={self.limit}:seed={self.seed}:prep={PREPARATION}"
        )

    def label_counts(self) -> np.ndarray | None:
        """Videos per class label (classInd order, the training labels) of the split's list."""
        return class_counts(self.source)

    def videos(self, num_frames: int, resolution) -> Iterator[torch.Tensor]:
        return first_frame_clips((num_frames, *resolution), self.source, self.limit, self.seed)

    def record(self) -> dict:
        return {
            "kind": "ucf101", "root": self.root, "split": self.split, "subset": self.subset,
            "listed_videos": len(self._listing()), "limit": self.limit, "seed": self.seed,
        }


def data_config_description(gin_files: Sequence[str], gin_params: Sequence[str], target_res, limit) -> str:
    """Identifies the real clips of a data config for the statistics cache (file contents, not paths)."""
    digest = hashlib.sha256()
    for path in gin_files:
        with open(gin_utils.resolve_config_file(path), "rb") as handle:
            digest.update(handle.read())
    digest.update("\n".join(gin_params).encode())
    return (
        f"gin:{digest.hexdigest()}:target_res={tuple(int(v) for v in target_res)}:limit={limit}"
        f":prep={PREPARATION}"
    )


# What a data config's record says about where its videos come from.
_RECORDED_BINDINGS = ("UCF101.root", "UCF101.split", "UCF101.subset", "VideoFolder.root")


def _bound(name: str):
    """The gin-bound value of ``name`` (e.g. ``UCF101.subset``) for a JSON record, or None when unbound."""
    try:
        value = gin.query_parameter(name)
        if str(value).startswith("%"):  # a macro: record what it stands for
            value = gin.query_parameter(str(value))
    except ValueError:
        return None
    return value if isinstance(value, (str, int, float, bool)) else str(value)


class DataConfigReals:
    """The clips of a data config (``gin/data/*.gin`` files and bindings that select the source).

    ``hpdm.data.eval_videos.first_frame_clips`` cuts the first ``T`` frames of each video at its
    native rate, centre-cropped, in a seed-fixed order, so the first ``limit`` clips are a uniform
    sample of the dataset, the same every time. The config is parsed in a gin state of its own
    (``gin_utils.isolated_config``): the caller's config, a sampled run's included, stays as it was.
    """

    def __init__(self, gin_files: Sequence[str], gin_params: Sequence[str], limit: int | None):
        self.gin_files, self.gin_params, self.limit = list(gin_files), list(gin_params), limit
        self.skips = SkipReport("videos", "the data config")  # the data pipeline reports its own skips
        self.total = limit
        self._bindings = None

    def cache_id(self, num_frames: int, resolution) -> str:
        return data_config_description(self.gin_files, self.gin_params, (num_frames, *resolution), self.limit)

    def label_counts(self) -> None:
        return None  # uniform labels: listing the config's source would cost a pass over the dataset

    def videos(self, num_frames: int, resolution) -> Iterator[torch.Tensor]:
        with gin_utils.isolated_config():
            gin_utils.parse(self.gin_files, self.gin_params)
            self._bindings = self._query_bindings()
            # Built here, in the data config: the source and clip settings are bound now, and the
            # clips are then cut without gin.
            return first_frame_clips(tuple(int(v) for v in (num_frames, *resolution)), num_videos=self.limit)

    @staticmethod
    def _query_bindings() -> dict:
        return {name: value for name in _RECORDED_BINDINGS if (value := _bound(name)) is not None}

    def record(self) -> dict:
        if self._bindings is None:  # statistics came from the cache: parse the config only to describe it
            with gin_utils.isolated_config():
                gin_utils.parse(self.gin_files, self.gin_params)
                self._bindings = self._query_bindings()
        record = {"kind": "data_config", "gin_file": self.gin_files, "gin_param": self.gin_params, "limit": self.limit}
        return dict(record, bindings=self._bindings)


def open_reals(
    settings: EvaluationSettings,
    *,
    real_dir: str | None = None,
    gin_files: Sequence[str] = (),
    gin_params: Sequence[str] = (),
) -> RealVideos:
    """The real videos: a protocol's UCF-101 split of ``real_dir`` (the UCF-101 root), the videos
    of the folder ``real_dir``, or the clips of the data config ``gin_files`` / ``gin_params``.

    Opened before anything is sampled: a wrong UCF-101 root fails at once, not after hours.
    """
    limit = settings.num_real or None
    if settings.protocol is not None and real_dir:
        p = settings.protocol
        try:
            return UCF101Reals(real_dir, p.real_split, p.real_subset, limit, p.real_seed)
        except FileNotFoundError as err:
            raise SettingsError(
                f"protocol {p.name!r} reads the UCF-101 {p.real_subset} split {p.real_split} of {real_dir!r} "
                f"(--real_dir), which must be the UCF-101 root with its split lists: {err}"
            ) from err
    if real_dir:
        return FolderReals(real_dir, limit)
    if not gin_files:
        raise SettingsError("give the real videos: a folder (real_dir) or a data config (gin_files)")
    return DataConfigReals(gin_files, gin_params, limit)
