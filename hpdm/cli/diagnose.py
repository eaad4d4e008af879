r"""``hpdm-diagnose``: checks of what a model trained on the built-in synthetic videos has learnt.

Usage::

    # The content probe: colour, shape, one object, straight-line motion of sampled videos.
    hpdm-diagnose content --model=pretrained/quickstart --videos_per_class=2 [--real_levels=k]

    # How much of a real video's motion level 0 keeps per noise level; how far its samples move.
    hpdm-diagnose motion --model=pretrained/quickstart --num_videos=36 [--sample_steps=64]

    # How much of the colour and the shape level 0 takes from the class label.
    hpdm-diagnose labels --model=pretrained/quickstart --num_videos=48

    # The per-level denoising error on real patch hierarchies.
    hpdm-diagnose denoising --model=pretrained/quickstart

    # Train level 0 alone and follow the figures above (two runs side by side compare architectures).
    hpdm-diagnose level0-ablation --gin_param="HPDM.token_mixing=None" --output=linear.jsonl

The first argument names the check (``COMMANDS``); ``hpdm-diagnose --help`` lists them and
``hpdm-diagnose COMMAND --help`` the flags of one. ``python -m hpdm.cli.diagnose`` is the same binary.
What each check measures, and why, is in its module of ``hpdm.diagnostics``; this binary turns flags
into arguments and prints the results.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

from absl import app, flags

from hpdm.cli.common import autoguidance_from_flags, define_autoguidance_flags, define_flag

FLAGS = flags.FLAGS
PROGRAM = "hpdm-diagnose"


def _model_flag() -> None:
    # Required, but checked in main (``_required_model``): absl's mark_flag_as_required would stay on
    # a flag of the same name that another binary of the process defined as optional.
    define_flag(flags.DEFINE_string, "model", None, "training workdir or exported model directory.")


def _content_flags() -> None:
    _model_flag()
    define_autoguidance_flags()
    define_flag(flags.DEFINE_integer, "videos_per_class", 2, "sampled videos per class label.")
    define_flag(flags.DEFINE_integer, "seed", 0, "sampling seed.")
    define_flag(flags.DEFINE_float, "guidance_scale", 1.0, "classifier-free guidance scale (1 = none).")
    define_flag(flags.DEFINE_integer, "batch_size", 8, "videos generated together.")
    define_flag(flags.DEFINE_integer, "tile_batch_size", 16, "tiles per model call (bounds memory).")
    define_flag(flags.DEFINE_integer, "first_index", 1000, "first synthetic index searched for the real reference videos.")
    define_flag(flags.DEFINE_string, "device", None, "torch device (default: where the model was loaded).")
    define_flag(flags.DEFINE_string, "output", None, "also write the report as JSON here.")
    define_flag(flags.DEFINE_multi_string, "gin_param", [], "gin bindings, e.g. \"SamplingSteps.num_steps=[16, 8, 4]\".")
    define_flag(
        flags.DEFINE_integer, "real_levels", 0,
        "condition on the first k levels of the real reference videos instead of generating them "
        "(0: generate everything); isolates which level loses the content.",
    )
    define_flag(flags.DEFINE_bool, "save_videos", False, "with --output, also save the sampled videos (.npy) beside it.")


def _level0_flags(num_videos: int, num_videos_help: str) -> None:
    """The flags ``labels`` and ``motion`` share: the model, the real synthetic videos (``num_videos``
    of them by default), the noise levels and seed, the device, the JSON output and gin bindings over
    the model's config."""
    from hpdm.diagnostics.label_sensitivity import DEFAULT_SIGMAS

    _model_flag()
    define_flag(flags.DEFINE_integer, "num_videos", num_videos, num_videos_help)
    define_flag(flags.DEFINE_integer, "first_index", 1000, "first synthetic index used.")
    define_flag(flags.DEFINE_list, "sigmas", [str(s) for s in DEFAULT_SIGMAS], "noise levels (data space, level 0).")
    define_flag(flags.DEFINE_integer, "seed", 0, "noise seed.")
    define_flag(flags.DEFINE_string, "device", None, "torch device (default: where the model was loaded).")
    define_flag(flags.DEFINE_string, "output", None, "also write the table as JSON here.")
    define_flag(
        flags.DEFINE_multi_string, "gin_param", [],
        "gin bindings over the model's config, e.g. \"SyntheticVideos.radius=(0.16, 0.24)\" "
        "to test on other videos than it was trained on.",
    )


def _labels_flags() -> None:
    from hpdm.diagnostics.label_sensitivity import ATTRIBUTES

    _level0_flags(48, "real synthetic videos (each gives 2 pairs per attribute).")
    define_flag(flags.DEFINE_list, "attributes", list(ATTRIBUTES), "label parts tested: colour, shape.")


def _motion_flags() -> None:
    _level0_flags(36, "real synthetic videos.")
    define_autoguidance_flags()
    define_flag(flags.DEFINE_integer, "repeats", 2, "noise draws per video and sigma.")
    define_flag(
        flags.DEFINE_integer, "sample_steps", 0,
        "also sample level 0 for the real videos' labels with this many Heun steps and print the "
        "samples' median travel and size ratio (0: skip).",
    )
    define_flag(
        flags.DEFINE_list, "sample_from_sigmas", [],
        "with --sample_steps: also sample from the real videos noised to these sigmas (SDEdit-style) "
        "and print how much of their travel the samples keep.",
    )


def _denoising_flags() -> None:
    _model_flag()
    define_flag(flags.DEFINE_integer, "num_videos", 16, "synthetic videos to measure on.")
    define_flag(flags.DEFINE_integer, "first_index", 1000, "first synthetic video index.")
    define_flag(flags.DEFINE_list, "sigmas", ["0.01", "0.05", "0.2", "1.0"], "data-space noise levels.")
    define_flag(flags.DEFINE_integer, "seed", 0, "seed of the patch offsets and the noise.")


def _ablation_flags() -> None:
    define_flag(flags.DEFINE_multi_string, "gin_file", ["gin/quickstart.gin"], "gin files of the model and its videos.")
    define_flag(flags.DEFINE_multi_string, "gin_param", [], "gin bindings, e.g. \"HPDM.token_mixing=None\".")
    define_flag(
        flags.DEFINE_string, "init_from", None,
        "weights to start from (export dir, workdir or safetensors); tensors the model has and the "
        "file lacks keep their initialisation.",
    )
    define_flag(flags.DEFINE_integer, "steps", 1000, "optimiser steps.")
    define_flag(flags.DEFINE_integer, "batch_size", 32, "videos per step.")
    define_flag(flags.DEFINE_float, "lr", 1e-3, "peak learning rate of tensors not in --init_from.")
    define_flag(flags.DEFINE_float, "pretrained_lr", 1e-4, "peak learning rate of tensors loaded from --init_from.")
    define_flag(flags.DEFINE_integer, "warmup_steps", 100, "linear warm-up steps.")
    define_flag(flags.DEFINE_integer, "train_videos", 20000, "pre-rendered training videos (synthetic indices 50,000 on).")
    define_flag(flags.DEFINE_integer, "eval_videos", 36, "held-out videos (indices 1,000 on, as the motion check).")
    define_flag(flags.DEFINE_integer, "eval_every", 500, "steps between evaluations (and after the last step).")
    define_flag(
        flags.DEFINE_integer, "sample_steps", 64,
        "also sample level 0 with this many Heun steps for the held-out labels and report the "
        "samples' median travel and size ratio (0: skip).",
    )
    define_flag(flags.DEFINE_integer, "threads", 1, "torch threads (1: two runs side by side on two cores).")
    define_flag(flags.DEFINE_integer, "seed", 0, "seed of the initialisation, batches and training noise.")
    define_flag(flags.DEFINE_string, "output", None, "also append the JSON lines here.")


def _required_model() -> str:
    """``--model``, which every command but ``level0-ablation`` needs."""
    if not FLAGS.model:
        raise app.UsageError("--model is required: a training workdir or exported model directory")
    return FLAGS.model


def _print_and_save(table: str, results: Sequence, output: str | None) -> None:
    """What ``labels`` and ``motion`` print (``table``) and, given ``output``, the dataclass ``results``
    as JSON."""
    print(table)
    if output:
        with open(output, "w") as fh:
            json.dump([asdict(r) for r in results], fh, indent=1)


def _content() -> None:
    import numpy as np

    from hpdm.diagnostics.synthetic_content import format_report, load_synthetic_model, probe_model, sampling_progress

    f = FLAGS
    autoguidance = autoguidance_from_flags(f.device)
    model, config = load_synthetic_model(_required_model(), f.gin_param, f.device)
    labels = [c for c in range(int(model.num_classes)) for _ in range(f.videos_per_class)]
    results, fake = probe_model(
        model, config, labels, seed=f.seed, guidance_scale=f.guidance_scale, batch_size=f.batch_size,
        tile_batch_size=f.tile_batch_size, first_index=f.first_index, real_levels=f.real_levels,
        autoguidance=autoguidance, progress=sampling_progress(f.batch_size),
    )
    print(format_report("real", results["real"]))
    print(format_report("samples", results["samples"]))
    if f.output:
        with open(f.output, "w") as fh:
            meta = dict(labels=labels, guidance_scale=f.guidance_scale, seed=f.seed, real_levels=f.real_levels,
                        guide_model=f.guide_model, autoguidance_scale=f.autoguidance_scale if f.guide_model else None)
            json.dump(dict(results, **meta), fh, indent=1)
        if f.save_videos:
            np.save(f.output.rsplit(".", 1)[0] + "_videos.npy", fake)


def _motion() -> None:
    from hpdm.diagnostics.label_sensitivity import level0_denoiser
    from hpdm.diagnostics.motion_retention import format_level0_samples, format_table, measure, real_level0_videos
    from hpdm.diagnostics.synthetic_content import load_synthetic_model, synthetic_source

    f = FLAGS
    if f.sample_from_sigmas and f.sample_steps <= 0:
        raise app.UsageError("--sample_from_sigmas needs --sample_steps > 0")
    autoguidance = autoguidance_from_flags(f.device)
    model, config = load_synthetic_model(_required_model(), f.gin_param, f.device)
    clean, labels = real_level0_videos(synthetic_source(config), model.pyramid, f.first_index, f.num_videos)
    denoise = level0_denoiser(model, autoguidance=autoguidance)
    results = measure(denoise, clean, labels, [float(s) for s in f.sigmas], f.repeats, f.seed)
    table = format_table(results)
    if f.sample_steps > 0:
        table += "\n" + format_level0_samples(
            denoise, clean, labels, model.schedule.sigma_range(0), f.sample_steps, f.seed,
            [float(s) for s in f.sample_from_sigmas],
        )
    _print_and_save(table, results, f.output)


def _labels() -> None:
    from hpdm.diagnostics.label_sensitivity import format_table, level0_denoiser, measure_videos
    from hpdm.diagnostics.synthetic_content import load_synthetic_model, synthetic_source

    f = FLAGS
    model, config = load_synthetic_model(_required_model(), f.gin_param, f.device)
    results = measure_videos(
        level0_denoiser(model), synthetic_source(config), model.pyramid, f.attributes, f.num_videos,
        f.first_index, [float(s) for s in f.sigmas], f.seed,
    )
    _print_and_save(format_table(results), results, f.output)


def _denoising() -> None:
    from hpdm.core import load_pretrained
    from hpdm.diagnostics.denoising import format_table, video_table
    from hpdm.diagnostics.synthetic_content import synthetic_source

    f = FLAGS
    model, config = load_pretrained(_required_model(), use_ema=True)
    sigmas = [float(s) for s in f.sigmas]
    table = video_table(model, synthetic_source(config), f.num_videos, f.first_index, sigmas, f.seed)
    print(format_table(sigmas, table))


def _pretrained_names(model, path: str) -> set[str]:
    """Load into ``model`` every tensor the weights at ``path`` share with it (the trainer's fine-tuning
    load, Sec. 5.2); the names of the parameters loaded."""
    from safetensors.torch import load_file

    from hpdm.core.checkpoints import resolve_weights
    from hpdm.trainers.checkpoint import load_matching

    loaded, _ = load_matching(model, load_file(resolve_weights(path, use_ema=True)), what=path)
    return {name.split("[")[0] for name in loaded}


def _level0_ablation() -> None:
    import torch

    from hpdm.diagnostics.level0_ablation import build_model, train_level0

    f = FLAGS
    torch.set_num_threads(f.threads)
    model, source = build_model(f.gin_file, f.gin_param, f.seed)
    pretrained = _pretrained_names(model, f.init_from) if f.init_from else set()
    out = open(f.output, "a") if f.output else None

    def emit(row: dict) -> None:
        line = json.dumps(row)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    try:
        train_level0(
            model, source, emit, pretrained=pretrained, steps=f.steps, batch_size=f.batch_size, lr=f.lr,
            pretrained_lr=f.pretrained_lr, warmup_steps=f.warmup_steps, train_videos=f.train_videos,
            eval_videos=f.eval_videos, eval_every=f.eval_every, sample_steps=f.sample_steps, seed=f.seed,
            say=lambda line: print(line, flush=True),
        )
    finally:
        if out:
            out.close()


@dataclass(frozen=True)
class Command:
    """One check of ``hpdm-diagnose``: what it does (one line), its flags and its main."""

    summary: str
    define: Callable[[], None]
    main: Callable[[], None]


COMMANDS = {
    "content": Command(
        "sample every class and read colour, shape, object count, track and size "
        "(hpdm.diagnostics.synthetic_content)", _content_flags, _content,
    ),
    "motion": Command(
        "how much of a real video's motion level 0 keeps per noise level (hpdm.diagnostics.motion_retention)",
        _motion_flags, _motion,
    ),
    "labels": Command(
        "how much of the colour and the shape level 0 takes from the label (hpdm.diagnostics.label_sensitivity)",
        _labels_flags, _labels,
    ),
    "denoising": Command(
        "per-level denoising error on real patch hierarchies (hpdm.diagnostics.denoising)",
        _denoising_flags, _denoising,
    ),
    "level0-ablation": Command(
        "train level 0 alone and follow its motion figures (hpdm.diagnostics.level0_ablation)",
        _ablation_flags, _level0_ablation,
    ),
}


def usage() -> str:
    """What ``hpdm-diagnose --help`` prints: the commands, one line each."""
    width = max(len(name) for name in COMMANDS)
    lines = [
        f"usage: {PROGRAM} COMMAND [--flag=value ...]",
        "",
        "Checks of what a model trained on the built-in synthetic videos has learnt (hpdm.diagnostics).",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()]
    lines += ["", f"{PROGRAM} COMMAND --help lists the flags of one."]
    return "\n".join(lines)


def define_flags(command: str) -> None:
    """Define the flags of ``command`` (a key of ``COMMANDS``), listed by its ``--help``."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; expected one of {', '.join(COMMANDS)}")
    before = set(FLAGS)
    COMMANDS[command].define()
    # absl's --help lists the key flags of the program's main module; under a console script that is
    # the script, not this module.
    for name in sorted(set(FLAGS) - before):
        FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])


def main(argv: Sequence[str]) -> None:
    """absl main: ``argv`` is the program and the command left after flag parsing."""
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"expected one command, got {list(argv[1:])}\n{usage()}")
    COMMANDS[argv[1]].main()


def run() -> None:
    """Console entry: the first argument picks the command, whose flags are then defined and parsed."""
    command = sys.argv[1] if len(sys.argv) > 1 else None
    if command in ("-h", "--help", "--helpshort", "--helpfull", "help"):
        print(usage())
        sys.exit(0)
    if command not in COMMANDS:
        problem = "no command given" if command is None else f"unknown command {command!r}"
        print(f"{PROGRAM}: {problem}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    define_flags(command)
    app.run(main)


if __name__ == "__main__":
    run()
