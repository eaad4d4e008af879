"""Sampling: EDM steppers, per-level schedules, tiled overlapped cached denoising, guidance
(Sec. 4.4, 4.5; classifier-free guidance and autoguidance).

Entry points: ``sample_videos(model, num_videos, seed, ...)`` (an ``HPDM`` in memory),
``sample_videos_from_workdir(workdir, ...)`` (a training workdir or an export), and
``time_level_step`` (cached vs uncached cost of one last-level step, for ``hpdm-bench``).
"""

from hpdm.samplers.guidance import Autoguidance, HPDMTileModel, load_autoguidance_model, null_cond
from hpdm.samplers.hierarchical import (
    VideoNoise,
    resolve_labels,
    sample_pyramid,
    sample_videos,
    sample_videos_from_workdir,
    video_seed,
)
from hpdm.samplers.steps import SamplingSteps, LevelSteps, sampling_steps_record
from hpdm.samplers.steppers import (
    euler_step,
    get_sampler,
    heun_step,
    karras_sigmas,
    sample_euler,
    sample_heun,
)
from hpdm.samplers.tiled import LevelDenoiser, OverlapSampler, TileModel

__all__ = [
    "Autoguidance",
    "HPDMTileModel",
    "LevelDenoiser",
    "SamplingSteps",
    "LevelSteps",
    "sampling_steps_record",
    "OverlapSampler",
    "TileModel",
    "VideoNoise",
    "euler_step",
    "get_sampler",
    "heun_step",
    "karras_sigmas",
    "load_autoguidance_model",
    "null_cond",
    "resolve_labels",
    "sample_euler",
    "sample_heun",
    "sample_pyramid",
    "sample_videos",
    "sample_videos_from_workdir",
    "video_seed",
]
