"""Built-in synthetic videos: the default source, needing no files.

Each video is rendered procedurally from ``(seed, index)`` at whatever ``(T, H, W)`` is asked for,
in float precision with antialiased edges. The default is deliberately easy, so that a tiny model
trained for minutes (README quickstart) produces recognisable samples: ONE fairly large coloured
shape moving on a straight line at constant velocity over a smooth two-colour gradient background.
Every pyramid level (paper Sec. 4) has something to learn: the coarse levels see the background,
the colour and the trajectory; the finer levels see sharp edges and stripes drawn on the object
(period about 1/12 of the frame, i.e. ~5 px at 64 px, averaged away at 16 px).

Classes (``CLASS_NAMES``, label = class of the first object) are ``colour x shape``:

  0 red disc      1 green disc      2 yellow disc
  3 red square    4 green square    5 yellow square
  6 red diamond   7 green diamond   8 yellow diamond

Captions are derived from the same attributes, e.g. "a red disc moving left on a blue background".
Harder variants: more objects (``num_objects``), stronger stripes (``texture``), faster motion
(``speed``), smaller shapes (``radius``).
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import gin
import numpy as np
import torch

from hpdm.data.base import Clip, ClipSpec, Res
from hpdm.data.seeding import derive_seed

SHAPES = ("disc", "square", "diamond")
COLOURS = {
    "red": (0.92, 0.16, 0.12),
    "green": (0.16, 0.80, 0.22),
    "yellow": (0.98, 0.85, 0.10),
}
# Backgrounds are dark-to-mid gradients, so every object colour stands out on every background.
BACKGROUNDS = {
    "blue": ((0.03, 0.07, 0.30), (0.28, 0.48, 0.85)),
    "grey": ((0.12, 0.12, 0.12), (0.52, 0.52, 0.52)),
    "purple": ((0.22, 0.04, 0.28), (0.52, 0.28, 0.62)),
}
CLASS_NAMES = tuple(f"{colour} {shape}" for shape in SHAPES for colour in COLOURS)
# Compass names for the motion direction, counter-clockwise from "right" in 45-degree sectors.
DIRECTIONS = ("right", "up and right", "up", "up and left", "left", "down and left", "down", "down and right")


# Area of each shape at radius 1 (the regions where ``shape_sdf <= 0``): pi r^2, (2r)^2, 2 (1.25 r)^2.
SHAPE_UNIT_AREAS = {"disc": math.pi, "square": 4.0, "diamond": 2.0 * 1.25**2}


def shape_sdf(shape: str, dx: np.ndarray, dy: np.ndarray, radius: float) -> np.ndarray:
    """Signed distance in pixels (negative inside); exact for disc/diamond, Chebyshev for square."""
    if shape == "disc":
        return np.sqrt(dx * dx + dy * dy) - radius
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) - radius
    if shape == "diamond":
        return (np.abs(dx) + np.abs(dy) - 1.25 * radius) / math.sqrt(2.0)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _direction_name(vx: float, vy: float) -> str:
    angle = math.degrees(math.atan2(-vy, vx)) % 360.0  # image y points down, "up" is -y
    return DIRECTIONS[int(((angle + 22.5) % 360.0) // 45.0)]


@gin.configurable
class SyntheticVideos:
    """Procedural videos with labels and captions, deterministic from ``(seed, index)``.

    Args:
      length: virtual dataset size; the loader permutes indices per epoch.
      seed: content seed (independent of the loader's sampling seed).
      num_objects: shapes per video (difficulty knob; default 1).
      radius: range of the shape radius, as a fraction of the short frame side.
      speed: range of the distance travelled over the clip, as a fraction of the short side.
      texture: amplitude of the stripes on the objects (0 disables fine detail).
      stripe_period: stripe period as a fraction of the short side.
    """

    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES
    has_text = True

    def __init__(
        self,
        length: int = 100_000,
        seed: int = 0,
        num_objects: int = 1,
        radius: Tuple[float, float] = (0.16, 0.24),
        speed: Tuple[float, float] = (0.25, 0.5),
        texture: float = 0.25,
        stripe_period: float = 1.0 / 12.0,
    ):
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        if num_objects < 1:
            raise ValueError(f"num_objects must be >= 1, got {num_objects}")
        if not 0 < radius[0] <= radius[1] < 0.5:
            raise ValueError(f"radius range must satisfy 0 < lo <= hi < 0.5, got {radius}")
        if not 0 <= speed[0] <= speed[1]:
            raise ValueError(f"speed range must satisfy 0 <= lo <= hi, got {speed}")
        self.length = int(length)
        self.seed = int(seed)
        self.num_objects = int(num_objects)
        self.radius = tuple(float(r) for r in radius)
        self.speed = tuple(float(s) for s in speed)
        self.texture = float(texture)
        self.stripe_period = float(stripe_period)

    def __len__(self) -> int:
        return self.length

    def prepare(self, spec: ClipSpec) -> None:
        """Nothing to index: every index renders on demand."""

    def describe(self, index: int) -> str:
        return f"synthetic:{self.seed}:{index}"

    def load(self, index: int, spec: ClipSpec, generator: torch.Generator | None = None) -> Clip:
        """Render video ``index`` at ``spec.target_res``; content ignores ``generator`` (like a file)."""
        video, label, caption = self.render(index, spec.target_res)
        return Clip(video=video, label=label, text=caption)

    def attributes(self, index: int) -> dict:
        """The generating attributes of video ``index`` (resolution-independent)."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} synthetic videos")
        rng = np.random.default_rng(derive_seed(self.seed, index))
        background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
        objects = []
        for _ in range(self.num_objects):
            label = int(rng.integers(len(CLASS_NAMES)))
            colour, shape = class_attributes(label)
            theta = rng.uniform(0.0, 2.0 * math.pi)
            travel = rng.uniform(*self.speed)
            objects.append(
                dict(
                    label=label,
                    shape=shape,
                    colour=colour,
                    radius=rng.uniform(*self.radius),
                    velocity=(travel * math.cos(theta), travel * math.sin(theta)),
                    centre=(rng.uniform(), rng.uniform()),  # mapped into the valid range at render
                    stripe_angle=rng.uniform(0.0, math.pi),
                    stripe_phase=rng.uniform(0.0, 2.0 * math.pi),
                )
            )
        return dict(background=background, gradient_angle=rng.uniform(0.0, 2.0 * math.pi), objects=objects)

    def caption(self, attrs: dict) -> str:
        parts = [
            f"a {o['colour']} {o['shape']} moving {_direction_name(*o['velocity'])}" for o in attrs["objects"]
        ]
        return f"{' and '.join(parts)} on a {attrs['background']} background"

    def render(self, index: int, res: Sequence[int]) -> tuple[torch.Tensor, int, str]:
        """``(video [3, T, H, W] float32 in [-1, 1], label, caption)`` of video ``index`` at ``res``."""
        return self.render_attributes(self.attributes(index), res)

    def render_attributes(self, attrs: dict, res: Sequence[int]) -> tuple[torch.Tensor, int, str]:
        """``render`` for given attributes, e.g. those of ``attributes(i)`` with one changed (``with_first_object``)."""
        t_len, h, w = (int(v) for v in res)
        short = float(min(h, w))
        # numpy, not torch: single-threaded by design, so a data thread never fights the trainer's
        # intra-op thread pool (which on few cores slows small torch ops down many times).
        f32 = np.float32
        # Pixel-centre coordinates in pixels, so shapes stay round on non-square frames.
        ys = (np.arange(h, dtype=f32) + 0.5).reshape(1, h, 1)
        xs = (np.arange(w, dtype=f32) + 0.5).reshape(1, 1, w)
        # Time runs over (-0.5, 0.5) whatever T is: the same motion, sampled at T instants.
        ts = ((np.arange(t_len, dtype=f32) + 0.5) / t_len - 0.5).reshape(t_len, 1, 1)

        lo, hi = (np.asarray(c, dtype=f32).reshape(3, 1, 1, 1) for c in BACKGROUNDS[attrs["background"]])
        ga = attrs["gradient_angle"]
        proj = ((xs / w - 0.5) * f32(math.cos(ga)) + (ys / h - 0.5) * f32(math.sin(ga))) * f32(math.sqrt(0.5)) + f32(0.5)
        video = np.broadcast_to(lo + (hi - lo) * proj[None], (3, t_len, h, w))  # static background

        for obj in attrs["objects"]:
            r = obj["radius"] * short
            vx, vy = obj["velocity"][0] * short, obj["velocity"][1] * short
            # Keep the whole trajectory inside the frame; too fast a shape is slowed down to fit.
            cx, vx = _fit_axis(obj["centre"][0], vx, r, w)
            cy, vy = _fit_axis(obj["centre"][1], vy, r, h)
            dx = xs - (f32(cx) + f32(vx) * ts)
            dy = ys - (f32(cy) + f32(vy) * ts)
            alpha = _unit_clip(f32(0.5) - shape_sdf(obj["shape"], dx, dy, r))  # 1-pixel antialiasing
            colour = np.asarray(COLOURS[obj["colour"]], dtype=f32).reshape(3, 1, 1, 1)
            if self.texture:
                along = dx * f32(math.cos(obj["stripe_angle"])) + dy * f32(math.sin(obj["stripe_angle"]))
                freq = f32(2.0 * math.pi / (self.stripe_period * short))
                stripes = f32(1.0) + f32(self.texture) * np.sin(along * freq + f32(obj["stripe_phase"]))
                fill = _unit_clip(colour * stripes[None])
            else:  # flat colour: 1 + 0 * sin(...) is exactly 1, so the stripes need not be computed
                fill = _unit_clip(colour.copy())
            video = video + alpha[None] * (fill - video)

        # Every term above stays in [0, 1], so the result is in [-1, 1] without a clamp.
        video = video * f32(2.0) - f32(1.0)
        return torch.from_numpy(np.ascontiguousarray(video)), attrs["objects"][0]["label"], self.caption(attrs)


def class_attributes(label: int) -> tuple[str, str]:
    """``(colour, shape)`` of a class id (``CLASS_NAMES`` order: colour fastest)."""
    return list(COLOURS)[label % len(COLOURS)], SHAPES[label // len(COLOURS)]


def class_label(colour: str, shape: str) -> int:
    """The class id of a ``colour`` ``shape`` (index into ``CLASS_NAMES``; inverse of ``class_attributes``)."""
    if colour not in COLOURS or shape not in SHAPES:
        raise ValueError(f"unknown class {colour!r} {shape!r}; colours {tuple(COLOURS)}, shapes {SHAPES}")
    return CLASS_NAMES.index(f"{colour} {shape}")


def with_first_object(attrs: dict, colour: str | None = None, shape: str | None = None) -> dict:
    """A copy of ``attrs`` whose first object has another colour and/or shape (label kept consistent).

    Everything else (background, size, path, stripes) stays, so rendering both gives two videos that
    differ in that attribute alone.
    """
    first = dict(attrs["objects"][0])
    first["colour"] = colour if colour is not None else first["colour"]
    first["shape"] = shape if shape is not None else first["shape"]
    first["label"] = class_label(first["colour"], first["shape"])
    return dict(attrs, objects=[first, *attrs["objects"][1:]])


def _unit_clip(a: np.ndarray) -> np.ndarray:
    """In-place clamp to [0, 1] (``np.clip`` costs several times more on these small arrays)."""
    np.maximum(a, 0.0, out=a)
    return np.minimum(a, 1.0, out=a)


def _fit_axis(unit_centre: float, velocity: float, radius: float, size: int) -> tuple[float, float]:
    """Mid-clip centre (pixels) and velocity such that the shape never leaves ``[0, size)``."""
    room = size - 2.0 * radius
    if room <= 0:
        return size / 2.0, 0.0
    if abs(velocity) > room:
        velocity = math.copysign(room, velocity)
    lo = radius + abs(velocity) / 2.0
    return lo + unit_centre * (room - abs(velocity)), velocity
