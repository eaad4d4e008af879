"""What the binaries share: flags defined once per process, and the autoguidance flags.

Each binary defines its flags in ``define_flags()``, called from its ``run()``, never at import:
absl keeps one registry per process, and tests run several binaries' ``main`` in one. A name two
binaries use (``--workdir``, ``--seed``) is then one flag, which is right only when both define it
alike: ``define_flag`` skips a flag defined before with the same type and default, and refuses one
that differs, rather than let a binary run with another binary's default.

The autoguidance flags (Karras et al. 2024, "Guiding a diffusion model with a bad version of
itself"; ``hpdm.samplers.Autoguidance``) are those of every binary that samples.
"""

from __future__ import annotations

import math
import sys
from typing import Callable, Optional

from absl import app, flags

from hpdm import host_memory
from hpdm.samplers import Autoguidance, load_autoguidance_model

# Flags defined through define_flag belong to the binary calling it (its --help lists them), not
# to this module.
flags.disclaim_key_flags()


def _kind(flag) -> tuple:
    return flag.flag_type(), type(flag.parser), flag.default


def define_flag(define: Callable, name: str, default, help: str, **kwargs) -> None:
    """``define(name, default, help, **kwargs)``, an ``absl.flags.DEFINE_*``, unless that flag exists.

    A flag of the same name, type and default defined before (by this binary's earlier call or by
    another binary) is kept; one that differs raises ``ValueError`` naming both.
    """
    registry = flags.FLAGS  # looked up at call time, so a test may give a binary a registry of its own
    if name not in registry:
        define(name, default, help, flag_values=registry, **kwargs)
        return
    wanted = flags.FlagValues()
    define(name, default, help, flag_values=wanted, **kwargs)
    if _kind(wanted[name]) != _kind(registry[name]):
        have, want = registry[name], wanted[name]
        owner = registry.find_module_defining_flag(name) or "another module"
        raise ValueError(
            f"--{name} is defined twice in one process, differently: {owner} defined it as {have.flag_type()} "
            f"(default {have.default!r}), this binary as {want.flag_type()} (default {want.default!r}); one of "
            "them would run with the other's default"
        )


def run_binary(main: Callable, module_name: str) -> None:
    """``app.run(main)`` for the binary ``module_name``, whose ``--help`` shows that module's
    docstring and flags however it was started.

    absl's ``--help`` prints the docstring of ``__main__`` and the flags of the module named like
    ``sys.argv[0]``: right for ``python -m hpdm.cli.train``, empty for the ``hpdm-train`` console
    script, whose ``__main__`` is a generated wrapper. It first lets the process keep freed host
    memory for reuse (``hpdm.host_memory``): the binaries train and sample on CPU too.
    """
    host_memory.keep_freed_memory()
    module = sys.modules[module_name]
    entry = sys.modules["__main__"]
    if entry is not module:
        if not entry.__doc__:
            entry.__doc__ = module.__doc__
        for flag in flags.FLAGS.get_key_flags_for_module(module_name):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main)


def define_autoguidance_flags() -> None:
    """The flags that turn autoguidance on (``--guide_model``) and shape it."""
    own = dict(module_name=__name__)  # listed under this module, as flags every sampling binary shares
    define_flag(flags.DEFINE_string, "guide_model", None, "autoguidance: the weak model (training workdir or "
                "export) to extrapolate away from; none by default.", **own)
    define_flag(flags.DEFINE_float, "autoguidance_scale", 2.0,
                "with --guide_model: x0 = x0_weak + scale * (x0 - x0_weak).", **own)
    define_flag(flags.DEFINE_list, "autoguidance_levels", ["0"],
                "with --guide_model: the pyramid levels it applies to.", **own)
    define_flag(flags.DEFINE_list, "autoguidance_sigmas", [], "with --guide_model: 'lo,hi', the sigma interval "
                "it applies in (default: every step).", **own)


def autoguidance_from_flags(device=None) -> Optional[Autoguidance]:
    """``Autoguidance`` from ``define_autoguidance_flags``'s flags, with the weak model named by
    ``--guide_model`` (EMA weights) loaded on ``device``; None without ``--guide_model``."""
    f = flags.FLAGS
    if not f.guide_model:
        return None
    sigmas = [float(s) for s in f.autoguidance_sigmas]
    if sigmas and len(sigmas) != 2:
        raise ValueError(f"--autoguidance_sigmas takes 'lo,hi', got {f.autoguidance_sigmas}")
    lo, hi = sigmas if sigmas else (0.0, math.inf)
    levels = [int(level) for level in f.autoguidance_levels]
    return load_autoguidance_model(
        f.guide_model, scale=f.autoguidance_scale, levels=levels, sigma_min=lo, sigma_max=hi, device=device
    )
