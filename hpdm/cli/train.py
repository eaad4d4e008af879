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

Writes ``WORKDIR/config.gin`` (every gin binding of the run), ``WORKDIR/checkpoints/step_XXXXXXXX/``
and TensorBoard events in ``WORKDIR``. A resumed run whose config differs from the saved one stops
with the differences, unless ``--allow_config_override`` is given. A misspelt gin binding fails at
start-up. SIGTERM / SIGINT stop training after the current step with a checkpoint and exit 143 / 130;
a workdir is locked by the run training in it; a workdir whose checkpoints are all unreadable is
refused unless ``--restart_from_scratch`` (README, "When things go wrong"). The work itself is
``hpdm.trainers.train``.
"""

from __future__ import annotations

import sys

from absl import app, flags

from hpdm.cli.common import define_flag, run_binary

FLAGS = flags.FLAGS


def define_flags() -> None:
    """hpdm-train's flags; may be called more than once in a process (tests run several binaries)."""
    define_flag(flags.DEFINE_multi_string, "gin_file", [], "gin config files (repeatable): a path, or a name in the shipped config tree "
                "(quickstart.gin and gin/quickstart.gin name the same file from any directory).")
    define_flag(flags.DEFINE_multi_string, "gin_param", [], "gin bindings (repeatable), e.g. \"TRAIN_STEPS=1000\".")
    define_flag(flags.DEFINE_string, "workdir", None, "run directory: checkpoints, TensorBoard events, config.gin.")
    define_flag(flags.DEFINE_integer, "seed", 0, "seed for initialisation and every per-step random draw.")
    define_flag(flags.DEFINE_bool, "allow_config_override", False, "resume even if the new config differs from the saved one.")
    define_flag(
        flags.DEFINE_bool,
        "restart_from_scratch",
        False,
        "train from step 0 when every checkpoint in the workdir is unreadable (set aside).",
    )
    define_flag(
        flags.DEFINE_bool,
        "trust_config",
        False,
        "load a saved config.gin that imports modules from outside hpdm (it runs their code).",
    )


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from hpdm import gin_utils
    from hpdm.trainers import command
    from hpdm.trainers.stop import TrainingStopped

    try:
        command.train(
            workdir=FLAGS.workdir,
            gin_files=FLAGS.gin_file,
            gin_params=FLAGS.gin_param,
            seed=FLAGS.seed,
            allow_config_override=FLAGS.allow_config_override,
            restart_from_scratch=FLAGS.restart_from_scratch,
            trust_config=FLAGS.trust_config,
        )
    except command.MissingConfigError as e:
        raise app.UsageError(f"no --gin_file given and {e.path} does not exist: nothing to train") from None
    except (gin_utils.UntrustedConfigError, command.InvalidConfigError) as e:
        raise SystemExit(f"hpdm-train: {e}") from None
    except TrainingStopped as stopped:  # the checkpoint is written and the log says so
        raise SystemExit(stopped.exit_code) from None


def run() -> None:
    """Console-script entry point (``hpdm-train``)."""
    define_flags()
    # Required only when this binary runs: other binaries (hpdm-eval) define --workdir too, and a
    # module-level requirement would break them when both modules are imported in one process.
    flags.mark_flag_as_required("workdir")
    run_binary(main, __name__)


if __name__ == "__main__":
    sys.exit(run())
