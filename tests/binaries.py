"""Run a binary's ``main`` in the test process as if it ran alone.

absl keeps one flag registry per process, and the binaries share names with other defaults
(``--batch_size``, ``--overlap``, ``--num_videos``). ``own_registry`` points ``absl.flags.FLAGS`` and
every loaded ``hpdm.cli`` module's ``FLAGS`` to a new, empty registry for the length of a block;
``binary_flags`` fills it with one binary's flags (defined twice: a second in-process run must be
harmless) and parses ``argv`` into it.
"""

import contextlib
import sys

from absl import flags


@contextlib.contextmanager
def own_registry():
    registry = flags.FlagValues()
    modules = [m for name, m in list(sys.modules.items()) if name.startswith("hpdm.cli.") and hasattr(m, "FLAGS")]
    saved = [(flags, flags.FLAGS)] + [(m, m.FLAGS) for m in modules]
    for module, _ in saved:
        module.FLAGS = registry
    try:
        yield registry
    finally:
        for module, previous in saved:
            module.FLAGS = previous


@contextlib.contextmanager
def binary_flags(define_flags, argv, *define_args):
    with own_registry() as registry:
        define_flags(*define_args)
        define_flags(*define_args)
        registry(list(argv))
        yield registry
