"""The run's ``config.gin``: what a run writes, and how a resume compares it with its own config
(docs/design.md, "Configs").

A run writes every binding of its gin config (``gin.config_str()``, under ``FULL_CONFIG_HEADER``),
whether or not the part it configures was called before the file was written: the sampler settings
``hpdm-sample`` reads back are there even when no preview ran.

A resume compares settings, not text. Each binding means a value for one parameter; a parameter one
config does not bind takes its default (that of the installed code). So two configs are the same run
when every parameter either binds gets the same value from both. Earlier versions wrote gin's
*operative* config instead (``config.gin`` without the header): every parameter of the parts that
had been called, defaults included, and nothing of the parts that had not. Against such a config a
binding of a part it has no section for is an *addition* (a setting it never recorded, which the
resumed run records from then on), not a difference. A saved binding of a parameter the code no
longer has is *retired*: nothing can honour it, so it is reported and left out of the comparison
(``gin_utils.read_config`` already leaves out those it knows, so that such a config still parses).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import gin
from absl import logging
from gin import config_parser

FULL_CONFIG_HEADER = "# Every gin binding of this run (gin.config_str()): the parts it called and those it did not."

_MACRO = "gin.macro"
_MAX_MACRO_DEPTH = 32


class ConfigConflictError(RuntimeError):
    """A resumed run was started with a configuration that differs from the saved one."""


def config_text() -> str:
    """What ``config.gin`` holds for the current gin state: the header, then every binding."""
    return f"{FULL_CONFIG_HEADER}\n{gin.config_str()}"


def is_full_config(text: str) -> bool:
    """Whether ``text`` was written by ``config_text`` (else it is an earlier operative config)."""
    return text.startswith(FULL_CONFIG_HEADER)


# ---------------------------------------------------------------------------- reading bindings


@dataclass(frozen=True)
class _Reference:
    """``@name`` or ``@name()`` as written: comparing configs must build and import nothing."""

    name: str
    evaluate: bool

    def __repr__(self) -> str:
        return f"@{self.name}{'()' if self.evaluate else ''}"


@dataclass(frozen=True)
class _Macro:
    name: str

    def __repr__(self) -> str:
        return f"%{self.name}"


class _Inert(config_parser.ParserDelegate):
    def configurable_reference(self, scoped_configurable_name, evaluate):
        return _Reference(scoped_configurable_name, bool(evaluate))

    def macro(self, macro_name):
        return _Macro(macro_name)


@dataclass(frozen=True)
class _Key:
    """One parameter of one configurable in one scope; for a macro, selector is ``gin.macro``."""

    scope: str
    selector: str
    param: str

    def __str__(self) -> str:
        name = self.param if self.selector == _MACRO else f"{self.selector}.{self.param}"
        return f"{self.scope}/{name}" if self.scope else name


def _bindings(text: str) -> dict[_Key, Any]:
    bindings = {}
    for statement in config_parser.ConfigParser(text, _Inert()):
        if isinstance(statement, config_parser.BindingStatement):
            if statement.arg_name:
                key = _Key(statement.scope or "", statement.selector, statement.arg_name)
            else:
                key = _Key(statement.scope or "", _MACRO, statement.selector)
            bindings[key] = statement.value
    return bindings


_NO_DEFAULT = object()
_UNKNOWN = object()


def _default(key: _Key) -> Any:
    """The installed code's default for ``key``; ``_UNKNOWN`` when the code has no such parameter,
    ``_NO_DEFAULT`` when it has no default (or the key is a macro)."""
    if key.selector == _MACRO:
        return _NO_DEFAULT
    try:
        fn = gin.get_configurable(key.selector)
        params = inspect.signature(fn).parameters
    except (ValueError, TypeError):
        return _UNKNOWN
    param = params.get(key.param)
    if param is None:
        return _UNKNOWN
    if param.default is inspect.Parameter.empty or param.default is gin.REQUIRED:
        return _NO_DEFAULT
    return param.default


def _resolve(value: Any, bindings: dict[_Key, Any]) -> Any:
    """``value`` with a macro replaced by what it stands for in ``bindings`` (itself if unbound)."""
    for _ in range(_MAX_MACRO_DEPTH):
        if not isinstance(value, _Macro):
            return value
        key = _Key("", _MACRO, value.name)
        if key not in bindings:
            return value
        value = bindings[key]
    return value


def _is_default(value: Any, default: Any) -> bool:
    if default is _NO_DEFAULT or default is _UNKNOWN or isinstance(value, _Macro):
        return False
    if isinstance(value, _Reference):
        if value.evaluate:
            return False
        try:
            return gin.get_configurable(value.name) is default
        except ValueError:
            return False
    try:
        return bool(type(value) is type(default) and value == default)
    except Exception:  # noqa: BLE001 - values that cannot be compared are not the default
        return False


# ---------------------------------------------------------------------------- comparing


@dataclass
class ConfigDiff:
    """How a current config differs from a saved one (``compare``).

    ``changed``: diff lines (``-`` saved, ``+`` current) of parameters that get another value now;
    ``added``: current bindings an earlier operative config had no section for; ``retired``: saved
    bindings of parameters the installed code no longer has.
    """

    changed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)

    @property
    def same_run(self) -> bool:
        return not self.changed


def compare(saved: str, current: str) -> ConfigDiff:
    """Compare the bindings of ``saved`` (a ``config.gin``) with those of ``current``.

    The configurables named must be registered (imported) for defaults to be known; a parameter the
    code does not know is reported as retired when saved and cannot occur in a config that parsed.
    """
    old, new = _bindings(saved), _bindings(current)
    operative = not is_full_config(saved)
    recorded = {(k.scope, k.selector) for k in old}
    diff = ConfigDiff()
    for key in sorted(set(old) | set(new), key=str):
        if key in old and key in new:
            if old[key] != new[key]:
                diff.changed += [f"-{key} = {old[key]!r}", f"+{key} = {new[key]!r}"]
            continue
        default = _default(key)
        if key in old:
            if default is _UNKNOWN:
                diff.retired.append(f"{key} = {old[key]!r}")
            elif not _is_default(_resolve(old[key], old), default):
                diff.changed.append(f"-{key} = {old[key]!r}")
            continue
        if _is_default(_resolve(new[key], new), default):
            continue
        if operative and (key.scope, key.selector) not in recorded:
            diff.added.append(f"{key} = {new[key]!r}")
        else:
            diff.changed.append(f"+{key} = {new[key]!r}")
    return diff


def check_resume(path: str, saved: str, current: str, allow_override: bool) -> bool:
    """Decide whether a run may resume under ``current`` with ``saved`` in its workdir (``path``).

    Returns True when the configs differ and ``allow_override`` lets the current one replace the
    saved one, False when they are the same run (additions and retired bindings are logged);
    ``ConfigConflictError`` with the differences when they differ otherwise.
    """
    diff = compare(saved, current)
    if diff.retired:
        logging.info("Bindings of %s that this version no longer has (left out): %s", path, "; ".join(diff.retired))
    if diff.added:
        logging.info("Adding to %s what this version records and the run's config predates: %s", path, "; ".join(diff.added))
    if diff.same_run:
        return False
    listing = "\n".join(diff.changed)
    if not allow_override:
        raise ConfigConflictError(
            f"the configuration differs from the one saved in {path}:\n{listing}\n"
            "Run without --gin_file/--gin_param to resume with the saved config, or pass "
            "--allow_config_override to replace it."
        )
    logging.warning("Overriding the saved config (--allow_config_override):\n%s", listing)
    return True

