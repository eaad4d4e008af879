"""gin helpers shared by every binary: search paths, strict parsing, saved configs.

Config files live in the repository's ``gin/`` tree, which an installed wheel carries as
``hpdm/configs``. A name is resolved as given, then under that tree, so ``quickstart.gin`` and
``gin/quickstart.gin`` work from any working directory; ``include`` lines are resolved against the
including file's own directory and against the tree. Parsing is strict (``skip_unknown=False``): a misspelt binding fails at start-up
with gin's message naming it.

A config read back from a workdir or an export (``config.gin``) is data someone else may have
written, but gin runs its ``import`` lines and the imports of every file it ``include``s. Such a
config may therefore import only hpdm's own modules (and gin's torch registrations) and include
only files of the gin tree; anything else is refused naming the line, unless the user trusts the
config explicitly (``--trust_config``, ``trust_config=True``). See ``vet_config``.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import gin
from gin import config_parser



def _find_gin_root() -> str:
    # An installed wheel carries the tree as hpdm/configs; a source checkout (editable install) has
    # gin/ beside the package. The packaged copy is looked for first: beside an installed hpdm sits
    # site-packages/gin, which is gin-config itself.
    package = os.path.dirname(os.path.abspath(__file__))
    packaged = os.path.join(package, "configs")
    if os.path.isfile(os.path.join(packaged, "quickstart.gin")):
        return packaged
    return os.path.join(os.path.dirname(package), "gin")


GIN_ROOT = _find_gin_root()

OPERATIVE_CONFIG = "config.gin"


def add_search_paths(files: Iterable[str] = ()) -> None:
    """Make ``include`` work from any cwd: the repo gin tree and each file's directory."""
    paths = [GIN_ROOT, os.path.dirname(GIN_ROOT)]
    paths += [os.path.dirname(os.path.abspath(f)) for f in files]
    for path in paths:
        if os.path.isdir(path) and path not in _added:
            gin.add_config_file_search_path(path)
            _added.add(path)


_added: set[str] = set()


class _QuietPackageLookup(logging.Filter):
    """gin probes each include as a Python package path first and logs a false "Path not found"
    ERROR before finding the file on the search path; drop exactly that record."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.module == "resource_reader" and record.msg == "Path not found: %s")


logging.getLogger().addFilter(_QuietPackageLookup())


def resolve_config_file(path: str) -> str:
    """Find ``path`` as given, else in the config tree: ``quickstart.gin`` and ``gin/quickstart.gin``
    name the same shipped file from any directory."""
    candidates = [path, os.path.join(GIN_ROOT, path)]
    if path.startswith("gin" + os.sep) or path.startswith("gin/"):
        candidates.append(os.path.join(GIN_ROOT, path[4:]))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"gin file {path!r} not found (looked here and under {GIN_ROOT})")


def parse(files: Sequence[str] = (), bindings: Sequence[str] = (), skip_unknown: bool = False) -> None:
    """Parse gin files and bindings strictly; unknown configurables raise naming the binding."""
    files = [resolve_config_file(f) for f in files]
    add_search_paths(files)
    gin.parse_config_files_and_bindings(list(files), list(bindings), skip_unknown=skip_unknown)


def parse_text(
    text: str, skip_unknown: bool = False, source: str = "config text", trust: Optional[bool] = None
) -> None:
    """Parse a saved config text, vetted first (``vet_config``); ``source`` names it in errors."""
    text = vet_config(text, source, trust)
    add_search_paths()
    gin.parse_config(text, skip_unknown=skip_unknown)


def parse_saved_config(path: str, skip_unknown: bool = False, trust: Optional[bool] = None) -> None:
    """Parse the ``config.gin`` of a workdir or export at ``path``, refusing foreign code (``vet_config``)."""
    parse_text(read_config(path), skip_unknown=skip_unknown, source=path, trust=trust)


def check_saved_config(path: str, trust: Optional[bool] = None) -> None:
    """Refuse, before any work, a saved ``config.gin`` that ``parse_saved_config`` would refuse."""
    vet_config(read_config(path), path, trust)


def read_config(path: str) -> str:
    """The text of a saved config file (UTF-8, as the trainer writes it), with the names of
    configurables and modules that were renamed since brought up to date (``upgrade_config_text``)."""
    with open(path, encoding="utf-8") as f:
        return upgrade_config_text(f.read())


# Names a saved config may still use, and what they are called now. A run's config.gin records the
# names of the version that wrote it; these keep such runs loadable and resumable.
RENAMED = (
    (re.compile(r"\bLevelSchedule\b"), "SamplingSteps"),
    (re.compile(r"\bhpdm\.trainers\.schedule\b"), "hpdm.trainers.lr_schedule"),
)


# Bindings a saved config may still hold of parameters that no longer exist: the trainer's old
# fault-injection arguments, which only tests set (they now live in the tests).
REMOVED = re.compile(r"^Trainer\.(inject_nan_at_steps|step_delay|inject_signal)\s*=.*\n?", re.MULTILINE)


def upgrade_config_text(text: str) -> str:
    """``text`` with every renamed configurable or module (``RENAMED``) under its current name and
    the bindings of removed parameters (``REMOVED``) left out."""
    for pattern, new in RENAMED:
        text = pattern.sub(new, text)
    return REMOVED.sub("", text)


# --------------------------------------------------------------------------- isolated gin state

@contextlib.contextmanager
def isolated_config() -> Iterator[None]:
    """Run a block against an empty gin config of its own; the caller's config is restored after.

    gin keeps one process-wide config. Loading a saved run must build its model from that run's
    bindings without replacing, or leaking into, what the caller has parsed.
    """
    from gin import config as gin_config

    saved = (
        {k: dict(v) for k, v in gin_config._CONFIG.items()},
        dict(gin_config._SINGLETONS),
        type(gin_config._IMPORTS)(gin_config._IMPORTS),
        dict(gin_config._OPERATIVE_CONFIG),
        gin_config.config_is_locked(),
    )
    gin.clear_config()
    try:
        yield
    finally:
        config, singletons, imports, operative, locked = saved
        gin.clear_config()
        gin_config._CONFIG.update(config)
        gin_config._SINGLETONS.update(singletons)
        gin_config._IMPORTS.update(imports)
        gin_config._OPERATIVE_CONFIG.update(operative)
        gin_config._set_config_is_locked(locked)


@dataclass(frozen=True)
class SavedConfig:
    """The gin config of a training run or export, held as text and applied only inside ``active``.

    ``text`` is the vetted config (``vet_config``) with renamed names brought up to date; ``source``
    names the file it came from.
    """

    text: str
    source: str

    @classmethod
    def read(cls, path: str, trust: Optional[bool] = None) -> "SavedConfig":
        """Read and vet ``path``; refuses foreign imports unless trusted (``vet_config``)."""
        return cls(text=vet_config(read_config(path), path, trust), source=path)

    @contextlib.contextmanager
    def active(self, bindings: Sequence[str] = ()) -> Iterator[None]:
        """Within the block, gin holds this config (plus ``bindings``) and nothing else."""
        with isolated_config():
            add_search_paths()
            # Bindings of configurables this process has not imported (trainer, data) are skipped:
            # they were validated when the run started.
            gin.parse_config(self.text, skip_unknown=True)
            if bindings:
                gin.parse_config(list(bindings), skip_unknown=True)
            yield

    def call(self, fn: Callable[..., Any], *args, bindings: Sequence[str] = (), **kwargs) -> Any:
        """``fn(*args, **kwargs)`` with this config's bindings applied to every configurable it builds."""
        with self.active(bindings):
            return fn(*args, **kwargs)

    def query(self, name: str, default: Any = None) -> Any:
        """The value bound to ``name`` (``"Configurable.param"`` or a macro), else ``default``."""
        with self.active():
            try:
                return gin.query_parameter(name)
            except ValueError:
                return default


# --------------------------------------------------------------------------- saved configs

# What a saved config may import: hpdm itself, and gin's registrations of torch classes. Any other
# module would be code that came with the config rather than with the installed hpdm.
TRUSTED_IMPORTS = ("hpdm", "gin.torch")

_TRUST_HINT = (
    "A saved config is loaded as code (gin runs its imports): from a workdir or an export only hpdm "
    "modules may be imported and only files of the gin tree included. If you trust where this config "
    "came from, pass --trust_config (trust_config=True to hpdm.core.load_pretrained / export_model)."
)


class UntrustedConfigError(ValueError):
    """A saved config would run code from outside hpdm, and the user did not say to trust it."""


_trust_default = False


def set_config_trust(trust: bool) -> None:
    """Whether saved configs loaded without an explicit ``trust`` argument are trusted.

    Binaries set it from ``--trust_config``, so that loads they do not make directly (the
    autoguidance model, the evaluator's sampler) follow the user's flag too.
    """
    global _trust_default
    _trust_default = bool(trust)


def config_trusted(trust: Optional[bool] = None) -> bool:
    """``trust`` when given, else the process-wide answer of ``set_config_trust`` (False by default)."""
    return _trust_default if trust is None else bool(trust)


class _InertDelegate(config_parser.ParserDelegate):
    """Keeps references and macros as text: vetting must resolve (and so import) nothing."""

    def configurable_reference(self, scoped_configurable_name, evaluate):
        return scoped_configurable_name

    def macro(self, macro_name):
        return macro_name


def _statements(text: str, source: str) -> list:
    """gin's own parse of ``text`` into statements (the same reading ``gin.parse_config`` makes)."""
    try:
        return list(config_parser.ConfigParser(text, _InertDelegate()))
    except SyntaxError as err:
        raise SyntaxError(f"{source}:{err.lineno}: {err.msg}") from None


def _is_trusted_module(module: str) -> bool:
    return any(module == root or module.startswith(root + ".") for root in TRUSTED_IMPORTS)


def _import_problem(statement) -> Optional[str]:
    if statement.is_from and statement.module.startswith("__gin__."):
        # Dynamic registration makes any attribute of an imported module callable from a binding
        # (hpdm modules import os), so even hpdm-only imports would reach arbitrary code.
        return "enables gin's dynamic registration, which lets bindings call any function"
    if not _is_trusted_module(statement.module):
        return f"imports {statement.module!r}, a module outside hpdm"
    return None


def _gin_tree_file(filename: str) -> Optional[str]:
    """The real path of ``filename`` (as ``include`` names it: in the tree, or from the repository
    root as ``gin/...``) when it is a file of the gin tree; None when it is elsewhere or absent."""
    root = os.path.realpath(GIN_ROOT)
    for base in (root, os.path.dirname(root)):
        path = os.path.realpath(os.path.join(base, filename))  # an absolute filename stays itself
        if os.path.commonpath([root, path]) == root and os.path.isfile(path):
            return path
    return None


_INCLUDE_LINE = re.compile(r"""^(\s*)include\s+('[^'\n]*'|"[^"\n]*")\s*(#.*)?$""")


def _pinned_include(line: str, filename: str, path: str) -> Optional[str]:
    """``line`` rewritten to include ``path`` by its absolute name, so that gin reads the very file
    vetted here and not one its search path (which starts at the working directory) finds first."""
    match = _INCLUDE_LINE.match(line.rstrip("\r"))
    try:
        same = match is not None and ast.literal_eval(match.group(2)) == filename
    except (ValueError, SyntaxError):
        same = False
    return f"{match.group(1)}include {path!r}" if same else None


def vet_config(text: str, source: str, trust: Optional[bool] = None) -> str:
    """The text of a saved config that gin may parse, or ``UntrustedConfigError`` naming each line
    that would run foreign code (an import outside ``TRUSTED_IMPORTS``, an include outside the gin
    tree, gin's dynamic registration).

    Trusted (``trust`` or ``set_config_trust``), such lines are logged and the text is returned as
    written. Otherwise includes of the gin tree are pinned to that tree's files.
    """
    lines = text.split("\n")  # gin's tokenizer numbers lines by "\n" alone
    problems = []
    for statement in _statements(text, source):
        where = f"{source}:{statement.location.line_num}: {statement.location.line_content.strip()!r}"
        if isinstance(statement, config_parser.ImportStatement):
            why = _import_problem(statement)
            if why:
                problems.append(f"{where} {why}")
        elif isinstance(statement, config_parser.IncludeStatement):
            path = _gin_tree_file(statement.filename)
            line = lines[statement.location.line_num - 1]
            pinned = path and _pinned_include(line, statement.filename, path)
            if not path:
                problems.append(f"{where} includes a file outside the gin tree {GIN_ROOT}")
            elif not pinned:
                problems.append(f"{where} is not a one-line include of a quoted name; write it as include 'file.gin'")
            else:
                lines[statement.location.line_num - 1] = pinned
    if not problems:
        return "\n".join(lines)
    if config_trusted(trust):
        listed = "\n  ".join(problems)
        logging.warning("Trusting %s (--trust_config) although it runs code from outside hpdm:\n  %s", source, listed)
        return text
    listed = "\n  ".join(problems)
    raise UntrustedConfigError(f"refusing to load a config that would run foreign code:\n  {listed}\n{_TRUST_HINT}")
