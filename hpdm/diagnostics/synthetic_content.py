r"""Content probe for videos of the built-in synthetic source (``hpdm.data.synthetic``).

FVD needs a detector and many videos; the synthetic source has a known generative structure, so a
few videos can be read directly: is there ONE object, of the class's colour and shape, moving on a
straight line? This is what the README quickstart promises (issue 8), so it is measured rather than
eyeballed. The probe reads pixels only (no model):

* object pixels: saturated, bright pixels whose hue is red, yellow or green (``COLOUR_HUES``); the
  backgrounds (blue, purple, grey) never fall in those hue bands;
* per frame, connected components of object pixels larger than ``min_area`` of the frame; a frame
  with exactly one is a "single-object" frame; that component gives the frame's centroid and its
  shape: the ideal disc, axis-aligned square and diamond (the source's three shapes) of the same
  area and centroid are rasterised at pixel centres, and the one with the highest intersection over
  union wins.
  Matching whole templates is robust to the few stray edge pixels a sample may have (a bounding
  box is not: one stray pixel per side turns a square's box fill from 1 into ~0.8);
* per video: the majority colour and shape, the RMS distance of the centroids from their
  least-squares straight line in time (as a fraction of the short frame side; constant velocity
  makes it ~0 on real videos) and the distance that line travels over the clip (same unit; the
  source's ``speed``, less where the frame is too small for it). A still object has a perfect
  track and no travel, so the two are read together;
* per video, ``size_ratio``: the largest over the smallest object area among its single-object
  frames. The source's objects keep their size (~1 up to rasterisation); a sample whose object
  swells or shrinks over the clip reads well above 1 even when its centroid track is straight.

Usage::

    hpdm-diagnose content --model=pretrained/quickstart --videos_per_class=2

samples ``videos_per_class`` videos of every class with the tiled, cached sampler and prints the
probe's report beside the same report on real synthetic videos of the same classes (``probe_model``).
With ``--real_levels=k`` the first k pyramid levels are not generated but taken from those real videos
(average-pooled to the level sizes), so the report shows what the finer levels make of a correct
coarse video: comparing k = 0, 1, 2 locates the level where content is lost.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from hpdm.data.synthetic import CLASS_NAMES, COLOURS, SHAPE_UNIT_AREAS, SHAPES, class_attributes, shape_sdf

# OpenCV 8-bit HSV: hue in [0, 180). Bands cover the stripe-modulated object colours, not the
# backgrounds (blue ~108-116, purple ~140-143, grey unsaturated).
COLOUR_HUES = {"red": ((0, 10), (172, 179)), "yellow": ((18, 40),), "green": ((45, 85),)}
MIN_SATURATION = 100
MIN_VALUE = 90


@dataclass
class VideoReading:
    """What the probe reads from one video."""

    colour: Optional[str]          # majority object colour over all frames (None: no object pixels)
    shape: Optional[str]           # majority shape over single-object frames (None: there are none)
    single_object_frames: float    # fraction of frames with exactly one object component
    shape_consistency: float       # fraction of frames whose shape is the video's majority shape
    track_rms: float               # RMS off a straight constant-velocity line, / short side (nan: < 2 frames)
    travel: float                  # that line's displacement over the clip's T frames, / short side (nan: < 2)
    size_ratio: float = float("nan")  # largest / smallest object area over single-object frames (nan: < 2)


def colour_index_map(video: np.ndarray) -> np.ndarray:
    """``uint8 [T, H, W, 3]`` RGB -> ``int8 [T, H, W]``: index into ``COLOURS`` or -1 (not object)."""
    import cv2

    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB video [T, H, W, 3], got {video.dtype} {tuple(video.shape)}")
    t, h, w, _ = video.shape
    hsv = cv2.cvtColor(video.reshape(t * h, w, 3), cv2.COLOR_RGB2HSV).reshape(t, h, w, 3)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    vivid = (sat >= MIN_SATURATION) & (val >= MIN_VALUE)
    out = np.full((t, h, w), -1, dtype=np.int8)
    for i, name in enumerate(COLOURS):
        band = np.zeros_like(vivid)
        for lo, hi in COLOUR_HUES[name]:
            band |= (hue >= lo) & (hue <= hi)
        out[vivid & band] = i
    return out


def shape_scores(mask: np.ndarray) -> dict:
    """Intersection over union of a binary object ``mask [H, W]`` with each ideal shape (``SHAPES``).

    Every template is the source's own shape (``shape_sdf``) with the mask's area and centroid,
    rasterised at pixel centres like the mask itself: small discs are blocky on the pixel grid, and a
    template with fractional edge coverage would match their blocks to a square.
    """
    mask = np.asarray(mask, dtype=bool)
    area = float(mask.sum())
    if area == 0:
        raise ValueError("shape_scores needs a non-empty mask")
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    dy = np.arange(mask.shape[0])[:, None] - cy
    dx = np.arange(mask.shape[1])[None, :] - cx
    scores = {}
    for name in SHAPES:
        template = shape_sdf(name, dx, dy, np.sqrt(area / SHAPE_UNIT_AREAS[name])) <= 0
        scores[name] = float((mask & template).sum() / (mask | template).sum())
    return scores


def _best_shape(mask: np.ndarray) -> str:
    scores = shape_scores(mask)
    return max(scores, key=scores.get)


def read_video(video: np.ndarray, min_area: float = 0.01) -> VideoReading:
    """Probe one ``uint8 [T, H, W, 3]`` video (see the module docstring)."""
    import cv2

    colours = colour_index_map(video)
    t, h, w = colours.shape
    counts = np.bincount(colours[colours >= 0].ravel().astype(np.int64), minlength=len(COLOURS))
    colour = list(COLOURS)[int(counts.argmax())] if counts.sum() else None
    min_pixels = max(1, int(round(min_area * h * w)))
    single, shapes, times, centroids, areas = 0, [], [], [], []
    for f in range(t):
        mask = (colours[f] >= 0).astype(np.uint8)
        n, components, stats, cents = cv2.connectedComponentsWithStats(mask, connectivity=8)
        big = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= min_pixels]
        if len(big) != 1:
            continue
        single += 1
        i = big[0]
        shapes.append(_best_shape(components == i))
        times.append(f)
        centroids.append(cents[i])
        areas.append(float(stats[i, cv2.CC_STAT_AREA]))
    shape, consistency = None, 0.0
    if shapes:
        names, votes = np.unique(shapes, return_counts=True)
        shape = str(names[votes.argmax()])
        consistency = float(votes.max()) / t
    track = travel = float("nan")
    if len(times) >= 2:
        ts = np.asarray(times, dtype=np.float64)
        xy = np.asarray(centroids, dtype=np.float64)
        design = np.stack([ts, np.ones_like(ts)], axis=1)
        coef, *_ = np.linalg.lstsq(design, xy, rcond=None)
        residual = xy - design @ coef
        track = float(np.sqrt((residual**2).sum(axis=1).mean()) / min(h, w))
        # The source moves an object by its velocity over T frame intervals (frame times are bin centres).
        travel = float(np.hypot(*coef[0]) * t / min(h, w))
    size_ratio = max(areas) / min(areas) if len(areas) >= 2 else float("nan")
    return VideoReading(colour, shape, single / t, consistency, track, travel, size_ratio)


def content_report(videos: Sequence[np.ndarray], labels: Optional[Sequence[int]] = None, min_area: float = 0.01) -> dict:
    """Aggregate readings of ``videos`` (each ``uint8 [T, H, W, 3]``); accuracies need ``labels``.

    Returns ``num_videos``, ``single_object_frames`` and ``shape_consistency`` (means over videos),
    ``track_rms``, ``travel`` and ``size_ratio`` (medians over videos with a track; nan if none), and with labels
    ``colour_accuracy`` / ``shape_accuracy`` (fraction of videos whose reading matches the class).
    """
    readings = [read_video(v, min_area) for v in videos]
    if not readings:
        raise ValueError("content_report needs at least one video")
    tracks = [r.track_rms for r in readings if np.isfinite(r.track_rms)]
    travels = [r.travel for r in readings if np.isfinite(r.travel)]
    sizes = [r.size_ratio for r in readings if np.isfinite(r.size_ratio)]
    report = dict(
        num_videos=len(readings),
        single_object_frames=float(np.mean([r.single_object_frames for r in readings])),
        shape_consistency=float(np.mean([r.shape_consistency for r in readings])),
        track_rms=float(np.median(tracks)) if tracks else float("nan"),
        travel=float(np.median(travels)) if travels else float("nan"),
        size_ratio=float(np.median(sizes)) if sizes else float("nan"),
    )
    if labels is not None:
        labels = [int(l) for l in labels]
        if len(labels) != len(readings):
            raise ValueError(f"got {len(labels)} labels for {len(readings)} videos")
        wanted = [class_attributes(l) for l in labels]
        report["colour_accuracy"] = float(np.mean([r.colour == c for r, (c, _) in zip(readings, wanted)]))
        report["shape_accuracy"] = float(np.mean([r.shape == s for r, (_, s) in zip(readings, wanted)]))
    report["readings"] = [asdict(r) for r in readings]
    return report


def real_video_tensors(labels: Sequence[int], res: Sequence[int], first_index: int = 0, seed: int = 0, **source_args):
    """Real synthetic videos (float ``[N, 3, T, H, W]`` in [-1, 1]) with the given first-object classes.

    Takes, for each class, the first matching indices from ``first_index`` on; renders only those.
    ``source_args`` go to ``SyntheticVideos`` (e.g. ``texture``).
    """
    import torch

    from hpdm.data.synthetic import SyntheticVideos

    source = SyntheticVideos(seed=seed, **source_args)
    need = Counter(int(l) for l in labels)
    indices: dict = {label: [] for label in need}
    index = first_index
    while any(len(indices[label]) < n for label, n in need.items()):
        label = source.attributes(index)["objects"][0]["label"]
        if label in need and len(indices[label]) < need[label]:
            indices[label].append(index)
        index += 1
    queues = {label: iter(found) for label, found in indices.items()}
    return torch.stack([source.render(next(queues[int(l)]), res)[0] for l in labels])


def real_videos(labels: Sequence[int], res: Sequence[int], first_index: int = 0, seed: int = 0, **source_args) -> list:
    """``real_video_tensors`` as a list of uint8 ``[T, H, W, 3]`` arrays (what the probe reads)."""
    from hpdm.video.frames import to_uint8

    return list(to_uint8(real_video_tensors(labels, res, first_index, seed, **source_args)).numpy())


def load_synthetic_model(path: str, bindings: Sequence[str] = (), device: Optional[str] = None):
    """``(model, config)``: the EMA model at ``path`` (workdir or export; gin ``bindings`` on top), on
    ``device`` if given, checked to be conditioned on the synthetic source's classes, for the tools that
    feed it real labels; ``config`` is the saved run config plus ``bindings``
    (``hpdm.core.load_pretrained``).

    Loading leaves the caller's gin config alone: ``synthetic_source(config)`` builds the source with
    the settings the model was trained on.
    """
    from hpdm.core import load_pretrained

    model, config = load_pretrained(path, use_ema=True, bindings=list(bindings), device=device)
    num_classes = int(getattr(model, "num_classes", 0))
    if num_classes != len(CLASS_NAMES):
        raise ValueError(
            f"needs a class-conditional model of the synthetic source's {len(CLASS_NAMES)} classes "
            f"(colour x shape), got num_classes={num_classes}"
        )
    return model, config


def synthetic_source(config, bindings: Sequence[str] = ()):
    """The ``SyntheticVideos`` a run was trained on: built under its saved ``config``
    (``hpdm.gin_utils.SavedConfig``) plus ``bindings``, which may change the videos a model is tested on."""
    from hpdm.data.synthetic import SyntheticVideos

    return config.call(SyntheticVideos, bindings=bindings)


def sampling_progress(batch_size: int) -> Callable[[dict], None]:
    """A ``sample_videos`` progress callback that logs each batch's levels once, for ``batch_size`` videos
    generated together."""
    from absl import logging

    seen = set()

    def progress(info: dict) -> None:
        key = (info["first_video"], info["level"])
        if key not in seen:
            seen.add(key)
            logging.info(
                "videos %d-%d/%d | level %d/%d | %d steps",
                info["first_video"] + 1, min(info["first_video"] + batch_size, info["num_videos"]),
                info["num_videos"], info["level"] + 1, info["num_levels"], info["num_steps"],
            )

    return progress


def probe_model(
    model,
    config,
    labels: Sequence[int],
    *,
    seed: int = 0,
    guidance_scale: float = 1.0,
    batch_size: int = 8,
    tile_batch_size: int = 16,
    first_index: int = 1000,
    real_levels: int = 0,
    autoguidance=None,
    progress: Optional[Callable[[dict], None]] = None,
) -> tuple[dict, np.ndarray]:
    """Sample one video per label and read them beside real videos of the same labels.

    ``config`` is the config the model was loaded with (``load_synthetic_model``): the real videos
    follow its source settings, and the sampler its steps and overlap. The real videos are the first
    of each class from ``first_index`` on; their first ``real_levels`` pyramid levels (Sec. 4.1) are
    given to the sampler instead of generated. Returns
    ``({"real": report, "samples": report}, sampled uint8 [N, T, H, W, 3])`` (``content_report``).
    """
    import torch

    from hpdm.pyramid import level_video
    from hpdm.samplers.hierarchical import sample_videos
    from hpdm.video.frames import to_uint8

    labels = [int(l) for l in labels]
    real = config.call(real_video_tensors, labels, model.pyramid.target_res, first_index=first_index)
    given = [level_video(real, model.pyramid, level) for level in range(real_levels)]
    fake = config.call(
        sample_videos, model, len(labels), seed, labels=torch.tensor(labels), guidance_scale=guidance_scale,
        batch_size=batch_size, tile_batch_size=tile_batch_size, progress=progress, given_levels=given,
        autoguidance=autoguidance,
    ).numpy()
    real = list(to_uint8(real).numpy())
    return {"real": content_report(real, labels), "samples": content_report(list(fake), labels)}, fake


def format_report(name: str, report: dict) -> str:
    """One line: ``name`` then the report's accuracies and rates, e.g. ``samples   colour_accuracy=1.000 ...``."""
    keys = ("colour_accuracy", "shape_accuracy", "single_object_frames", "shape_consistency", "track_rms", "travel", "size_ratio")
    return f"{name:<10}" + "  ".join(f"{k}={report[k]:.3f}" for k in keys if k in report)
