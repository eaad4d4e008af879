"""The fake videos of an evaluation: sampled from a trained run, or a folder of generated videos.

Sampled fakes (``SampledFakes``) come from one model load for every chunk, with class labels drawn
like the real videos' (paper Sec. 5: class-conditional UCF-101) and the sampler the run was
configured with (Sec. 4.4-4.5, App. C), a protocol's step schedule over it. A folder
(``FolderFakes``) counts one video per sample; one written by ``hpdm-sample`` says in its
``sampling.json`` how its videos were made, and the result records that as a sampled run's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from typing import Iterator, Optional, Sequence

import gin
import numpy as np
import torch

from hpdm import core
from hpdm.core.checkpoints import STEP_PATTERN, resolve_weights
from hpdm.evaluation import video_folders
from hpdm.evaluation.reals import RealVideos, class_frequencies
from hpdm.evaluation.settings import EvaluationSettings, SettingsError
from hpdm.metrics import ProgressLog

# Imported with this module, before any run's config is applied: SavedConfig.active skips the
# bindings of configurables not imported yet, and a run's SamplingSteps, OverlapSampler and TF32
# settings must apply.
from hpdm.samplers import SamplingSteps, sample_videos
from hpdm.samplers.io import SAMPLING_RECORD
from hpdm.samplers.steps import sampling_steps_record
from hpdm.trainers.distributed import set_matmul_precision
from hpdm.video.skips import SkipReport

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- labels


def draw_labels_from_counts(
    num: int, seed: int, num_classes: int | None, counts: np.ndarray | None
) -> np.ndarray | None:
    """Class labels for the sampler, drawn as in the data (paper Sec. 5: class-conditional UCF-101).

    ``counts[c]`` is the number of real videos of class label ``c``; labels follow those frequencies.
    A conditional model whose class count does not match gets uniform labels; unconditional models
    (``num_classes`` 0 or None) get ``None``.
    """
    if not num_classes:
        return None
    rng = np.random.default_rng(seed)
    if counts is not None and len(counts) == num_classes and counts.sum() > 0:
        return rng.choice(num_classes, size=num, p=counts / counts.sum())
    found = "no labelled real videos" if counts is None else f"real videos of {len(counts)} classes"
    log.warning("drawing uniform class labels for a %d-class model: %s", num_classes, found)
    return rng.integers(0, num_classes, size=num)


def draw_labels(num: int, seed: int, num_classes: int | None, real_dir: str | None) -> np.ndarray | None:
    """``draw_labels_from_counts`` with the class frequencies of a ``<class>/<video>`` folder,
    classes indexed in sorted name order (``VideoFolder``'s labels)."""
    frequencies = class_frequencies(real_dir) if real_dir else None
    return draw_labels_from_counts(num, seed, num_classes, None if frequencies is None else frequencies[1])


# --------------------------------------------------------------------------- sampling a run


class WorkdirSampler:
    """A run's model, loaded once for every chunk of fakes, sampling as configured (Sec. 4.4-4.5, App. C).

    The run's saved config (with ``bindings`` over it, as ``load_pretrained`` returns it) is in force
    only while this builds its step schedule and samples (``SavedConfig.active``); the caller's gin
    config is left alone.

    Args:
      workdir: training workdir or export.
      use_ema: the EMA weights (a workdir's ``ema.safetensors``; an export holds one set).
      bindings: gin bindings over the run's config (a protocol's step schedule, then the caller's).
      user_bindings: the caller's part, parsed again strictly so that a typo fails.
      overlap / guidance_scale / batch_size / device: ``sample_videos`` settings.
      total: videos to be sampled in all, for the progress lines.
      trust_config: load a saved config that imports code from outside hpdm (``gin_utils.vet_config``).
    """

    def __init__(
        self, workdir, *, use_ema, bindings, user_bindings, overlap, guidance_scale, batch_size, device, total,
        trust_config: Optional[bool] = None,
    ):
        self.workdir, self.use_ema = workdir, use_ema
        self.bindings, self.user_bindings = list(bindings), list(user_bindings)
        self.overlap, self.guidance_scale, self.batch_size = overlap, float(guidance_scale), int(batch_size)
        self.device = torch.device(device)
        self.weights = resolve_weights(workdir, use_ema)
        model, self.config = core.load_pretrained(
            workdir, use_ema=use_ema, bindings=self.bindings, trust_config=trust_config
        )
        self.model = model.to(self.device).eval()
        with self._configured():
            self.precision = set_matmul_precision(self.device)
            self.schedule = SamplingSteps()  # built once: the recorded schedule is the one used
        self.progress = ProgressLog("sampled", total)

    @contextlib.contextmanager
    def _configured(self):
        """The run's config and ``bindings`` in force, the caller's bindings checked strictly."""
        with self.config.active():
            if self.user_bindings:
                gin.parse_config(self.user_bindings, skip_unknown=False)
            yield

    @property
    def num_classes(self) -> int:
        return int(getattr(self.model, "num_classes", 0) or 0)

    @property
    def patch_res(self) -> tuple[int, int, int]:
        """The last-level tile the sampler denoises through (the seam score's grid)."""
        return tuple(int(v) for v in self.model.pyramid.patch_res)

    def __call__(self, count: int, seed: int, labels: torch.Tensor | None, offset: int = 0) -> torch.Tensor:
        """``count`` videos uint8 ``[count, T, H, W, C]``; ``offset`` videos came before (progress)."""
        self.progress.start(offset)

        def report(info: dict) -> None:
            if info["level"] + 1 == info["num_levels"] and info["step"] + 1 == info["num_steps"]:
                self.progress.update(offset + min(info["first_video"] + self.batch_size, info["num_videos"]))

        with self._configured():  # the run's OverlapSampler settings apply as they did in training
            return sample_videos(
                self.model, count, seed, labels=labels, guidance_scale=self.guidance_scale, overlap=self.overlap,
                level_schedule=self.schedule, batch_size=self.batch_size, device=self.device, progress=report,
            )

    def source_record(self) -> dict:
        """Which weights: the workdir, the checkpoint file and its step (None for an export), EMA or not."""
        match = STEP_PATTERN.match(os.path.basename(os.path.dirname(self.weights)))
        step = int(match.group(1)) if match else None
        return {
            "kind": "workdir", "workdir": self.workdir, "weights": os.path.relpath(self.weights, self.workdir),
            "step": step, "ema": self.use_ema if step is not None else None, "export": step is None,
        }

    def record(self) -> dict:
        """How it samples: per-level stepper, steps and churn, overlap, bindings, matmul precision."""
        return {
            "levels": sampling_steps_record(self.schedule, self.model.pyramid.num_levels), "overlap": self.overlap,
            "cached": True, "bindings": self.bindings, "matmul_precision": self.precision,
        }


def sampled_videos(
    sampler, num: int, seed: int, labels: np.ndarray | None, chunk: int
) -> Iterator[torch.Tensor]:
    """Fake videos ``[T, H, W, C]`` uint8 from ``sampler(count, seed, labels, offset)``, a chunk at a time.

    Chunks keep memory flat in N; chunk ``k`` uses a seed derived from ``(seed, k * chunk)`` (the
    sampler seeds video ``i`` of a call from its seed and ``i``, so one seed for every chunk would
    repeat videos); results are reproducible for a fixed chunk size. The model is loaded once, by
    whoever built ``sampler``.
    """
    for start in range(0, num, chunk):
        count = min(chunk, num - start)
        chunk_seed = int(np.random.SeedSequence([seed, start]).generate_state(1)[0])
        chunk_labels = None if labels is None else torch.as_tensor(labels[start : start + count], dtype=torch.long)
        videos = sampler(count, chunk_seed, chunk_labels, offset=start)
        if videos.dtype != torch.uint8 or videos.ndim != 5 or videos.shape[0] != count:
            raise ValueError(
                f"sampler returned {videos.dtype} {tuple(videos.shape)}, expected uint8 [{count}, T, H, W, C]"
            )
        yield from videos


# --------------------------------------------------------------------------- fake sources


@dataclasses.dataclass
class FakeVideos:
    """The fake videos of an evaluation and what the result records about them.

    ``sampler``, ``guidance_scale`` and ``seed`` say how they were sampled: this evaluation's
    settings for sampled fakes, a folder's ``sampling.json`` (or None) for generated ones.
    """

    videos: Iterator
    total: int
    record: dict
    sampler: dict | None
    guidance_scale: float | None
    seed: int | None
    patch_res: tuple[int, int, int] | None
    skips: SkipReport


@dataclasses.dataclass(frozen=True)
class SampledFakes:
    """Fakes sampled from a trained run: ``settings.num_fake`` videos, labels drawn like the reals'.

    Args:
      workdir: training workdir or export.
      seed: seed of the class labels and of the sampler (a seed per chunk derives from it).
      sample_chunk: videos per sampler call (memory stays flat in N; chunk seeds derive from it).
      sample_batch_size: the sampler's batch size.
      trust_config: load a saved config that imports code from outside hpdm.
    """

    workdir: str
    seed: int = 0
    sample_chunk: int = 256
    sample_batch_size: int = 8
    trust_config: Optional[bool] = None

    def open(
        self, settings: EvaluationSettings, reals: RealVideos, device, patch_res: Sequence[int] | None
    ) -> FakeVideos:
        """The fake video stream; ``patch_res`` None takes the model's last-level tile for the seam score."""
        if settings.num_fake <= 0:
            raise SettingsError("sampling from a trained run needs num_fake > 0 (e.g. 512 for FVD@512) or a protocol")
        sampler = WorkdirSampler(
            self.workdir, use_ema=settings.use_ema, bindings=settings.sampler_bindings,
            user_bindings=settings.sampler_param, overlap=settings.overlap, guidance_scale=settings.guidance_scale,
            batch_size=self.sample_batch_size, device=device, total=settings.num_fake, trust_config=self.trust_config,
        )
        counts = reals.label_counts() if sampler.num_classes else None
        labels = draw_labels_from_counts(settings.num_fake, self.seed, sampler.num_classes, counts)
        record = sampler.source_record()
        if labels is not None:
            matched = counts is not None and len(counts) == sampler.num_classes
            record["labels"] = {
                "num_classes": sampler.num_classes,
                "drawn": "with the real videos' class frequencies" if matched else "uniformly",
            }
        record["sample_chunk"] = self.sample_chunk  # chunk seeds derive from it
        videos = sampled_videos(sampler, settings.num_fake, self.seed, labels, self.sample_chunk)
        return FakeVideos(
            videos, settings.num_fake, record, sampler.record(), settings.guidance_scale, self.seed,
            tuple(patch_res) if patch_res is not None else sampler.patch_res, SkipReport("videos", self.workdir),
        )


@dataclasses.dataclass(frozen=True)
class FolderFakes:
    """The videos of a folder, one per sample (an ``hpdm-sample`` folder's ``.npy`` files)."""

    path: str

    def open(
        self, settings: EvaluationSettings, reals: RealVideos, device, patch_res: Sequence[int] | None
    ) -> FakeVideos:
        """At most ``settings.num_fake`` videos (all for 0); a seam score needs ``patch_res``."""
        limit = settings.num_fake or None
        skips = SkipReport("videos", self.path)
        items = video_folders.iterate_folder(self.path, settings.num_frames, None, skips, limit)
        samples = video_folders.list_samples(self.path)
        record = {"kind": "folder", "path": self.path, "samples": len(samples), "limit": limit}
        made_with = read_sampling_record(self.path)
        if made_with is not None:
            record["made_with"] = made_with
        made_with = made_with or {}
        return FakeVideos(
            (video for video, _ in items), min(len(samples), limit or np.inf), record, made_with.get("sampler"),
            made_with.get("guidance_scale"), made_with.get("seed"),
            None if patch_res is None else tuple(patch_res), skips,
        )


def read_sampling_record(folder: str) -> dict | None:
    """The ``sampling.json`` that ``hpdm-sample`` writes next to its videos (model, weights, seed,
    guidance, sampler), or None for other folders; an unreadable one is reported and ignored."""
    path = os.path.join(folder, SAMPLING_RECORD)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            made_with = json.load(handle)
    except (OSError, ValueError) as err:
        log.warning("%s is unreadable (%s): the result cannot say how the fakes were sampled", path, err)
        return None
    return made_with if isinstance(made_with, dict) else None
