"""Training as one call: parse a run's config, train, leave the process group (what ``hpdm-train``
runs; paper Sec. 4.6).

``train(workdir=..., gin_files=[...])`` trains the config the files and bindings describe; with
neither it resumes the run in ``workdir`` under the config saved there (``config.gin``). The config
applies only inside the call (``gin_utils.isolated_config``).
"""

from __future__ import annotations

import os
from typing import Sequence

from absl import logging

from hpdm import gin_utils


class MissingConfigError(FileNotFoundError):
    """Neither gin files nor bindings were given, and the workdir has no saved config (``path``) to resume."""

    def __init__(self, path: str):
        super().__init__(f"no gin file or binding given and {path} does not exist: nothing to train")
        self.path = path


class InvalidConfigError(ValueError):
    """gin could not parse the config; the message names the offending binding."""


def _register_configurables() -> None:
    """Import every module whose configurables a training config may name (strict parsing needs them)."""
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


def parse_config(workdir: str, gin_files: Sequence[str] = (), gin_params: Sequence[str] = (), trust_config: bool = False) -> None:
    """Parse the given config into gin, or the one saved in ``workdir`` when none is given.

    A saved config is refused if it imports code from outside hpdm, unless ``trust_config``
    (``gin_utils.vet_config``), and read as this version names things (``gin_utils.read_config``).
    MissingConfigError when there is nothing to parse, InvalidConfigError for what gin refuses,
    ``gin_utils.UntrustedConfigError`` as it is.
    """
    _register_configurables()
    saved = os.path.join(workdir, gin_utils.OPERATIVE_CONFIG)
    try:
        if not gin_files and not gin_params:
            if not os.path.isfile(saved):
                raise MissingConfigError(saved)
            gin_utils.parse_saved_config(saved, trust=trust_config)
            logging.info("Using the saved config %s", saved)
        else:
            gin_utils.parse(gin_files, gin_params)
    except (gin_utils.UntrustedConfigError, MissingConfigError):
        raise
    except (ValueError, KeyError, NameError, SyntaxError) as e:
        # gin's message names the offending binding; keep it, drop the traceback noise.
        raise InvalidConfigError(f"invalid gin configuration: {e}") from None


def train(
    *,
    workdir: str,
    gin_files: Sequence[str] = (),
    gin_params: Sequence[str] = (),
    seed: int = 0,
    allow_config_override: bool = False,
    restart_from_scratch: bool = False,
    trust_config: bool = False,
) -> None:
    """Train (or resume) the run in ``workdir``; see ``hpdm.trainers.loop.Trainer`` for the
    arguments it shares. Raises ``TrainingStopped`` after the checkpoint when a signal stops it."""
    from hpdm.trainers import distributed
    from hpdm.trainers.loop import Trainer

    with gin_utils.isolated_config():
        try:
            parse_config(workdir, gin_files, gin_params, trust_config)
            Trainer(
                workdir=workdir,
                seed=seed,
                allow_config_override=allow_config_override,
                restart_from_scratch=restart_from_scratch,
            ).run()
        finally:
            distributed.shutdown()
