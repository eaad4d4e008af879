"""Parameter accounting of an ``HPDM``, per component (compare with the paper, Table 8).

The paper, Table 8, lists 178M / 321M / 725M parameters for HPDM-S / M / L and 3,934M for HPDM-T2V
and T2V-1K. ``docs/parameter_counts.md`` compares those numbers with this implementation's, built
from the shipped configs, and explains the gap.

``parameter_table(model)`` splits a built model's parameters into components, each counted once:

* ``tokenizer`` (its projection, norm, position tables and optional local mixing), ``detokenizer``,
  ``context_tokenizer`` (shallow fusion only);
* ``latents`` (the learned latents of every level);
* ``conditioning.noise`` / ``conditioning.class`` / ``conditioning.text`` (0 where absent);
* per block ``b``: ``block{b}.read``, ``block{b}.latent_layers``, ``block{b}.write``,
  ``block{b}.fuser`` (0 where the block fuses no level) and ``block{b}.mixer`` (block mixing only);
* ``fuser.shallow`` (shallow fusion's single fuser);
* any other top-level module under its own name, so that the parts always add up;
* ``total``.

``count_config(files)`` builds a config's model on the meta device (no memory, no init cost) and
returns its table. From the command line, with gin files as arguments::

    python -m hpdm.core.accounting gin/experiments/hpdm_s.gin gin/experiments/hpdm_l.gin
"""

from __future__ import annotations

import sys
from typing import Sequence

import torch
import torch.nn as nn

from hpdm import gin_utils
from hpdm.core.model import HPDM

# Macros the data configs need that play no part in the model.
UNUSED_MACROS = (
    "DATA_ROOT = 'unused'",
    "CAPTIONS = 'unused'",
    "IMAGE_ROOT = 'unused'",
    "IMAGE_CAPTIONS = 'unused'",
)

_TOP_LEVEL = {
    "tokenizer": "tokenizer",
    "detokenizer": "detokenizer",
    "context_tokenizer": "context_tokenizer",
    "latents": "latents",
    "noise_embed": "conditioning.noise",
    "class_embed": "conditioning.class",
    "text_embed": "conditioning.text",
}
_BLOCK_PARTS = ("read", "latent_layers", "write")


def _component(name: str, deep_fusion: bool) -> str:
    parts = name.split(".")
    head = parts[0]
    if head in _TOP_LEVEL:
        return _TOP_LEVEL[head]
    if head == "blocks" and len(parts) > 2 and parts[2] in _BLOCK_PARTS:
        return f"block{parts[1]}.{parts[2]}"
    if head == "block_mixers":
        return f"block{parts[1]}.mixer"
    if head == "fusers":
        return f"block{parts[1]}.fuser" if deep_fusion else "fuser.shallow"
    return head


def parameter_table(model: nn.Module) -> dict[str, int]:
    """Parameter count of each component of a built ``HPDM`` (see the module docstring), plus ``total``."""
    blocks = len(model.blocks)
    table: dict[str, int] = {"tokenizer": 0, "detokenizer": 0, "latents": 0}
    table.update({"conditioning.noise": 0, "conditioning.class": 0, "conditioning.text": 0})
    for b in range(blocks):
        for part in (*_BLOCK_PARTS, "fuser"):
            table[f"block{b}.{part}"] = 0
    deep = getattr(model, "fusion", "deep") == "deep"
    for name, param in model.named_parameters():
        key = _component(name, deep)
        table[key] = table.get(key, 0) + param.numel()
    total = sum(p.numel() for p in model.parameters())
    if sum(table.values()) != total:
        raise AssertionError(f"components add up to {sum(table.values())}, the model has {total} parameters")
    table["total"] = total
    return table


def count_config(gin_files: Sequence[str], bindings: Sequence[str] = ()) -> dict[str, int]:
    """Parse ``gin_files`` (plus ``bindings``), build ``HPDM`` on the meta device, return ``parameter_table``.

    The files are parsed into a gin config of their own (``gin_utils.isolated_config``): the
    caller's config is neither read nor changed.
    """
    with gin_utils.isolated_config():
        gin_utils.parse(list(gin_files), [*UNUSED_MACROS, *bindings])
        with torch.device("meta"):
            model = HPDM()
        return parameter_table(model)


def format_tables(tables: dict[str, dict[str, int]]) -> str:
    """Components as rows, one column per config, in millions of parameters (``total`` exact too)."""
    names = list(tables)
    rows: list[str] = []
    for table in tables.values():
        rows += [k for k in table if k not in rows and k != "total"]
    width = max(len(r) for r in [*rows, "total"])
    cols = [max(12, len(n)) for n in names]
    lines = [" " * width + "".join(f"  {n:>{c}}" for n, c in zip(names, cols))]
    for row in [*rows, "total"]:
        cells = (f"{tables[n].get(row, 0) / 1e6:.3f}M" for n in names)
        lines.append(f"{row:<{width}}" + "".join(f"  {v:>{c}}" for v, c in zip(cells, cols)))
    lines.append(f"{'total (exact)':<{width}}" + "".join(f"  {tables[n]['total']:>{c},}" for n, c in zip(names, cols)))
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    if not argv:
        print("usage: python -m hpdm.core.accounting GIN_FILE [GIN_FILE ...]")
        sys.exit(2)
    tables = {}
    for path in argv:
        name = path.rsplit("/", 1)[-1].removesuffix(".gin")
        tables[name] = count_config([path])
    print(format_tables(tables))


if __name__ == "__main__":
    main(sys.argv[1:])
