r"""``hpdm-eval``: FVD, FVD@N, Inception Score and seam score (paper Sec. 5 "Evaluation", App. B).

FVD uses the literature's TorchScript I3D (``i3d_torchscript.pt``), the UCF-101 Inception Score
the TorchScript C3D (``c3d_ucf101.pt``, 16 frames, 10 splits). Neither is downloaded: pass paths.
Real statistics are cached (``--stats_cache_dir``), keyed by source, resolution, frame count and
detector. The last line printed is a JSON object with ``"fvd"`` (and ``"is"``, ``"is_std"``,
``"seam_t"``, ``"seam_h"``, ``"seam_w"`` when computed); with ``--workdir`` it is also written to
``<workdir>/eval_f<num_frames>_n<num_fake>.json``.

Usage:

  # FVD between two folders of videos (first 16 frames, Appendix B):
  hpdm-eval --detector=i3d_torchscript.pt --real_dir=ucf101/train --fake_dir=samples \
      --num_frames=16

  # FVD@512 (the paper's ablation metric, Tab. 3 / 4) of a trained run, plus IS and seams;
  # class labels for the sampler are drawn with the class frequencies of --real_dir:
  hpdm-eval --workdir=runs/ucf --detector=i3d_torchscript.pt --num_fake=512 \
      --real_dir=ucf101/train --c3d_detector=c3d_ucf101.pt

  # Real videos from a data config instead of a folder:
  hpdm-eval --workdir=runs/ucf --detector=i3d_torchscript.pt --num_fake=10000 \
      --gin_file=gin/data/ucf101.gin

  # Seam score on a folder of tiled samples (last-level tiles 16x64x64, 50% overlap):
  hpdm-eval --detector=i3d_torchscript.pt --real_dir=real --fake_dir=samples \
      --patch_res=16,64,64 --overlap=fhw

Also runnable as ``python -m hpdm.trainers.evaluate``.
"""

from __future__ import annotations

import ast
import collections
import hashlib
import json
import logging
import os
import re
from typing import Iterator, Sequence

import numpy as np
import torch
from absl import app, flags

from hpdm import metrics

FLAGS = flags.FLAGS

# Every hpdm binary lives in one package and tests import several into one process; flags such as
# --workdir or --seed are defined by more than one of them, and absl refuses duplicates unless
# one side allows the override.
_SHARED = dict(allow_override=True)


flags.DEFINE_string("detector", None, "Path to the I3D TorchScript file i3d_torchscript.pt (FVD).", **_SHARED)
flags.DEFINE_string("c3d_detector", None, "Path to c3d_ucf101.pt; given, the Inception Score is computed.", **_SHARED)
flags.DEFINE_string("real_dir", None, "Folder of real videos (recursive; <class>/<video> gives labels).", **_SHARED)
flags.DEFINE_string("fake_dir", None, "Folder of generated videos.", **_SHARED)
flags.DEFINE_string("workdir", None, "Training run directory to sample fake videos from.", **_SHARED)
flags.DEFINE_multi_string("gin_file", [], "Data config(s) providing the real videos.", **_SHARED)
flags.DEFINE_multi_string("gin_param", [], "Extra gin bindings for --gin_file.", **_SHARED)
flags.DEFINE_integer("num_fake", 0, "Fake videos to evaluate (FVD@N); 0 = every video in --fake_dir.", **_SHARED)
flags.DEFINE_integer("num_real", 0, "Maximum real videos; 0 = all.", **_SHARED)
flags.DEFINE_integer("num_frames", 16, "Frames per video fed to I3D: the first ones (Appendix B).", **_SHARED)
flags.DEFINE_list("resolution", None, "Evaluation H,W; default: the generated videos' size.", **_SHARED)
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
flags.DEFINE_string("device", None, "Detector device; default cuda when available, else cpu.", **_SHARED)

log = logging.getLogger(__name__)

_WORKDIR_CONFIG = "config.gin"


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


# --------------------------------------------------------------------------- sources


def _class_frequencies(real_dir: str) -> tuple[list[str], np.ndarray] | None:
    """Sorted class names and their video counts in a ``<class>/<video>`` folder, else ``None``."""
    classes = [metrics.video_io.class_of(p) for p in metrics.list_videos(real_dir)]
    if not classes or any(c is None for c in classes):
        return None
    counts = collections.Counter(classes)
    names = sorted(counts)
    return names, np.array([counts[n] for n in names], dtype=np.float64)


def draw_labels(num: int, seed: int, num_classes: int | None, real_dir: str | None) -> np.ndarray | None:
    """Class labels for the sampler, drawn as in the data (paper Sec. 5: class-conditional UCF-101).

    Labels follow the real folder's class frequencies with classes indexed in sorted name order;
    a conditional model whose class count does not match the folder gets uniform labels.
    Unconditional models (no ``num_classes`` in the config) get ``None``.
    """
    if not num_classes:
        return None
    rng = np.random.default_rng(seed)
    frequencies = _class_frequencies(real_dir) if real_dir else None
    if frequencies is not None and len(frequencies[0]) == num_classes:
        counts = frequencies[1]
        return rng.choice(num_classes, size=num, p=counts / counts.sum())
    log.warning("drawing uniform class labels: no <class>/<video> real folder with %d classes", num_classes)
    return rng.integers(0, num_classes, size=num)


def sampled_videos(
    workdir: str, num: int, seed: int, labels: np.ndarray | None, chunk: int, batch_size: int, overlap: str
) -> Iterator[torch.Tensor]:
    """Fake videos ``[T, H, W, C]`` uint8 from ``hpdm.samplers.sample_videos_from_workdir``.

    Generated ``chunk`` at a time so that memory does not grow with N; chunk ``k`` uses a seed
    derived from ``(seed, k * chunk)`` (the sampler seeds video ``i`` of a call from its seed and
    ``i``, so one seed for every chunk would repeat videos); results are reproducible for a fixed
    chunk size. ``overlap`` goes to the sampler so the seam score's tile grid is the sampled one.
    """
    from hpdm.samplers import sample_videos_from_workdir  # only this mode needs a model

    for start in range(0, num, chunk):
        count = min(chunk, num - start)
        chunk_seed = int(np.random.SeedSequence([seed, start]).generate_state(1)[0])
        chunk_labels = None if labels is None else torch.as_tensor(labels[start : start + count], dtype=torch.long)
        videos = sample_videos_from_workdir(
            workdir, count, seed=chunk_seed, labels=chunk_labels, batch_size=batch_size, overlap=overlap
        )
        if videos.dtype != torch.uint8 or videos.ndim != 5 or videos.shape[0] != count:
            raise ValueError(
                f"sampler returned {videos.dtype} {tuple(videos.shape)}, expected uint8 [{count}, T, H, W, C]"
            )
        yield from videos


def _folder_fingerprint(root: str, limit: int | None) -> str:
    """Identifies a folder's videos (relative paths and sizes) for the statistics cache."""
    digest = hashlib.sha256()
    for relative in metrics.list_videos(root):
        digest.update(f"{relative}\0{os.path.getsize(os.path.join(root, relative))}\n".encode())
    return f"folder:{os.path.abspath(root)}:{digest.hexdigest()}:limit={limit}"


def data_config_description(gin_files: Sequence[str], gin_params: Sequence[str], target_res, limit) -> str:
    """Identifies the real clips of a data config for the statistics cache (file contents, not paths)."""
    from hpdm import gin_utils

    digest = hashlib.sha256()
    for path in gin_files:
        with open(gin_utils.resolve_config_file(path), "rb") as handle:
            digest.update(handle.read())
    digest.update("\n".join(gin_params).encode())
    return f"gin:{digest.hexdigest()}:target_res={tuple(int(v) for v in target_res)}:limit={limit}"


def real_videos_from_data_config(
    gin_files: Sequence[str], gin_params: Sequence[str], target_res: Sequence[int], limit: int | None
) -> Iterator[torch.Tensor]:
    """Real clips uint8 ``[T, H, W, C]`` of a data config (``gin/data/*.gin`` selects the source).

    ``hpdm.data.build_eval_videos`` cuts full-resolution clips at ``target_res`` in a seed-fixed
    order, so the first ``limit`` clips are a uniform sample of the dataset, the same every time.
    The data config replaces the process's gin config: in ``--workdir`` mode the sampler parsed
    the run's own config, and every fake video has been generated by the time this runs.
    """
    import gin

    try:
        from hpdm import gin_utils
        from hpdm.data import build_eval_videos
    except ImportError as err:
        raise app.UsageError(
            f"--gin_file real data needs hpdm.data.build_eval_videos ({err}); pass --real_dir instead"
        ) from err
    gin.clear_config()
    gin_utils.parse(gin_files, gin_params)
    return build_eval_videos(target_res=tuple(int(v) for v in target_res), num_videos=limit)


# --------------------------------------------------------------------------- evaluation


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


def overlap_fractions(axes: str) -> tuple[float, float, float]:
    """``"hw"`` -> ``(0.0, 0.5, 0.5)``: the per-axis tile overlap of the sampler's ``overlap`` string."""
    text = (axes or "").lower().replace("t", "f")
    if not set(text) <= set("fhw"):
        raise app.UsageError(f"--overlap={axes!r}: use a subset of 'fhw', e.g. 'hw' or 'fhw'")
    return tuple(0.5 if axis in text else 0.0 for axis in "fhw")


def _seam_edges_fn(patch_res: Sequence[int] | None, overlap: Sequence[float]):
    if patch_res is None:
        return None
    cache = {}

    def edges(shape_thw):
        if shape_thw not in cache:
            cache[shape_thw] = metrics.video_tile_edges(shape_thw, patch_res, overlap)
        return cache[shape_thw]

    return edges


def _check_flags() -> None:
    if not FLAGS.detector:
        raise app.UsageError("--detector=PATH to i3d_torchscript.pt is required")
    if bool(FLAGS.workdir) == bool(FLAGS.fake_dir):
        raise app.UsageError("give exactly one fake source: --fake_dir=DIR or --workdir=DIR")
    if FLAGS.workdir and FLAGS.num_fake <= 0:
        raise app.UsageError("--workdir mode needs --num_fake=N (e.g. 512 for FVD@512, 10000 for FVD)")
    if not FLAGS.real_dir and not FLAGS.gin_file:
        raise app.UsageError("give the real videos: --real_dir=DIR or --gin_file=<data config>")
    if FLAGS.num_frames < 1:
        raise app.UsageError("--num_frames must be positive")


def evaluate() -> dict:
    """Runs the evaluation described by the flags and returns the result dictionary."""
    _check_flags()
    device = FLAGS.device or ("cuda" if torch.cuda.is_available() else "cpu")
    i3d_path = metrics.check_detector_file(FLAGS.detector, metrics.I3D)
    i3d = metrics.load_detector(i3d_path, metrics.I3D, device)
    c3d = metrics.load_detector(FLAGS.c3d_detector, metrics.C3D, device) if FLAGS.c3d_detector else None
    num_frames = FLAGS.num_frames
    resolution = _int_list(FLAGS.resolution, "resolution", 2)
    overlap = overlap_fractions(FLAGS.overlap)
    patch_res = _int_list(FLAGS.patch_res, "patch_res", 3)
    limit_fake = FLAGS.num_fake or None
    fake_skips = metrics.SkipCounts()
    target_res = None

    if FLAGS.workdir:
        config = read_workdir_config(FLAGS.workdir)
        if config.get("target_res") is not None:
            target_res = tuple(int(v) for v in config["target_res"])
        if patch_res is None and config.get("patch_res") is not None:
            patch_res = tuple(int(v) for v in config["patch_res"])
        if patch_res is None:
            log.warning("no patch_res in %s/%s: seam score skipped", FLAGS.workdir, _WORKDIR_CONFIG)
        labels = draw_labels(FLAGS.num_fake, FLAGS.seed, config.get("num_classes"), FLAGS.real_dir)
        fakes = sampled_videos(
            FLAGS.workdir, FLAGS.num_fake, FLAGS.seed, labels, FLAGS.sample_chunk, FLAGS.sample_batch_size,
            FLAGS.overlap,
        )
        total_fake = FLAGS.num_fake
    else:
        fakes = (
            video for video, _ in metrics.iterate_folder(FLAGS.fake_dir, num_frames, None, fake_skips, limit_fake)
        )
        total_fake = min(len(metrics.list_videos(FLAGS.fake_dir)), limit_fake or np.inf)

    extractor = metrics.FeatureExtractor(
        i3d, num_frames, resolution, FLAGS.batch_size, device, c3d=c3d,
        seam_edges=_seam_edges_fn(patch_res, overlap), name="fake", total=total_fake,
    )
    for video in fakes:
        extractor.add(video)
    fake = extractor.finish()
    if fake_skips.total:
        log.warning("fake: skipped %d videos: %s", fake_skips.total, fake_skips.summary())
    if limit_fake and fake.stats.count < limit_fake:
        raise ValueError(f"asked for {limit_fake} fake videos, only {fake.stats.count} are usable")

    real_limit = FLAGS.num_real or None
    real_skips = metrics.SkipCounts()
    if FLAGS.real_dir:

        def real_videos():
            items = metrics.iterate_folder(FLAGS.real_dir, num_frames, num_frames, real_skips, real_limit)
            return (video for video, _ in items)

        source = _folder_fingerprint(FLAGS.real_dir, real_limit)
        total_real = min(len(metrics.list_videos(FLAGS.real_dir)), real_limit or np.inf)
    else:
        clip_res = target_res or (num_frames, *fake.resolution)

        def real_videos():
            return real_videos_from_data_config(FLAGS.gin_file, FLAGS.gin_param, clip_res, real_limit)

        source = data_config_description(FLAGS.gin_file, FLAGS.gin_param, clip_res, real_limit)
        total_real = real_limit

    def compute_real():
        real = metrics.FeatureExtractor(
            i3d, num_frames, fake.resolution, FLAGS.batch_size, device, name="real", total=total_real
        )
        for video in real_videos():
            real.add(video)
        if real_skips.total:
            log.warning("real: skipped %d videos: %s", real_skips.total, real_skips.summary())
        return real.finish().stats

    cache_dir = (FLAGS.stats_cache_dir or metrics.default_cache_dir()) if FLAGS.cache_real_stats else None
    key = metrics.stats_cache_key(source, fake.resolution, num_frames, metrics.file_fingerprint(i3d_path))
    real_stats, from_cache = metrics.cached_stats(cache_dir, key, compute_real)

    result = {
        "fvd": metrics.frechet_distance(
            fake.stats.mean, fake.stats.covariance(), real_stats.mean, real_stats.covariance()
        ),
        "num_fake": fake.stats.count,
        "num_real": real_stats.count,
        "num_frames": num_frames,
        "resolution": list(fake.resolution),
        "real_stats_cached": from_cache,
        "skipped_fake": fake_skips.total,
        "skipped_real": real_skips.total,
    }
    if fake.probs is not None:
        result["is"], result["is_std"] = metrics.inception_score(fake.probs, FLAGS.is_splits)
    for axis, score in fake.seams.items():
        result[f"seam_{axis}"] = score
    return result


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    result = evaluate()
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
