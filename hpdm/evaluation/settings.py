"""What an evaluation measures: a protocol's settings with explicit choices applied (paper Sec. 5, App. B).

An FVD is comparable with another only when both were computed the same way, so a named protocol
(``hpdm.metrics.protocols``) fixes every setting; a caller may still choose single settings, and
each one that departs from the protocol is recorded with the result. Without a protocol the
choices stand alone, completed by ``DEFAULTS``.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from hpdm.metrics.protocols import OVERRIDABLE, Protocol, apply_overrides, get_protocol

# The settings without a protocol, for every name a caller may choose (``OVERRIDABLE``).
DEFAULTS = {
    "num_fake": 0,
    "num_real": 0,
    "num_frames": 16,
    "resolution": None,
    "overlap": "hw",
    "guidance_scale": 1.0,
    "use_ema": True,
}


class SettingsError(ValueError):
    """Settings that cannot describe an evaluation: an unknown protocol or overlap, a malformed size,
    sources that contradict each other. The binary reports these as usage errors."""


@dataclasses.dataclass
class EvaluationSettings:
    """What is measured: a protocol's settings with the caller's choices applied, or the choices alone.

    Attributes:
      protocol: the named protocol, or None.
      overrides: the choices (and ``real_source`` / ``sampler_param``) that depart from the
        protocol; empty without one.
      num_fake: fake videos (FVD@N); 0 = every video of a fake folder.
      num_real: maximum real videos; 0 = all.
      num_frames: frames per video fed to the detectors: the first ones (Appendix B).
      resolution: evaluation ``(H, W)``; None takes the generated videos' size.
      overlap: last-level axes tiled with 50% overlap, in the sampler's spelling (``"hw"``).
      guidance_scale / use_ema: how fakes are sampled from a trained run.
      sampler_param: the caller's gin bindings over the run's config when sampling.
    """

    protocol: Protocol | None
    overrides: dict
    num_fake: int
    num_real: int
    num_frames: int
    resolution: tuple[int, int] | None
    overlap: str
    guidance_scale: float
    use_ema: bool
    sampler_param: tuple[str, ...]

    @property
    def sampler_bindings(self) -> tuple[str, ...]:
        """Every binding a sampled run gets: the protocol's step schedule, then ``sampler_param``."""
        return (() if self.protocol is None else self.protocol.sampler_bindings) + self.sampler_param


def normalise_overlap(axes: str | None) -> str:
    """``"thw"`` -> ``"fhw"``: the sampler's spelling of an overlap choice, axes in f, h, w order."""
    text = (axes or "").lower().replace("t", "f")
    if not set(text) <= set("fhw"):
        raise SettingsError(f"overlap {axes!r}: use a subset of 'fhw', e.g. 'hw' or 'fhw'")
    return "".join(axis for axis in "fhw" if axis in text)


def _resolution(value: Sequence[int] | None) -> tuple[int, int] | None:
    if value is None:
        return None
    size = tuple(int(v) for v in value)
    if len(size) != 2:
        raise SettingsError(f"resolution must be (H, W), got {tuple(value)}")
    return size


def _normalised_choice(name: str, value):
    if name == "resolution":
        return _resolution(value)
    return normalise_overlap(value) if name == "overlap" else value


def resolve_settings(
    protocol: str | None = None,
    chosen: Mapping[str, object] | None = None,
    *,
    sampler_param: Sequence[str] = (),
    reals_from_data_config: bool = False,
) -> EvaluationSettings:
    """The settings of ``protocol`` with the ``chosen`` ones applied (and recorded as overrides).

    Args:
      protocol: a name of ``hpdm.metrics.PROTOCOLS``, or None for ``DEFAULTS`` and the choices alone.
      chosen: the settings picked explicitly, by ``OVERRIDABLE`` name.
      sampler_param: gin bindings for sampling from a trained run, applied after the protocol's.
      reals_from_data_config: the real videos come from a data config, not the protocol's split
        (recorded as an override).
    """
    chosen = dict(chosen or {})
    unknown = sorted(set(chosen) - set(OVERRIDABLE))
    if unknown:
        raise SettingsError(f"{', '.join(unknown)}: not evaluation settings; choose among {', '.join(OVERRIDABLE)}")
    chosen = {name: _normalised_choice(name, value) for name, value in chosen.items()}
    if not protocol:
        return EvaluationSettings(None, {}, **{**DEFAULTS, **chosen}, sampler_param=tuple(sampler_param))
    try:
        named = get_protocol(protocol)
    except ValueError as err:
        raise SettingsError(str(err)) from err
    values, overrides = apply_overrides(named, chosen)
    if values["resolution"] is not None:
        values["resolution"] = tuple(values["resolution"])
    if sampler_param:
        overrides["sampler_param"] = list(sampler_param)
    if reals_from_data_config:
        overrides["real_source"] = "data config (--gin_file)"
    return EvaluationSettings(named, overrides, **values, sampler_param=tuple(sampler_param))
