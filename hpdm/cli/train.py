r"""``hpdm-train``: train an HPDM (paper Sec. 4.6; Appendix C, Table 8).

Usage::

    # The quickstart: a tiny model on built-in synthetic videos, on CPU.
    hpdm-train --gin_file=gin/quickstart.gin --workdir=runs/quickstart

    # Your own videos, 20k steps.
    hpdm-train --gin_file=gin/quickstart.gin --gin_file=gin/data/folder.gin \
        --gin_param="DATA_ROOT='/data/videos'" --gin_param="TRAIN_STEPS=20000" --workdir=runs/mine

    # Running the same command again resumes from the newest valid checkpoint in the workdir; so
    # does the workdir alone (the saved config.gin is used):
    hpdm-train --workdir=runs/mine

    # Data parallel on 8 GPUs (gin/mixins/ddp.gin or gin/mixins/fsdp.gin picks the strategy):
    torchrun --nproc_per_node=8 -m hpdm.cli.train --gin_file=gin/quickstart.gin \
        --gin_file=gin/mixins/fsdp.gin --workdir=runs/x

    # Several nodes: the same command on every node, torchrun's c10d rendezvous assigns ranks.
    torchrun --nnodes=4 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_id=hpdm-x \
        --rdzv_endpoint=NODE0_HOST:29500 -m hpdm.cli.train --gin_file=... --workdir=runs/x

Float32 matmuls and convolutions run as TF32 on CUDA (``set_matmul_precision.tf32 = False`` for
exact float32); the log's first lines state the matmul precision.

Writes ``WORKDIR/config.gin`` (operative gin config), ``WORKDIR/checkpoints/step_XXXXXXXX/`` and
TensorBoard events in ``WORKDIR``. A resumed run whose config differs from the saved one stops with
a diff, unless ``--allow_config_override`` is given. A misspelt gin binding fails at start-up.
SIGTERM / SIGINT stop training after the current step with a checkpoint and exit 143 / 130; a
workdir is locked by the run training in it; a workdir whose checkpoints are all unreadable is
refused unless ``--restart_from_scratch`` (README, "When things go wrong").
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("gin_file", [], "gin config files (repeatable), relative to the repo or absolute.")
flags.DEFINE_multi_string("gin_param", [], "gin bindings (repeatable), e.g. \"TRAIN_STEPS=1000\".")
flags.DEFINE_string("workdir", None, "run directory: checkpoints, TensorBoard events, config.gin.")
flags.DEFINE_integer("seed", 0, "seed for initialisation and every per-step random draw.")
flags.DEFINE_bool("allow_config_override", False, "resume even if the new config differs from the saved one.")
flags.DEFINE_bool(
    "restart_from_scratch", False, "train from step 0 when every checkpoint in the workdir is unreadable (set aside)."
)
flags.DEFINE_bool(
    "trust_config", False, "load a saved config.gin that imports modules from outside hpdm (it runs their code)."
)


def parse_config(gin_files, gin_params, workdir: str, trust_config: bool = False) -> None:
    """Parse the command's config, or the workdir's saved one when the command gives none (refused
    if it imports code from outside hpdm, unless ``trust_config``: see ``gin_utils.vet_config``)."""
    import gin

    from hpdm import gin_utils

    # Registers every configurable a training config may name (strict parsing needs them).
    import hpdm.trainers.distributed  # noqa: F401
    import hpdm.trainers.ema  # noqa: F401
    import hpdm.trainers.lamb  # noqa: F401
    import hpdm.trainers.loop  # noqa: F401
    import hpdm.trainers.lr_schedule  # noqa: F401
    import hpdm.trainers.text  # noqa: F401

    for module in ("hpdm.core", "hpdm.data", "hpdm.samplers"):
        try:
            __import__(module)
        except ImportError as e:  # a component still missing only matters if the config names it
            logging.warning("could not import %s: %s", module, e)

    saved = os.path.join(workdir, gin_utils.OPERATIVE_CONFIG)
    try:
        if not gin_files and not gin_params:
            if not os.path.isfile(saved):
                raise app.UsageError(f"no --gin_file given and {saved} does not exist: nothing to train")
            gin_utils.parse_saved_config(saved, trust=trust_config)
            logging.info("Using the saved config %s", saved)
        else:
            gin_utils.parse(gin_files, gin_params)
    except gin_utils.UntrustedConfigError as e:
        raise SystemExit(f"hpdm-train: {e}") from None
    except (ValueError, KeyError, NameError, SyntaxError) as e:
        # gin's message names the offending binding; keep it, drop the traceback noise.
        raise SystemExit(f"hpdm-train: invalid gin configuration: {e}") from None
    del gin


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    parse_config(FLAGS.gin_file, FLAGS.gin_param, FLAGS.workdir, FLAGS.trust_config)
    from hpdm.trainers import distributed
    from hpdm.trainers.loop import Trainer
    from hpdm.trainers.stop import TrainingStopped

    try:
        Trainer(
            workdir=FLAGS.workdir,
            seed=FLAGS.seed,
            allow_config_override=FLAGS.allow_config_override,
            restart_from_scratch=FLAGS.restart_from_scratch,
        ).run()
    except TrainingStopped as stopped:  # the checkpoint is written and the log says so
        raise SystemExit(stopped.exit_code) from None
    finally:
        distributed.shutdown()


def run() -> None:
    """Console-script entry point (``hpdm-train``)."""
    # Required only when this binary runs: other binaries (hpdm-eval) define --workdir too, and a
    # module-level requirement would break them when both modules are imported in one process.
    flags.mark_flag_as_required("workdir")
    app.run(main)


if __name__ == "__main__":
    sys.exit(run())
