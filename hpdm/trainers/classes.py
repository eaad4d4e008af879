"""The model's class count and the data's: taken from the data when the config leaves it open,
checked against it otherwise (class-conditional training, paper Sec. 4.6)."""

from __future__ import annotations

import gin
from absl import logging
from torch import nn


def bind_num_classes_from_data(loader) -> None:
    """Bind ``HPDM.num_classes`` to the data's class count when the config leaves it unset or None.

    A config on a folder of class subfolders then need not count them. The count is bound like any
    other binding, so it enters ``config.gin`` and ``hpdm-sample`` (or an export) rebuilds the same
    model; a resumed run whose data gained a class stops with a config diff naming the count.
    """
    from hpdm.core import HPDM  # noqa: F401  (registers HPDM with gin before the query)

    try:
        bound, unset = gin.query_parameter("HPDM.num_classes"), False
    except ValueError:  # not bound: HPDM's own default (0) would silently make the model unconditional
        bound, unset = None, True
    if bound is not None:
        return
    count = getattr(loader, "num_classes", None)
    if count is None:
        if unset:  # a loader without classes: HPDM's default stands
            return
        raise ValueError(
            f"HPDM.num_classes = None takes the class count from the data, but the loader "
            f"({type(loader).__name__}) reports none: set HPDM.num_classes"
        )
    with gin.unlock_config():  # parsing locked the config; this binding completes it
        gin.bind_parameter("HPDM.num_classes", int(count))
    logging.info("HPDM.num_classes = %d, from the data", int(count))


def check_num_classes(loader, model: nn.Module) -> None:
    """The model's classes must be the data's (labels past the model's count index its null class)."""
    data = getattr(loader, "num_classes", None)
    built = int(getattr(model, "num_classes", 0) or 0)
    if data is not None and built and int(data) != built:
        raise ValueError(
            f"the data has {data} classes but the model was built for {built}: set "
            f"HPDM.num_classes = {data}, or None to take the count from the data"
        )
