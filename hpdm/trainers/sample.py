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
        --gin_param="LevelSchedule.num_steps=[32, 8, 4]"

    # Export a self-contained model directory (operative config + EMA weights), then sample from it.
    hpdm-sample --workdir=runs/quickstart --export_dir=exports/quickstart
    hpdm-sample --workdir=exports/quickstart --output_dir=out --num_videos=2 --seed=0

Float32 matmuls run as TF32 on CUDA unless the run's config (or ``--gin_param``) sets
``set_matmul_precision.tf32 = False``; the log states the precision used.

``--workdir`` is a training run directory or an export. Each video ``i`` is written as
``OUT/video_{i:04d}.{mp4,gif,png,npy}`` (the ``.npy`` is the exact uint8 ``T x H x W x C`` array).
The same seed gives the same videos.
"""

from __future__ import annotations

import os

from absl import app, flags, logging

from hpdm.samplers.guidance import define_autoguidance_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "training workdir or exported model directory.")
flags.DEFINE_string("output_dir", None, "where the videos are written.")
flags.DEFINE_integer("num_videos", 4, "number of videos to generate.")
flags.DEFINE_integer("seed", 0, "random seed; the same seed gives the same videos.")
flags.DEFINE_integer("class_label", None, "class id for a class-conditional model (default: random per video).")
flags.DEFINE_string("prompt", None, "text prompt for a text-conditional model.")
flags.DEFINE_float("guidance_scale", 1.0, "classifier-free guidance scale (1 = no guidance).")
flags.DEFINE_string(
    "overlap", None, "axes with 50%% tile overlap: any subset of f, h, w ('' for none); default: the config's OverlapSampler.overlap (fhw)."
)
flags.DEFINE_bool("cache", True, "context caching (Sec. 4.5); --nocache runs every lower level at every step.")
flags.DEFINE_multi_string("gin_param", [], "gin bindings (repeatable), e.g. \"LevelSchedule.base_steps=64\".")
flags.DEFINE_integer("batch_size", 4, "videos generated together.")
flags.DEFINE_integer("tile_batch_size", 16, "tiles per model call (bounds memory).")
flags.DEFINE_bool("offload_cache", False, "keep cached tile contexts on the CPU between steps.")
flags.DEFINE_bool("use_ema", True, "use the EMA weights of a training workdir.")
flags.DEFINE_float("fps", 8.0, "frame rate of the .mp4 and .gif files.")
flags.DEFINE_string("device", None, "torch device (default: cuda if available, else cpu).")
flags.DEFINE_string("export_dir", None, "export the model (config + EMA weights) here and exit.")
flags.DEFINE_bool(
    "trust_config", False, "load or export a saved config.gin that imports modules from outside hpdm (runs their code)."
)
define_autoguidance_flags()


def _register_configurables() -> None:
    """Import what an operative config may bind, so that its bindings are applied (not skipped)."""
    import hpdm.samplers  # noqa: F401  (LevelSchedule, OverlapSampler)
    import hpdm.trainers.distributed  # noqa: F401  (set_matmul_precision: the run's TF32 switch)

    try:
        import hpdm.trainers.text  # noqa: F401  (TextEncoder: the prompt path needs its bindings)
    except ImportError as err:  # transformers missing: only text models need it
        logging.info("text encoder unavailable (%s)", err)


def _checkpoint_levels(workdir: str, use_ema: bool):
    """Pyramid levels stored in the checkpoint (rows of the per-level ``latents``), or None."""
    from safetensors import safe_open

    from hpdm.core.pretrained import _weights_file

    try:
        with safe_open(_weights_file(workdir, use_ema), framework="pt") as f:
            if "latents" in f.keys():
                return int(f.get_slice("latents").get_shape()[0])
    except Exception:  # noqa: BLE001 - only used to explain another error
        return None
    return None


def load_model(workdir: str, use_ema: bool = True, bindings=()):
    """``hpdm.core.load_pretrained`` with a clear error when the checkpoint lacks pyramid levels."""
    import gin
    import torch

    from hpdm.core import HPDM, load_pretrained

    _register_configurables()
    try:
        model = load_pretrained(workdir, use_ema=use_ema, bindings=list(bindings))
    except ValueError as err:
        have = _checkpoint_levels(workdir, use_ema)
        with torch.device("meta"):  # architecture only: no memory for the weights
            try:
                need = HPDM()
            except Exception:  # noqa: BLE001 - fall back to the loader's own message
                raise err from None
        if have is not None and have < need.num_levels:
            raise ValueError(
                f"the checkpoint in {workdir} has {have} pyramid level(s), but the model config needs "
                f"{need.num_levels} (levels {need.pyramid.resolutions} for target {need.pyramid.target_res}); "
                "it cannot generate the missing levels. Sample at the resolution it was trained for "
                "(check --gin_param overrides of target_res / patch_res)."
            ) from err
        raise
    if bindings:
        # load_pretrained skips unknown bindings (the saved config names trainer parts); the user's
        # own --gin_param must not be skipped silently: re-parse them strictly so a typo fails here.
        gin.parse_config(list(bindings), skip_unknown=False)
    return model


def encode_prompt(model, prompt: str, num_videos: int) -> dict:
    """Text conditioning for ``prompt`` with the text encoder of the operative config."""
    if int(getattr(model, "text_dim", 0)) <= 0:
        kind = "class-conditional" if int(getattr(model, "num_classes", 0)) > 0 else "unconditional"
        raise ValueError(f"--prompt given, but the model is {kind} (text_dim=0); use --class_label or neither")
    try:
        from hpdm.trainers.text import TextEncoder, check_text_width
    except ImportError as err:
        raise ImportError(f"--prompt needs the text encoder (hpdm.trainers.text): {err}") from err
    try:
        encoder = TextEncoder()
    except Exception as err:  # noqa: BLE001 - gin.REQUIRED or a missing local checkpoint
        raise ValueError(
            "cannot build the text encoder of this model: the config must bind TextEncoder.name_or_path "
            f"to a local T5 directory or a cached hub name (set HF_HUB_OFFLINE=1 offline): {err}"
        ) from err
    check_text_width(encoder, int(model.text_dim), trained=True)
    text, mask = encoder([prompt] * num_videos)
    return {"text": text, "text_mask": mask}


def main(argv) -> None:
    del argv
    import torch

    from hpdm import gin_utils
    from hpdm.samplers import sample_videos
    from hpdm.samplers.io import write_video_files

    # Process-wide: the --guide_model load (hpdm.samplers.guidance) follows the flag too.
    gin_utils.set_config_trust(FLAGS.trust_config)
    if FLAGS.export_dir:
        from hpdm.core import export_model

        path = export_model(FLAGS.workdir, FLAGS.export_dir, use_ema=FLAGS.use_ema)
        logging.info("exported %s to %s", FLAGS.workdir, path)
        return
    if not FLAGS.output_dir:
        raise app.UsageError("--output_dir is required (or --export_dir to export the model)")
    if FLAGS.class_label is not None and FLAGS.prompt is not None:
        raise app.UsageError("give --class_label or --prompt, not both")
    if FLAGS.num_videos < 1:
        raise app.UsageError("--num_videos must be >= 1")

    from hpdm.samplers.guidance import load_autoguidance
    from hpdm.trainers.distributed import set_matmul_precision

    autoguidance = load_autoguidance()  # first: loading replaces the gin config, and the guided model's must stay
    model = load_model(FLAGS.workdir, FLAGS.use_ema, FLAGS.gin_param)
    device = torch.device(FLAGS.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    set_matmul_precision(device)  # after the run's config is loaded: it may turn TF32 off
    model = model.to(device).eval()

    cond = None
    labels = None
    if FLAGS.prompt is not None:
        cond = encode_prompt(model, FLAGS.prompt, FLAGS.num_videos)
    elif FLAGS.class_label is not None:
        labels = FLAGS.class_label  # validated against the model's classes by sample_videos

    state = {"last": None}

    def progress(info: dict) -> None:
        key = (info["first_video"], info["level"])
        step = info["step"] + 1
        if key != state["last"] or step == info["num_steps"] or step % 16 == 0:
            state["last"] = key
            logging.info(
                "videos %d-%d/%d | level %d/%d | step %d/%d | %d tiles/step | %d tile evaluations",
                info["first_video"] + 1,
                min(info["first_video"] + FLAGS.batch_size, info["num_videos"]),
                info["num_videos"],
                info["level"] + 1,
                info["num_levels"],
                step,
                info["num_steps"],
                info["tiles"],
                info["tile_evaluations"],
            )

    videos = sample_videos(
        model,
        FLAGS.num_videos,
        FLAGS.seed,
        cond=cond,
        labels=labels,
        guidance_scale=FLAGS.guidance_scale,
        overlap=FLAGS.overlap,
        cached=FLAGS.cache,
        tile_batch_size=FLAGS.tile_batch_size,
        offload_cache=FLAGS.offload_cache,
        batch_size=FLAGS.batch_size,
        device=device,
        progress=progress,
        autoguidance=autoguidance,
    )
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    for i, video in enumerate(videos):
        paths = write_video_files(video, FLAGS.output_dir, f"video_{i:04d}", fps=FLAGS.fps)
        logging.info("wrote %s", ", ".join(sorted(paths.values())))
    logging.info(
        "%d videos of %s in %s (level-block evaluations: %d)",
        len(videos),
        tuple(videos.shape[1:]),
        FLAGS.output_dir,
        model.level_block_evaluations,
    )


def _main_or_refusal(argv) -> None:
    """``main``, with a refused (untrusted) saved config reported as a message, not a traceback."""
    from hpdm import gin_utils

    try:
        main(argv)
    except gin_utils.UntrustedConfigError as e:
        raise SystemExit(f"hpdm-sample: {e}") from None


def run() -> None:
    """Console-script entry point (``hpdm-sample``)."""
    # Required only when this binary runs: other binaries (hpdm-eval) define --workdir too, and a
    # module-level requirement would break them when both modules are imported in one process.
    flags.mark_flag_as_required("workdir")
    app.run(_main_or_refusal)


if __name__ == "__main__":
    run()
