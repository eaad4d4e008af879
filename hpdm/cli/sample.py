r"""``hpdm-sample``: generate videos from a trained HPDM (paper Sec. 4.4, 4.5; Appendix C).

Usage::

    # Four videos from the EMA weights of a training run (full 50% overlap on t, h and w).
    hpdm-sample --workdir=runs/quickstart --output_dir=samples --num_videos=4 --seed=0

    # Class-conditional with classifier-free guidance, spatial overlap only (the paper's metrics).
    hpdm-sample --workdir=runs/ucf --output_dir=out --num_videos=8 --seed=1 \
        --class_label=12 --guidance_scale=2.0 --overlap=hw

    # Text-to-video (the prompt goes through the text encoder named in the run's config).
    hpdm-sample --workdir=runs/t2v --output_dir=out --num_videos=1 --seed=3 --prompt="a red car"

    # Autoguidance (Karras et al. 2024) of level 0 by a weaker model of the same pyramid.
    hpdm-sample --workdir=pretrained/quickstart --output_dir=out --num_videos=4 \
        --guide_model=pretrained/quickstart_run7 --autoguidance_scale=1.5

    # Fewer steps, uncached reference path, any gin binding of the sampler or model.
    hpdm-sample --workdir=runs/quickstart --output_dir=out --num_videos=2 --seed=0 --nocache \
        --gin_param="SamplingSteps.num_steps=[32, 8, 4]"

    # Export a self-contained model directory (the run's gin config + EMA weights), then sample from it.
    hpdm-sample --workdir=runs/quickstart --export_dir=exports/quickstart
    hpdm-sample --workdir=exports/quickstart --output_dir=out --num_videos=2 --seed=0

Float32 matmuls run as TF32 on CUDA unless the run's config (or ``--gin_param``) sets
``set_matmul_precision.tf32 = False``; the log states the precision used.

``--workdir`` is a training run directory, an export or a Hugging Face Hub repo id (``hpdm[hub]``;
``HF_HUB_OFFLINE=1`` reads only the local cache). Sampling goes through ``hpdm.HPDMPipeline``, which
shows a progress bar with ETA on a terminal and log lines elsewhere. Each video ``i`` is written as
``OUT/video_{i:04d}.{mp4,gif,png,npy}`` (the ``.npy`` is the exact uint8 ``T x H x W x C`` array).
The same seed gives the same videos.
"""

from __future__ import annotations

import os

from absl import app, flags, logging

from hpdm.cli.common import autoguidance_from_flags, define_autoguidance_flags, define_flag, run_binary

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags of ``hpdm-sample`` (``define_flag``: safe to call again, and beside other binaries)."""
    define_flag(
        flags.DEFINE_string, "workdir", None, "training workdir, exported model directory or Hugging Face Hub repo id."
    )
    define_flag(flags.DEFINE_string, "output_dir", None, "where the videos are written.")
    define_flag(flags.DEFINE_integer, "num_videos", 4, "number of videos to generate.")
    define_flag(flags.DEFINE_integer, "seed", 0, "random seed; the same seed gives the same videos.")
    define_flag(
        flags.DEFINE_integer, "class_label", None, "class id for a class-conditional model (default: random per video)."
    )
    define_flag(flags.DEFINE_string, "prompt", None, "text prompt for a text-conditional model.")
    define_flag(flags.DEFINE_float, "guidance_scale", 1.0, "classifier-free guidance scale (1 = no guidance).")
    define_flag(
        flags.DEFINE_string, "overlap", None,
        "axes with 50%% tile overlap: any subset of f, h, w ('' for none); default: the config's "
        "OverlapSampler.overlap (fhw).",
    )
    define_flag(
        flags.DEFINE_bool, "cache", True, "context caching (Sec. 4.5); --nocache runs every lower level at every step."
    )
    define_flag(
        flags.DEFINE_multi_string, "gin_param", [], "gin bindings (repeatable), e.g. \"SamplingSteps.base_steps=64\"."
    )
    define_flag(flags.DEFINE_integer, "batch_size", 4, "videos generated together.")
    define_flag(flags.DEFINE_integer, "tile_batch_size", 16, "tiles per model call (bounds memory).")
    define_flag(flags.DEFINE_bool, "offload_cache", False, "keep cached tile contexts on the CPU between steps.")
    define_flag(flags.DEFINE_bool, "use_ema", True, "use the EMA weights of a training workdir.")
    define_flag(flags.DEFINE_float, "fps", 8.0, "frame rate of the .mp4 and .gif files.")
    define_flag(flags.DEFINE_string, "device", None, "torch device (default: cuda if available, else cpu).")
    define_flag(flags.DEFINE_string, "export_dir", None, "export the model (config + EMA weights) here and exit.")
    define_flag(
        flags.DEFINE_bool, "trust_config", False,
        "load or export a saved config.gin that imports modules from outside hpdm (runs their code).",
    )
    define_autoguidance_flags()


def main(argv) -> None:
    del argv
    from hpdm import gin_utils
    from hpdm.pipeline import HPDMPipeline, resolve_model_dir
    from hpdm.samplers.io import write_video_files

    # Process-wide: the --guide_model load (autoguidance_from_flags) follows the flag too.
    gin_utils.set_config_trust(FLAGS.trust_config)
    if FLAGS.export_dir:
        from hpdm.core import export_model

        path = export_model(resolve_model_dir(FLAGS.workdir), FLAGS.export_dir, use_ema=FLAGS.use_ema)
        logging.info("exported %s to %s", FLAGS.workdir, path)
        return
    if not FLAGS.output_dir:
        raise app.UsageError("--output_dir is required (or --export_dir to export the model)")
    if FLAGS.class_label is not None and FLAGS.prompt is not None:
        raise app.UsageError("give --class_label or --prompt, not both")
    if FLAGS.num_videos < 1:
        raise app.UsageError("--num_videos must be >= 1")

    autoguidance = autoguidance_from_flags()
    pipe = HPDMPipeline.from_pretrained(FLAGS.workdir, FLAGS.device, use_ema=FLAGS.use_ema, bindings=FLAGS.gin_param)
    videos = pipe(
        labels=FLAGS.class_label,  # validated against the model's classes by sample_videos
        prompts=None if FLAGS.prompt is None else [FLAGS.prompt],
        num_videos=FLAGS.num_videos,
        seed=FLAGS.seed,
        guidance_scale=FLAGS.guidance_scale,
        overlap=FLAGS.overlap,
        cached=FLAGS.cache,
        tile_batch_size=FLAGS.tile_batch_size,
        offload_cache=FLAGS.offload_cache,
        batch_size=FLAGS.batch_size,
        autoguidance=autoguidance,
    )
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    for i, video in enumerate(videos):
        paths = write_video_files(video, FLAGS.output_dir, f"video_{i:04d}", fps=FLAGS.fps)
        logging.info("wrote %s", ", ".join(sorted(paths.values())))
    write_sampling_record(pipe, FLAGS.output_dir, len(videos), autoguidance is not None)
    logging.info(
        "%d videos of %s in %s (level-block evaluations: %d)",
        len(videos),
        tuple(videos.shape[1:]),
        FLAGS.output_dir,
        pipe.model.level_block_evaluations,
    )


def write_sampling_record(pipe, output_dir: str, num_videos: int, autoguided: bool) -> str:
    """``OUTPUT_DIR/sampling.json``: the model, weights, seed, conditioning and sampler settings of the
    videos beside it, so that ``hpdm-eval --fake_dir`` can record how its fakes were made."""
    import json

    from hpdm import __version__
    from hpdm.samplers.io import SAMPLING_RECORD

    sampler = pipe.sampler_settings(guidance_scale=FLAGS.guidance_scale, overlap=FLAGS.overlap)
    record = {
        "model": FLAGS.workdir,
        "ema": FLAGS.use_ema,
        "gin_param": list(FLAGS.gin_param),
        "seed": FLAGS.seed,
        "num_videos": num_videos,
        "class_label": FLAGS.class_label,
        "prompt": FLAGS.prompt,
        "guidance_scale": sampler.pop("guidance_scale"),
        "autoguidance": autoguided,
        "sampler": {**sampler, "cached": FLAGS.cache},
        "hpdm_version": __version__,
    }
    path = os.path.join(output_dir, SAMPLING_RECORD)
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1)
    os.replace(path + ".tmp", path)
    return path


def _main_or_refusal(argv) -> None:
    """``main``, with a refused (untrusted) saved config reported as a message, not a traceback."""
    from hpdm import gin_utils

    try:
        main(argv)
    except gin_utils.UntrustedConfigError as e:
        raise SystemExit(f"hpdm-sample: {e}") from None


def run() -> None:
    """Console-script entry point (``hpdm-sample``)."""
    define_flags()
    # Required only when this binary runs: other binaries (hpdm-eval) define --workdir too, and a
    # requirement set by define_flags would hold for them when several run in one process.
    flags.mark_flag_as_required("workdir")
    run_binary(_main_or_refusal, __name__)


if __name__ == "__main__":
    run()
