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

import json
import logging
import os
from typing import Sequence

from absl import app, flags

from hpdm import evaluation, gin_utils, metrics
from hpdm.cli.common import define_flag, run_binary
from hpdm.trainers import run_record

FLAGS = flags.FLAGS

_TRUST = "TorchScript runs code: pass only a file from a source you trust"

log = logging.getLogger(__name__)


def define_flags() -> None:
    """The flags of ``hpdm-eval`` (``define_flag``: safe to call again, and beside other binaries)."""
    defaults = evaluation.DEFAULTS
    define_flag(
        flags.DEFINE_string, "protocol", None,
        f"Evaluation protocol fixing reals, counts, frames, size and sampling: {', '.join(metrics.PROTOCOLS)} "
        "(README, 'Evaluation: FVD and IS'). Explicit flags override single settings and are recorded.",
    )
    define_flag(
        flags.DEFINE_string, "detector", None, f"Path to the I3D TorchScript file i3d_torchscript.pt (FVD); {_TRUST}."
    )
    define_flag(flags.DEFINE_string, "detector_sha256", None, "Refuse a --detector file with another SHA-256.")
    define_flag(
        flags.DEFINE_string, "c3d_detector", None,
        f"Path to c3d_ucf101.pt; given, the Inception Score is computed; {_TRUST}.",
    )
    define_flag(flags.DEFINE_string, "c3d_detector_sha256", None, "Refuse a --c3d_detector file with another SHA-256.")
    define_flag(
        flags.DEFINE_string, "real_dir", None,
        "Folder of real videos (recursive; <class>/<video> gives labels); with --protocol, the UCF-101 root "
        "(class folders, split lists in ucfTrainTestlist), read through the protocol's split.",
    )
    define_flag(
        flags.DEFINE_string, "fake_dir", None,
        "Folder of generated videos; an hpdm-sample folder counts one video per sample (.npy).",
    )
    define_flag(flags.DEFINE_string, "workdir", None, "Training run directory (or export) to sample fake videos from.")
    define_flag(flags.DEFINE_multi_string, "gin_file", [], "Data config(s) providing the real videos.")
    define_flag(flags.DEFINE_multi_string, "gin_param", [], "Extra gin bindings for --gin_file.")
    define_flag(
        flags.DEFINE_multi_string, "sampler_param", [],
        "Gin bindings for sampling in --workdir mode, e.g. 'SamplingSteps.num_steps=[64, 16, 4]'.",
    )
    define_flag(
        flags.DEFINE_integer, "num_fake", defaults["num_fake"],
        "Fake videos to evaluate (FVD@N); 0 = every video in --fake_dir.",
    )
    define_flag(flags.DEFINE_integer, "num_real", defaults["num_real"], "Maximum real videos; 0 = all.")
    define_flag(
        flags.DEFINE_integer, "num_frames", defaults["num_frames"],
        "Frames per video fed to I3D: the first ones (Appendix B).",
    )
    define_flag(
        flags.DEFINE_list, "resolution", defaults["resolution"], "Evaluation H,W; default: the generated videos' size."
    )
    define_flag(
        flags.DEFINE_float, "guidance_scale", defaults["guidance_scale"],
        "Classifier-free guidance scale in --workdir mode (1 = none).",
    )
    define_flag(flags.DEFINE_boolean, "use_ema", defaults["use_ema"], "Sample from the EMA weights in --workdir mode.")
    define_flag(flags.DEFINE_integer, "batch_size", 16, "Videos per detector call.")
    define_flag(flags.DEFINE_integer, "sample_batch_size", 8, "Sampler batch size in --workdir mode.")
    define_flag(flags.DEFINE_integer, "sample_chunk", 256, "Videos generated per sampler call in --workdir mode.")
    define_flag(flags.DEFINE_integer, "seed", 0, "Seed for sampling and class labels.")
    define_flag(flags.DEFINE_integer, "is_splits", metrics.IS_NUM_SPLITS, "Inception Score splits.")
    define_flag(
        flags.DEFINE_list, "patch_res", None, "Last-level tile T,H,W for the seam score; default: workdir config."
    )
    define_flag(
        flags.DEFINE_string, "overlap", defaults["overlap"],
        "Last-level axes tiled with 50% overlap, a subset of 'fhw' ('t' = 'f'): passed to the sampler in "
        "--workdir mode (default 'hw', the paper's metric setting, App. C), and the seam score's tile grid.",
    )
    define_flag(flags.DEFINE_string, "stats_cache_dir", None, "Real statistics cache; default ~/.cache/hpdm/fvd_stats.")
    define_flag(
        flags.DEFINE_boolean, "cache_real_stats", True, "Cache real statistics; --nocache_real_stats recomputes."
    )
    define_flag(
        flags.DEFINE_boolean, "trust_config", False,
        "In --workdir mode, load a saved config.gin that imports modules from outside hpdm (it runs their code).",
    )
    define_flag(
        flags.DEFINE_string, "device", None, "Detector and sampler device; default cuda when available, else cpu."
    )


# --------------------------------------------------------------------------- flags -> settings


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


def _chosen(name: str):
    value = FLAGS[name].value
    return _int_list(value, "resolution", 2) if name == "resolution" else value


def settings_from_flags() -> evaluation.EvaluationSettings:
    """The evaluation settings of ``--protocol`` and the flags (explicit flags win, and are recorded)."""
    # Without a protocol every flag counts, its default included; with one, only those given.
    names = [name for name in metrics.protocols.OVERRIDABLE if FLAGS[name].present or not FLAGS.protocol]
    try:
        return evaluation.resolve_settings(
            FLAGS.protocol, {name: _chosen(name) for name in names},
            sampler_param=FLAGS.sampler_param, reals_from_data_config=bool(FLAGS.gin_file),
        )
    except evaluation.SettingsError as err:
        raise app.UsageError(str(err)) from err


def _check_flags(settings: evaluation.EvaluationSettings) -> None:
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


def evaluate_flags() -> dict:
    """Runs the evaluation described by the flags and returns the result dictionary."""
    settings = settings_from_flags()
    _check_flags(settings)
    patch_res = _int_list(FLAGS.patch_res, "patch_res", 3)
    try:
        reals = evaluation.open_reals(
            settings, real_dir=FLAGS.real_dir, gin_files=FLAGS.gin_file, gin_params=FLAGS.gin_param
        )
    except evaluation.SettingsError as err:
        raise app.UsageError(str(err)) from err
    if FLAGS.workdir:
        fake = evaluation.SampledFakes(
            FLAGS.workdir, seed=FLAGS.seed, sample_chunk=FLAGS.sample_chunk,
            sample_batch_size=FLAGS.sample_batch_size, trust_config=FLAGS.trust_config,
        )
    else:
        fake = evaluation.FolderFakes(FLAGS.fake_dir)
    return evaluation.evaluate(
        detector=FLAGS.detector, real=reals, fake=fake, settings=settings,
        detector_sha256=FLAGS.detector_sha256, c3d_detector=FLAGS.c3d_detector,
        c3d_detector_sha256=FLAGS.c3d_detector_sha256, is_splits=FLAGS.is_splits, batch_size=FLAGS.batch_size,
        patch_res=patch_res, stats_cache_dir=FLAGS.stats_cache_dir, cache_real_stats=FLAGS.cache_real_stats,
        device=FLAGS.device,
    )


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    saved = os.path.join(FLAGS.workdir or "", gin_utils.OPERATIVE_CONFIG)
    if FLAGS.workdir and os.path.isfile(saved):
        try:  # before any real video is read: a refused config should cost nothing
            gin_utils.check_saved_config(saved, FLAGS.trust_config)
        except gin_utils.UntrustedConfigError as e:
            raise SystemExit(f"hpdm-eval: {e}") from None
    result = evaluate_flags()
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
    define_flags()
    run_binary(main, __name__)


if __name__ == "__main__":
    run()
