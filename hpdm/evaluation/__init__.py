"""Evaluation of generated videos against real ones (paper Sec. 5 "Evaluation", Appendix B).

``hpdm.metrics`` computes numbers from arrays; this package finds the arrays and says how they
were measured:

- ``settings``: what is measured, a named protocol's settings with explicit choices applied;
- ``reals``: the real videos, from a folder, a UCF-101 split or a data config;
- ``fakes``: the fake videos, sampled from a trained run or read from a folder;
- ``video_folders``: folders of video files, one video per sample;
- ``run``: ``evaluate``, one evaluation end to end, returning the result dictionary.

Example::

    from hpdm import evaluation

    settings = evaluation.resolve_settings("fvd512", {"guidance_scale": 2.0})
    reals = evaluation.open_reals(settings, real_dir="UCF-101")
    result = evaluation.evaluate(
        detector="i3d_torchscript.pt", real=reals, fake=evaluation.SampledFakes("runs/ucf"), settings=settings
    )

``hpdm-eval`` (``hpdm.cli.evaluate``) is its command line.
"""

from hpdm.evaluation.fakes import (
    FakeVideos,
    FolderFakes,
    SampledFakes,
    WorkdirSampler,
    draw_labels,
    draw_labels_from_counts,
    read_sampling_record,
    sampled_videos,
)
from hpdm.evaluation.reals import DataConfigReals, FolderReals, RealVideos, UCF101Reals, open_reals
from hpdm.evaluation.run import evaluate, protocol_record
from hpdm.evaluation.settings import DEFAULTS, EvaluationSettings, SettingsError, normalise_overlap, resolve_settings
from hpdm.evaluation.video_folders import Sample, class_of, iterate_folder, list_samples, read_sample

__all__ = [
    "DEFAULTS", "DataConfigReals", "EvaluationSettings", "FakeVideos", "FolderFakes", "FolderReals",
    "RealVideos", "SampledFakes", "Sample", "SettingsError", "UCF101Reals", "WorkdirSampler",
    "class_of", "draw_labels", "draw_labels_from_counts", "evaluate", "iterate_folder", "list_samples",
    "normalise_overlap", "open_reals", "protocol_record", "read_sample", "read_sampling_record",
    "resolve_settings", "sampled_videos",
]
