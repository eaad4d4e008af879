r"""``hpdm-eval``: FVD, FVD@N, Inception Score and seam score (paper Sec. 5 "Evaluation", App. B).

FVD uses the literature's TorchScript I3D (``i3d_torchscript.pt``), the UCF-101 Inception Score
the TorchScript C3D (``c3d_ucf101.pt``, 16 frames, 10 splits). Neither is downloaded: pass paths,
of files from a source you trust only: a TorchScript file is a program that ``torch.jit.load``
runs (``--detector_sha256`` refuses any other file than the one you pinned).

Reals and fakes are prepared like training clips (Appendix B): the first ``--num_frames`` frames
at the native frame rate, the short side resized to the evaluation size, centre-cropped, uint8.
A folder written by ``hpdm-sample`` counts one video per sample, read from its lossless ``.npy``.
Real statistics are cached (``--stats_cache_dir``), keyed by source, preparation, resolution,
frame count and detector.

``--protocol`` fixes everything an FVD depends on (``hpdm.metrics.protocols``): ``paper`` (10,000
fakes against the train split of UCF-101 split 1, 16 frames, 256x256, labels drawn with the split's
class frequencies, ``hw`` overlap, the paper's step schedule, EMA weights), ``fvd512`` (FVD@512,
the ablations' metric), ``fvd2048_16f`` (StyleGAN-V's) and ``fvd10k``. Explicit flags override
single settings; the result records each override.

The last line printed is a JSON object with ``"fvd"``, ``"num_fake"``, ``"num_real"`` (and
``"is"``, ``"is_std"``, ``"seam_t"``, ``"seam_h"``, ``"seam_w"`` when computed) and a ``"protocol"``
object saying how it was measured: detector hashes (``detector_sha256``, ``c3d_sha256``), frames,
resolution, real and fake sources, sampler, guidance, seed and the hpdm version. With
``--workdir`` it is also written to ``<workdir>/eval_f<num_frames>_n<num_fake>.json``.

Usage:

  # The paper's FVD of a trained UCF-101 run (--real_dir: the UCF-101 root with ucfTrainTestlist):
  hpdm-eval --protocol=paper --workdir=runs/ucf --real_dir=UCF-101 \
      --detector=i3d_torchscript.pt --c3d_detector=c3d_ucf101.pt

  # FVD@512 (the paper's ablation metric, Tab. 3 / 4), classifier-free guidance 2:
  hpdm-eval --protocol=fvd512 --workdir=runs/ucf --real_dir=UCF-101 \
      --detector=i3d_torchscript.pt --guidance_scale=2

  # FVD between two folders of videos (first 16 frames, Appendix B):
  hpdm-eval --detector=i3d_torchscript.pt --real_dir=ucf101/train --fake_dir=samples \
      --num_frames=16

  # Real videos from a data config instead of a folder:
  hpdm-eval --workdir=runs/ucf --detector=i3d_torchscript.pt --num_fake=10000 \
      --gin_file=gin/data/ucf101.gin

  # Seam score on a folder of tiled samples (last-level tiles 16x64x64, 50% overlap):
  hpdm-eval --detector=i3d_torchscript.pt --real_dir=real --fake_dir=samples \
      --patch_res=16,64,64 --overlap=fhw

Also runnable as ``python -m hpdm.cli.evaluate``.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import hashlib
import json
import logging
import os
import re
from typing import Iterator, Sequence

import numpy as np
import torch
from absl import app, flags

import hpdm
from hpdm import gin_utils, metrics
from hpdm.samplers.io import SAMPLING_RECORD
from hpdm.samplers.steps import sampling_steps_record
from hpdm.trainers import run_record

FLAGS = flags.FLAGS

# Every hpdm binary lives in one package and tests import several into one process; flags such as
# --workdir or --seed are defined by more than one of them, and absl refuses duplicates unless
# one side allows the override.
_SHARED = dict(allow_override=True)

_TRUST = "TorchScript runs code: pass only a file from a source you trust"

flags.DEFINE_string(
    "protocol", None,
    f"Evaluation protocol fixing reals, counts, frames, size and sampling: {', '.join(metrics.PROTOCOLS)} "
    "(README, 'Evaluation: FVD and IS'). Explicit flags override single settings and are recorded.",
    **_SHARED,
)
flags.DEFINE_string(
    "detector", None, f"Path to the I3D TorchScript file i3d_torchscript.pt (FVD); {_TRUST}.", **_SHARED
)
flags.DEFINE_string("detector_sha256", None, "Refuse a --detector file with another SHA-256.", **_SHARED)
flags.DEFINE_string(
    "c3d_detector", None, f"Path to c3d_ucf101.pt; given, the Inception Score is computed; {_TRUST}.", **_SHARED
)
flags.DEFINE_string("c3d_detector_sha256", None, "Refuse a --c3d_detector file with another SHA-256.", **_SHARED)
flags.DEFINE_string(
    "real_dir", None,
    "Folder of real videos (recursive; <class>/<video> gives labels); with --protocol, the UCF-101 root "
    "(class folders, split lists in ucfTrainTestlist), read through the protocol's split.",
    **_SHARED,
)
flags.DEFINE_string(
    "fake_dir", None, "Folder of generated videos; an hpdm-sample folder counts one video per sample (.npy).",
    **_SHARED,
)
flags.DEFINE_string("workdir", None, "Training run directory (or export) to sample fake videos from.", **_SHARED)
flags.DEFINE_multi_string("gin_file", [], "Data config(s) providing the real videos.", **_SHARED)
flags.DEFINE_multi_string("gin_param", [], "Extra gin bindings for --gin_file.", **_SHARED)
flags.DEFINE_multi_string(
    "sampler_param", [], "Gin bindings for sampling in --workdir mode, e.g. 'SamplingSteps.num_steps=[64, 16, 4]'.",
    **_SHARED,
)
flags.DEFINE_integer("num_fake", 0, "Fake videos to evaluate (FVD@N); 0 = every video in --fake_dir.", **_SHARED)
flags.DEFINE_integer("num_real", 0, "Maximum real videos; 0 = all.", **_SHARED)
flags.DEFINE_integer("num_frames", 16, "Frames per video fed to I3D: the first ones (Appendix B).", **_SHARED)
flags.DEFINE_list("resolution", None, "Evaluation H,W; default: the generated videos' size.", **_SHARED)
flags.DEFINE_float("guidance_scale", 1.0, "Classifier-free guidance scale in --workdir mode (1 = none).", **_SHARED)
flags.DEFINE_boolean("use_ema", True, "Sample from the EMA weights in --workdir mode.", **_SHARED)
flags.DEFINE_integer("batch_size", 16, "Videos per detector call.", **_SHARED)
flags.DEFINE_integer("sample_batch_size", 8, "Sampler batch size in --workdir mode.", **_SHARED)
flags.DEFINE_integer("sample_chunk", 256, "Videos generated per sampler call in --workdir mode.", **_SHARED)
flags.DEFINE_integer("seed", 0, "Seed for sampling and class labels.", **_SHARED)
flags.DEFINE_integer("is_splits", metrics.IS_NUM_SPLITS, "Inception Score splits.", **_SHARED)
flags.DEFINE_list("patch_res", None, "Last-level tile T,H,W for the seam score; default: workdir config.", **_SHARED)
flags.DEFINE_string(
    "overlap", "hw",
    "Last-level axes tiled with 50% overlap, a subset of 'fhw' ('t' = 'f'): passed to the sampler in "
    "--workdir mode (default 'hw', the paper's metric setting, App. C), and the seam score's tile grid.",
    **_SHARED,
)
flags.DEFINE_string("stats_cache_dir", None, "Real statistics cache; default ~/.cache/hpdm/fvd_stats.", **_SHARED)
flags.DEFINE_boolean("cache_real_stats", True, "Cache real statistics; --nocache_real_stats recomputes.", **_SHARED)
flags.DEFINE_boolean(
    "trust_config",
    False,
    "In --workdir mode, load a saved config.gin that imports modules from outside hpdm (it runs their code).",
    **_SHARED,
)
flags.DEFINE_string("device", None, "Detector and sampler device; default cuda when available, else cpu.", **_SHARED)

log = logging.getLogger(__name__)

_WORKDIR_CONFIG = "config.gin"


# --------------------------------------------------------------------------- settings


@dataclasses.dataclass
class Settings:
    """What is measured: a protocol's settings with explicit flags applied, or the flags alone.

    ``overrides`` holds the flags (and ``real_source`` / ``sampler_param``) that depart from the
    protocol; it is empty without one.
    """

    protocol: metrics.Protocol | None
    overrides: dict
    num_fake: int
    num_real: int
    num_frames: int
    resolution: tuple[int, int] | None
    overlap: str
    guidance_scale: float
    use_ema: bool
    sampler_bindings: tuple[str, ...]


def _int_list(values, name: str, length: int) -> tuple[int, ...] | None:
    if values is None:
        return None
    try:
        parsed = tuple(int(v) for v in values)
    except ValueError as err:
        raise app.UsageError(f"--{name} must be {length} integers, got {values}") from err
    if len(parsed) != length:
        raise app.UsageError(f"--{name} must be {length} integers, got {values}")
    return parsed


def normalise_overlap(axes: str) -> str:
    """``"thw"`` -> ``"fhw"``: the sampler's spelling of an ``--overlap`` value, axes in f, h, w order."""
    text = (axes or "").lower().replace("t", "f")
    if not set(text) <= set("fhw"):
        raise app.UsageError(f"--overlap={axes!r}: use a subset of 'fhw', e.g. 'hw' or 'fhw'")
    return "".join(axis for axis in "fhw" if axis in text)


def overlap_fractions(axes: str) -> tuple[float, float, float]:
    """``"hw"`` -> ``(0.0, 0.5, 0.5)``: the per-axis tile overlap of the sampler's ``overlap`` string."""
    text = normalise_overlap(axes)
    return tuple(0.5 if axis in text else 0.0 for axis in "fhw")


def _flag_value(name: str):
    value = FLAGS[name].value
    if name == "resolution":
        return _int_list(value, "resolution", 2)
    return normalise_overlap(value) if name == "overlap" else value


def resolve_settings() -> Settings:
    """The evaluation settings of ``--protocol`` and the flags (explicit flags win, and are recorded)."""
    names = metrics.protocols.OVERRIDABLE
    if not FLAGS.protocol:
        values = {name: _flag_value(name) for name in names}
        return Settings(None, {}, **values, sampler_bindings=tuple(FLAGS.sampler_param))
    try:
        protocol = metrics.get_protocol(FLAGS.protocol)
    except ValueError as err:
        raise app.UsageError(str(err)) from err
    given = {name: _flag_value(name) for name in names if FLAGS[name].present}
    values, overrides = metrics.apply_overrides(protocol, given)
    if values["resolution"] is not None:
        values["resolution"] = tuple(values["resolution"])
    if FLAGS.sampler_param:
        overrides["sampler_param"] = list(FLAGS.sampler_param)
    if FLAGS.gin_file:
        overrides["real_source"] = "data config (--gin_file)"
    bindings = protocol.sampler_bindings + tuple(FLAGS.sampler_param)
    return Settings(protocol, overrides, **values, sampler_bindings=bindings)


def _check_flags(settings: Settings) -> None:
    if not FLAGS.detector:
        raise app.UsageError("--detector=PATH to i3d_torchscript.pt is required")
    if bool(FLAGS.workdir) == bool(FLAGS.fake_dir):
        raise app.UsageError("give exactly one fake source: --fake_dir=DIR or --workdir=DIR")
    if FLAGS.workdir and settings.num_fake <= 0:
        raise app.UsageError("--workdir mode needs --num_fake=N (e.g. 512 for FVD@512) or a --protocol")
    if not FLAGS.real_dir and not FLAGS.gin_file:
        raise app.UsageError("give the real videos: --real_dir=DIR or --gin_file=<data config>")
    if settings.protocol is not None and FLAGS.real_dir and FLAGS.gin_file:
        raise app.UsageError("--protocol reads the UCF-101 root --real_dir, or a --gin_file instead: give one")
    if settings.num_frames < 1:
        raise app.UsageError("--num_frames must be positive")
    if FLAGS.fake_dir:
        sampling = [f"--{n}" for n in ("guidance_scale", "use_ema", "sampler_param") if FLAGS[n].present]
        if sampling:
            raise app.UsageError(f"{', '.join(sampling)}: sampling settings, but --fake_dir videos are already made")


# --------------------------------------------------------------------------- workdir config


def _gin_assignments(text: str) -> dict[str, str]:
    """``name -> value text`` of the top-level assignments of a gin file, values joined over lines."""
    assignments, name, parts, depth = {}, None, [], 0
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if name is None:
            match = re.match(r"^([A-Za-z_][\w./]*)\s*=\s*(.*)$", line.strip())
            if not match:
                continue
            name, parts = match.group(1), [match.group(2)]
        else:
            parts.append(line.strip())
        value = " ".join(parts)
        depth = sum(value.count(c) for c in "([{") - sum(value.count(c) for c in ")]}")
        if depth <= 0:
            assignments[name] = value.strip()
            name = None
    return assignments


def read_workdir_config(workdir: str) -> dict[str, object]:
    """``target_res``, ``patch_res`` and ``num_classes`` found in ``<workdir>/config.gin``.

    Matched by suffix (``HPDM.target_res``, ``TARGET_RES`` ...), with ``%MACRO`` references
    resolved, without importing the configurables: evaluation must not depend on every module
    the run was trained with. Keys that cannot be found are absent.
    """
    path = os.path.join(workdir, _WORKDIR_CONFIG)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        assignments = _gin_assignments(handle.read())

    def evaluate(value: str, seen=()):
        if value.startswith("%"):
            macro = value[1:]
            if macro in seen or macro not in assignments:
                return None
            return evaluate(assignments[macro], seen + (macro,))
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return None

    expected = {"target_res": (tuple, list), "patch_res": (tuple, list), "num_classes": int}
    found = {}
    for key, kind in expected.items():
        for name in sorted(assignments):
            if name.split(".")[-1].split("/")[-1].lower() == key:
                value = evaluate(assignments[name])
                if isinstance(value, kind):
                    found[key] = value
                    break
    return found


# --------------------------------------------------------------------------- real videos


def _class_frequencies(real_dir: str) -> tuple[list[str], np.ndarray] | None:
    """Sorted class names and their video counts in a ``<class>/<video>`` folder, else ``None``."""
    classes = [metrics.video_io.class_of(sample.name) for sample in metrics.list_samples(real_dir)]
    if not classes or any(c is None for c in classes):
        return None
    counts = collections.Counter(classes)
    names = sorted(counts)
    return names, np.array([counts[n] for n in names], dtype=np.float64)


def _folder_fingerprint(root: str, limit: int | None) -> str:
    """Identifies a folder's videos (relative paths and sizes) for the statistics cache."""
    digest = hashlib.sha256()
    for sample in metrics.list_samples(root):
        for relative in sample.files:
            digest.update(f"{relative}\0{os.path.getsize(os.path.join(root, relative))}\n".encode())
    return f"folder:{os.path.abspath(root)}:{digest.hexdigest()}:limit={limit}:prep={metrics.PREPARATION}"


class FolderReals:
    """Every (or the first ``limit``) video of a folder, read as samples (``metrics.list_samples``)."""

    def __init__(self, root: str, limit: int | None):
        self.root, self.limit = root, limit
        self.skips = metrics.SkipCounts()
        self.total = min(len(metrics.list_samples(root)), limit or np.inf)

    def cache_id(self, num_frames: int, resolution) -> str:
        return _folder_fingerprint(self.root, self.limit)

    def label_counts(self) -> np.ndarray | None:
        """Videos per class, classes indexed in sorted folder-name order (``VideoFolder``'s labels)."""
        frequencies = _class_frequencies(self.root)
        return None if frequencies is None else frequencies[1]

    def videos(self, num_frames: int, resolution) -> Iterator[np.ndarray]:
        items = metrics.iterate_folder(self.root, num_frames, num_frames, self.skips, self.limit)
        return (video for video, _ in items)

    def record(self) -> dict:
        return {"kind": "folder", "path": self.root, "limit": self.limit}


class UCF101Reals:
    """A UCF-101 split's clips (the protocols' reals: the train split of split 1, Appendix B).

    ``hpdm.data.UCF101`` reads the official split lists; clips are the first frames of each video
    in a seed-fixed order, so ``limit`` clips are a uniform sample, the same every time.
    """

    def __init__(self, root: str, split: int, subset: str, limit: int | None, seed: int):
        from hpdm.data import UCF101

        self.root, self.split, self.subset, self.limit, self.seed = root, split, subset, limit, seed
        self.skips = metrics.SkipCounts()
        self.source = UCF101(root=root, split=split, subset=subset)
        self._listed = None

    def _listing(self) -> list:
        from hpdm.data.skips import SkipReport

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
            f":limit={self.limit}:seed={self.seed}:prep={metrics.PREPARATION}"
        )

    def label_counts(self) -> np.ndarray | None:
        """Videos per class label (classInd order, the training labels) of the split's list."""
        from hpdm.data.eval_videos import class_counts

        return class_counts(self.source)

    def videos(self, num_frames: int, resolution) -> Iterator[torch.Tensor]:
        from hpdm.data.eval_videos import first_frame_clips

        return first_frame_clips((num_frames, *resolution), self.source, self.limit, self.seed)

    def record(self) -> dict:
        return {
            "kind": "ucf101", "root": self.root, "split": self.split, "subset": self.subset,
            "listed_videos": len(self._listing()), "limit": self.limit, "seed": self.seed,
        }


def data_config_description(gin_files: Sequence[str], gin_params: Sequence[str], target_res, limit) -> str:
    """Identifies the real clips of a data config for the statistics cache (file contents, not paths)."""
    from hpdm import gin_utils

    digest = hashlib.sha256()
    for path in gin_files:
        with open(gin_utils.resolve_config_file(path), "rb") as handle:
            digest.update(handle.read())
    digest.update("\n".join(gin_params).encode())
    return (
        f"gin:{digest.hexdigest()}:target_res={tuple(int(v) for v in target_res)}:limit={limit}"
        f":prep={metrics.PREPARATION}"
    )


def real_videos_from_data_config(
    gin_files: Sequence[str], gin_params: Sequence[str], target_res: Sequence[int], limit: int | None
) -> Iterator[torch.Tensor]:
    """Real clips uint8 ``[T, H, W, C]`` of a data config (``gin/data/*.gin`` selects the source).

    ``hpdm.data.eval_videos.first_frame_clips`` cuts the first ``T`` frames of each video at its
    native rate, centre-cropped at ``target_res``, in a seed-fixed order, so the first ``limit``
    clips are a uniform sample of the dataset, the same every time. The data config replaces the
    process's gin config: in ``--workdir`` mode every fake video has been generated by then.
    """
    import gin

    try:
        from hpdm import gin_utils
        from hpdm.data.eval_videos import first_frame_clips
    except ImportError as err:
        raise app.UsageError(f"--gin_file real data needs hpdm.data ({err}); pass --real_dir instead") from err
    gin.clear_config()
    gin_utils.parse(gin_files, gin_params)
    return first_frame_clips(tuple(int(v) for v in target_res), num_videos=limit)


def _bound(name: str):
    """The gin-bound value of ``name`` (e.g. ``UCF101.subset``) for a JSON record, or None when unbound."""
    import gin

    try:
        value = gin.query_parameter(name)
        if str(value).startswith("%"):  # a macro: record what it stands for
            value = gin.query_parameter(str(value))
    except ValueError:
        return None
    return value if isinstance(value, (str, int, float, bool)) else str(value)


class DataConfigReals:
    """The clips of a data config (``--gin_file``, ``--gin_param``)."""

    def __init__(self, gin_files: Sequence[str], gin_params: Sequence[str], limit: int | None):
        self.gin_files, self.gin_params, self.limit = list(gin_files), list(gin_params), limit
        self.skips = metrics.SkipCounts()  # the data pipeline logs its own skips
        self.total = limit
        self._bindings = {}

    def cache_id(self, num_frames: int, resolution) -> str:
        return data_config_description(self.gin_files, self.gin_params, (num_frames, *resolution), self.limit)

    def label_counts(self) -> None:
        return None  # uniform labels: reading the config's source here would replace the sampler's gin config

    def videos(self, num_frames: int, resolution) -> Iterator[torch.Tensor]:
        clips = real_videos_from_data_config(self.gin_files, self.gin_params, (num_frames, *resolution), self.limit)
        self._bindings = self._query_bindings()
        return clips

    @staticmethod
    def _query_bindings() -> dict:
        names = ("UCF101.root", "UCF101.split", "UCF101.subset", "VideoFolder.root")
        return {name: value for name in names if (value := _bound(name)) is not None}

    def record(self) -> dict:
        if not self._bindings:  # statistics came from the cache: parse the config only to describe it
            import gin

            from hpdm import gin_utils

            gin.clear_config()
            gin_utils.parse(self.gin_files, self.gin_params)
            self._bindings = self._query_bindings()
        record = {"kind": "data_config", "gin_file": self.gin_files, "gin_param": self.gin_params, "limit": self.limit}
        return dict(record, bindings=self._bindings)


def open_reals(settings: Settings):
    """The real-video source of the flags: a protocol's UCF-101 split, a folder or a data config."""
    limit = settings.num_real or None
    if settings.protocol is not None and FLAGS.real_dir:
        p = settings.protocol
        try:
            return UCF101Reals(FLAGS.real_dir, p.real_split, p.real_subset, limit, p.real_seed)
        except FileNotFoundError as err:
            raise app.UsageError(
                f"--protocol={p.name} reads the UCF-101 {p.real_subset} split {p.real_split} of --real_dir, "
                f"the UCF-101 root with its split lists: {err}"
            ) from err
    if FLAGS.real_dir:
        return FolderReals(FLAGS.real_dir, limit)
    return DataConfigReals(FLAGS.gin_file, FLAGS.gin_param, limit)


# --------------------------------------------------------------------------- fake videos


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
    frequencies = _class_frequencies(real_dir) if real_dir else None
    return draw_labels_from_counts(num, seed, num_classes, None if frequencies is None else frequencies[1])


class WorkdirSampler:
    """A run's model, loaded once for every chunk of fakes, sampling as configured (Sec. 4.4-4.5, App. C).

    Args:
      workdir: training workdir or export.
      use_ema: the EMA weights (a workdir's ``ema.safetensors``; an export holds one set).
      bindings: gin bindings over the run's config (a protocol's step schedule, then ``--sampler_param``).
      user_bindings: the ``--sampler_param`` part, parsed again strictly so that a typo fails.
      overlap / guidance_scale / batch_size / device: ``sample_videos`` settings.
      total: videos to be sampled in all, for the progress lines.
    """

    def __init__(
        self, workdir, *, use_ema, bindings, user_bindings, overlap, guidance_scale, batch_size, device, total
    ):
        import gin

        # Imported before the run's config is parsed: bindings of configurables not imported are
        # skipped, and the run's SamplingSteps / OverlapSampler / TF32 settings must apply.
        from hpdm.core import load_pretrained
        from hpdm.core.pretrained import _weights_file
        from hpdm.samplers import SamplingSteps
        from hpdm.trainers.distributed import set_matmul_precision

        self.workdir, self.use_ema, self.bindings = workdir, use_ema, list(bindings)
        self.overlap, self.guidance_scale, self.batch_size = overlap, float(guidance_scale), int(batch_size)
        self.device = torch.device(device)
        self.weights = _weights_file(workdir, use_ema)
        model = load_pretrained(workdir, use_ema=use_ema, bindings=self.bindings)
        if user_bindings:
            gin.parse_config(list(user_bindings), skip_unknown=False)
        self.precision = set_matmul_precision(self.device)
        self.model = model.to(self.device).eval()
        self.schedule = SamplingSteps()  # built once: the recorded schedule is the one used
        self.progress = metrics.ProgressLog("sampled", total)

    @property
    def num_classes(self) -> int:
        return int(getattr(self.model, "num_classes", 0) or 0)

    def __call__(self, count: int, seed: int, labels: torch.Tensor | None, offset: int = 0) -> torch.Tensor:
        """``count`` videos uint8 ``[count, T, H, W, C]``; ``offset`` videos came before (progress)."""
        from hpdm.samplers import sample_videos

        self.progress.start(offset)

        def report(info: dict) -> None:
            if info["level"] + 1 == info["num_levels"] and info["step"] + 1 == info["num_steps"]:
                self.progress.update(offset + min(info["first_video"] + self.batch_size, info["num_videos"]))

        return sample_videos(
            self.model, count, seed, labels=labels, guidance_scale=self.guidance_scale, overlap=self.overlap,
            level_schedule=self.schedule, batch_size=self.batch_size, device=self.device, progress=report,
        )

    def source_record(self) -> dict:
        """Which weights: the workdir, the checkpoint file and its step (None for an export), EMA or not."""
        match = re.match(r"^step_(\d+)$", os.path.basename(os.path.dirname(self.weights)))
        step = int(match.group(1)) if match else None
        return {
            "kind": "workdir", "workdir": self.workdir, "weights": os.path.relpath(self.weights, self.workdir),
            "step": step, "ema": self.use_ema if step is not None else None, "export": step is None,
        }

    def record(self) -> dict:
        """How it samples: per-level stepper, steps and churn, overlap, bindings, matmul precision."""
        return {
            "levels": sampling_steps_record(self.schedule, self.model.pyramid.num_levels), "overlap": self.overlap, "cached": True, "bindings": self.bindings,
            "matmul_precision": self.precision,
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


@dataclasses.dataclass
class Fakes:
    """The fake videos and what the result records about them."""

    videos: Iterator
    total: int
    record: dict
    sampler: dict | None
    patch_res: tuple[int, int, int] | None
    skips: metrics.SkipCounts


def workdir_fakes(settings: Settings, reals, device: str, patch_res) -> Fakes:
    """Samples ``settings.num_fake`` videos from ``--workdir``, labels drawn like the real videos'."""
    config = read_workdir_config(FLAGS.workdir)
    if patch_res is None and config.get("patch_res") is not None:
        patch_res = tuple(int(v) for v in config["patch_res"])
    if patch_res is None:
        log.warning("no patch_res in %s/%s: seam score skipped", FLAGS.workdir, _WORKDIR_CONFIG)
    sampler = WorkdirSampler(
        FLAGS.workdir, use_ema=settings.use_ema, bindings=settings.sampler_bindings,
        user_bindings=FLAGS.sampler_param, overlap=settings.overlap, guidance_scale=settings.guidance_scale,
        batch_size=FLAGS.sample_batch_size, device=device, total=settings.num_fake,
    )
    counts = reals.label_counts() if sampler.num_classes else None
    labels = draw_labels_from_counts(settings.num_fake, FLAGS.seed, sampler.num_classes, counts)
    record = sampler.source_record()
    if labels is not None:
        matched = counts is not None and len(counts) == sampler.num_classes
        record["labels"] = {
            "num_classes": sampler.num_classes,
            "drawn": "with the real videos' class frequencies" if matched else "uniformly",
        }
    record["sample_chunk"] = FLAGS.sample_chunk  # chunk seeds derive from it
    videos = sampled_videos(sampler, settings.num_fake, FLAGS.seed, labels, FLAGS.sample_chunk)
    return Fakes(videos, settings.num_fake, record, sampler.record(), patch_res, metrics.SkipCounts())


def folder_fakes(settings: Settings, patch_res) -> Fakes:
    """The videos of ``--fake_dir``, one per sample (an ``hpdm-sample`` folder's ``.npy`` files)."""
    limit = settings.num_fake or None
    skips = metrics.SkipCounts()
    items = metrics.iterate_folder(FLAGS.fake_dir, settings.num_frames, None, skips, limit)
    samples = metrics.list_samples(FLAGS.fake_dir)
    record = {"kind": "folder", "path": FLAGS.fake_dir, "samples": len(samples), "limit": limit}
    made_with = read_sampling_record(FLAGS.fake_dir)
    if made_with is not None:
        record["made_with"] = made_with
    total = min(len(samples), limit or np.inf)
    return Fakes((video for video, _ in items), total, record, None, patch_res, skips)


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


# --------------------------------------------------------------------------- evaluation


def _seam_edges_fn(patch_res: Sequence[int] | None, overlap: Sequence[float]):
    if patch_res is None:
        return None
    cache = {}

    def edges(shape_thw):
        if shape_thw not in cache:
            cache[shape_thw] = metrics.video_tile_edges(shape_thw, patch_res, overlap)
        return cache[shape_thw]

    return edges


def _detector(path: str, sha256: str | None, info: metrics.DetectorInfo, device: str):
    """``(TorchScript module, SHA-256)``; a pinned hash is checked before the file is loaded."""
    resolved = metrics.check_detector_file(path, info)
    digest = metrics.verify_sha256(resolved, sha256, info)
    return metrics.load_detector(resolved, info, device), digest


def real_statistics(i3d, i3d_sha: str, reals, settings: Settings, resolution, device: str):
    """``(FeatureStats, from cache)`` of the real clips, prepared at the fakes' evaluation size."""

    def compute():
        extractor = metrics.FeatureExtractor(
            i3d, settings.num_frames, resolution, FLAGS.batch_size, device, name="real", total=reals.total
        )
        for video in reals.videos(settings.num_frames, resolution):
            extractor.add(video)
        if reals.skips.total:
            log.warning("real: skipped %d videos: %s", reals.skips.total, reals.skips.summary())
        return extractor.finish().stats

    cache_dir = (FLAGS.stats_cache_dir or metrics.default_cache_dir()) if FLAGS.cache_real_stats else None
    source = reals.cache_id(settings.num_frames, resolution)
    key = metrics.stats_cache_key(source, resolution, settings.num_frames, i3d_sha)
    return metrics.cached_stats(cache_dir, key, compute)


def protocol_record(settings: Settings, i3d_sha: str, c3d_sha: str | None, resolution, reals, fakes: Fakes) -> dict:
    """How the numbers were measured (issue: every result records its protocol)."""
    protocol, sampled = settings.protocol, fakes.sampler is not None
    made_with = fakes.record.get("made_with") or {}
    return {
        "name": None if protocol is None else protocol.name,
        "summary": None if protocol is None else protocol.summary,
        "overrides": settings.overrides,
        "detector_sha256": i3d_sha,
        "c3d_sha256": c3d_sha,
        "is_splits": FLAGS.is_splits if c3d_sha else None,
        "num_frames": settings.num_frames,
        "resolution": [int(v) for v in resolution],
        "preparation": metrics.PREPARATION,
        "real_source": reals.record(),
        "fake_source": fakes.record,
        "sampler": fakes.sampler if sampled else made_with.get("sampler"),
        "guidance_scale": settings.guidance_scale if sampled else made_with.get("guidance_scale"),
        "seed": FLAGS.seed if sampled else made_with.get("seed"),
        "hpdm_version": hpdm.__version__,
    }


def evaluate() -> dict:
    """Runs the evaluation described by the flags and returns the result dictionary."""
    settings = resolve_settings()
    _check_flags(settings)
    device = FLAGS.device or ("cuda" if torch.cuda.is_available() else "cpu")
    i3d, i3d_sha = _detector(FLAGS.detector, FLAGS.detector_sha256, metrics.I3D, device)
    c3d, c3d_sha = None, None
    if FLAGS.c3d_detector:
        c3d, c3d_sha = _detector(FLAGS.c3d_detector, FLAGS.c3d_detector_sha256, metrics.C3D, device)
    # Opened before sampling: a wrong UCF-101 root fails now, not after hours of sampling.
    reals = open_reals(settings)
    patch_res = _int_list(FLAGS.patch_res, "patch_res", 3)
    fakes = workdir_fakes(settings, reals, device, patch_res) if FLAGS.workdir else folder_fakes(settings, patch_res)

    extractor = metrics.FeatureExtractor(
        i3d, settings.num_frames, settings.resolution, FLAGS.batch_size, device, c3d=c3d,
        seam_edges=_seam_edges_fn(fakes.patch_res, overlap_fractions(settings.overlap)), name="fake",
        total=fakes.total,
    )
    for video in fakes.videos:
        extractor.add(video)
    fake = extractor.finish()
    if fakes.skips.total:
        log.warning("fake: skipped %d videos: %s", fakes.skips.total, fakes.skips.summary())
    if settings.num_fake and fake.stats.count < settings.num_fake:
        raise ValueError(f"asked for {settings.num_fake} fake videos, only {fake.stats.count} are usable")

    real_stats, from_cache = real_statistics(i3d, i3d_sha, reals, settings, fake.resolution, device)
    result = {
        "fvd": metrics.frechet_distance(
            fake.stats.mean, fake.stats.covariance(), real_stats.mean, real_stats.covariance()
        ),
        "num_fake": fake.stats.count,
        "num_real": real_stats.count,
        "num_frames": settings.num_frames,
        "resolution": list(fake.resolution),
        "real_stats_cached": from_cache,
        "skipped_fake": fakes.skips.total,
        "skipped_real": reals.skips.total,
    }
    if fake.probs is not None:
        result["is"], result["is_std"] = metrics.inception_score(fake.probs, FLAGS.is_splits)
    for axis, score in fake.seams.items():
        result[f"seam_{axis}"] = score
    result["protocol"] = protocol_record(settings, i3d_sha, c3d_sha, fake.resolution, reals, fakes)
    return result


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    gin_utils.set_config_trust(FLAGS.trust_config)
    saved = os.path.join(FLAGS.workdir or "", gin_utils.OPERATIVE_CONFIG)
    if FLAGS.workdir and os.path.isfile(saved):
        try:  # before any real video is read: a refused config should cost nothing
            gin_utils.check_saved_config(saved)
        except gin_utils.UntrustedConfigError as e:
            raise SystemExit(f"hpdm-eval: {e}") from None
    result = evaluate()
    result["run_record"] = run_record.collect()  # versions, commit, command line: in the JSON printed and written
    line = json.dumps(result, sort_keys=True)
    if FLAGS.workdir:
        path = os.path.join(FLAGS.workdir, f"eval_f{result['num_frames']}_n{result['num_fake']}.json")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(line + "\n")
        log.info("wrote %s", path)
    print(line, flush=True)


def run() -> None:
    """Console-script entry point (``hpdm-eval``)."""
    app.run(main)


if __name__ == "__main__":
    run()
