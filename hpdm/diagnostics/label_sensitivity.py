r"""How much a class-conditional model's level-0 denoiser uses each part of the label.

Level 0 of the pyramid (paper Sec. 4.1) is the whole video at the coarsest size, denoised from the
label alone; whatever it does not take from the label the finer levels cannot recover. The built-in
synthetic source's labels name a colour and a shape (``hpdm.data.synthetic``), so the two parts can
be tested separately. For a real video ``x0_i`` with label ``y_i`` and the same video rendered with
one attribute changed, ``x0_j`` with label ``y_j`` (``with_first_object``), the same noisy input
``x = x0_i + sigma * n`` is denoised under both labels and the change of the prediction is
projected on the change of the clean video:

    s = <D(x, sigma; y_j) - D(x, sigma; y_i), x0_j - x0_i> / ||x0_j - x0_i||^2

``s = 1``: the prediction moves exactly as the video would (the label decides that attribute);
``s = 0``: that part of the label is ignored. Where the noisy input already shows the attribute
(low sigma) a good denoiser follows the input and ``s`` is small for every model; where it does
not, ``s`` should approach the share of the attribute the label carries. Unlike the content probe
(``hpdm.diagnostics.synthetic_content``), which reads a few sampled videos and moves in steps of one
video, this is a continuous figure with a standard error, cheap enough to follow during training.

Usage::

    hpdm-diagnose labels --model=pretrained/quickstart --num_videos=48

The real videos follow the source settings in the model's config
(``hpdm.diagnostics.synthetic_content.synthetic_source``); ``--gin_param`` overrides them (two models
trained on different settings compare on the same videos).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from hpdm.data.synthetic import COLOURS, SHAPES, SyntheticVideos, with_first_object

ATTRIBUTES = {"colour": tuple(COLOURS), "shape": SHAPES}
DEFAULT_SIGMAS = (0.25, 0.5, 1.0, 2.0, 4.0)

# ``denoise(x [B, C, t, h, w], sigma [B], labels [B]) -> x0 estimate [B, C, t, h, w]`` at level 0.
Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Sensitivity:
    """Mean projection ``s`` over all (video, other value) pairs at one sigma, with its standard error."""

    attribute: str
    sigma: float
    mean: float
    stderr: float
    pairs: int


def counterfactuals(
    source: SyntheticVideos, index: int, attribute: str, to_level: Callable[[torch.Tensor], torch.Tensor], res
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Video ``index`` rendered with every value of ``attribute``: ``(videos [K, C, ...], labels [K], true k)``.

    ``to_level`` maps full-resolution videos ``[K, C, *res]`` to the level that is tested.
    """
    if attribute not in ATTRIBUTES:
        raise ValueError(f"unknown attribute {attribute!r}; expected one of {tuple(ATTRIBUTES)}")
    attrs = source.attributes(index)
    values = ATTRIBUTES[attribute]
    rendered = [source.render_attributes(with_first_object(attrs, **{attribute: v}), res) for v in values]
    videos = to_level(torch.stack([video for video, _, _ in rendered]))
    labels = torch.tensor([label for _, label, _ in rendered], dtype=torch.long)
    return videos, labels, values.index(attrs["objects"][0][attribute])


def projections(denoise: Denoiser, videos: torch.Tensor, labels: torch.Tensor, true: int, sigma: float, noise: torch.Tensor) -> list[float]:
    """``s`` for every other value ``j != true`` of one counterfactual set (see the module docstring)."""
    x = (videos[true] + sigma * noise).expand_as(videos)
    with torch.no_grad():
        pred = denoise(x, torch.full((len(videos),), float(sigma)), labels).float().cpu()
    out = []
    for j in range(len(videos)):
        if j == true:
            continue
        change = videos[j] - videos[true]
        norm = change.square().sum()
        if norm > 0:  # a value that renders identically (e.g. fully hidden) says nothing
            out.append(float(((pred[j] - pred[true]) * change).sum() / norm))
    return out


def measure(
    denoise: Denoiser,
    sets: Sequence[tuple[torch.Tensor, torch.Tensor, int]],
    attribute: str,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    seed: int = 0,
) -> list[Sensitivity]:
    """``Sensitivity`` per sigma over counterfactual ``sets``; the noise is drawn from ``seed``."""
    results = []
    for sigma in sigmas:
        generator = torch.Generator().manual_seed(seed)
        values = []
        for videos, labels, true in sets:
            noise = torch.randn(videos.shape[1:], generator=generator)
            values += projections(denoise, videos, labels, true, sigma, noise)
        if not values:
            raise ValueError(f"no counterfactual pair differs in {attribute}")
        stderr = float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
        results.append(Sensitivity(attribute, float(sigma), float(np.mean(values)), stderr, len(values)))
    return results


def level0_denoiser(model, device=None, autoguidance=None) -> Denoiser:
    """``Denoiser`` of an ``HPDM``'s level 0: the whole video, no ancestors (Sec. 4.1; Eq. 4 with one level),
    evaluated as the sampler evaluates it (``HPDMTileModel`` at level 0).

    With ``autoguidance`` (``hpdm.samplers.Autoguidance`` covering level 0) it is the sampler's guided
    level-0 denoiser.
    """
    from hpdm.samplers.guidance import HPDMTileModel

    device = torch.device(device) if device is not None else next(model.parameters()).device
    coords = model.pyramid.coords(0, (0, 0, 0)).to(device)
    tile_model = HPDMTileModel(model, autoguidance=autoguidance)

    def denoise(x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return tile_model.denoise(
            x.to(device), sigma.to(device), coords.expand(x.shape[0], -1), 0, None, {"label": labels.to(device)}
        )

    return denoise


def measure_videos(
    denoise: Denoiser,
    source: SyntheticVideos,
    pyramid,
    attributes: Sequence[str] = tuple(ATTRIBUTES),
    num_videos: int = 48,
    first_index: int = 1000,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    seed: int = 0,
) -> list[Sensitivity]:
    """``Sensitivity`` per attribute and sigma of a level-0 (Sec. 4.1) ``denoise`` of ``pyramid``, over
    ``source``'s videos ``first_index..first_index+num_videos-1`` and their counterfactuals."""
    from hpdm.pyramid import level_video

    to_level = lambda videos: level_video(videos, pyramid, 0)  # noqa: E731
    results = []
    for attribute in attributes:
        sets = [
            counterfactuals(source, first_index + i, attribute, to_level, pyramid.target_res)
            for i in range(num_videos)
        ]
        results += measure(denoise, sets, attribute, [float(s) for s in sigmas], seed=seed)
    return results


def format_table(results: Sequence[Sensitivity]) -> str:
    """The CLI's table: one row per attribute and sigma."""
    lines = ["attribute  sigma    s       stderr  pairs"]
    lines += [f"{r.attribute:<9}  {r.sigma:<7g}  {r.mean:6.3f}  {r.stderr:6.3f}  {r.pairs}" for r in results]
    return "\n".join(lines)
