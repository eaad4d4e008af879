"""Per-sample randomness derived only from ``(seed, epoch, index)``.

Exact resume (and identical output with any number of workers) needs every random draw of a
sample to depend on nothing but who the sample is, never on which worker made it or how many
samples came before; so each sample gets its own ``torch.Generator`` seeded from a hash.
"""

from __future__ import annotations

import hashlib
import struct

import torch


def derive_seed(*parts: int) -> int:
    """A 63-bit seed hashed from integers (blake2b, so nearby tuples give unrelated seeds)."""
    digest = hashlib.blake2b(struct.pack(f"<{len(parts)}q", *[int(p) for p in parts]), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded from ``derive_seed(*parts)``."""
    return torch.Generator().manual_seed(derive_seed(*parts))


def randint(gen: torch.Generator, high: int) -> int:
    """Uniform integer in ``[0, high)`` (``high >= 1``)."""
    return int(torch.randint(0, high, (1,), generator=gen))


def uniform(gen: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen))
