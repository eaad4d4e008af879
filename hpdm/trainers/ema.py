"""Exponential moving average of the weights, correct under DDP and FSDP2 (paper Appendix B).

The paper's own FSDP text-to-video run had EMA parameters that never updated, which produced
Gaussian jitter in its samples (Appendix B, Tab. 6 footnote). The usual culprits are an EMA copy
made of the *wrapped* module (a deep copy of sharded/flattened parameters that no longer alias what
the optimiser updates) or an EMA that only walks ``parameters()`` of the root. Here the EMA is a
list of shadow tensors, one per entry of the *plain* module's ``state_dict`` order, each a copy of
the tensor this rank actually owns (the local shard of an FSDP2 DTensor, the whole tensor for DDP or
a single process). The update is torch's own EMA kernel from ``torch.optim.swa_utils``
(``get_ema_multi_avg_fn``: one fused ``lerp_`` over all tensors); buffers are copied.
``state_dict()`` gathers the full tensors (a collective under FSDP: call it on every rank) and
names them like the plain module, so ``ema.safetensors`` is the same in every parallel mode.
"""

from __future__ import annotations

import gin
import torch
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn


def _local(t: torch.Tensor) -> torch.Tensor:
    to_local = getattr(t, "to_local", None)
    return to_local() if to_local is not None else t


def _full(t: torch.Tensor) -> torch.Tensor:
    full = getattr(t, "full_tensor", None)
    return full() if full is not None else t


def _saved_buffers(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """``(name, buffer)`` of the buffers ``model.state_dict()`` holds: non-persistent ones are derived
    from the module's arguments, not trained, and belong in no checkpoint."""
    saved = set(model.state_dict(keep_vars=True))
    return [(n, b) for n, b in model.named_buffers() if n in saved]


@gin.configurable
class EMA:
    """EMA of a module's parameters (and copies of its buffers).

    Args:
        model: the plain module (after ``fully_shard`` is fine: it is modified in place; not a DDP
            wrapper, pass ``ddp.module``).
        decay: EMA decay per update; the effective decay is ``min(decay, (1 + n) / (10 + n))``
            when ``warmup`` is set, so early EMA weights are not dominated by the initialisation.
        warmup: use the (1 + n) / (10 + n) ramp.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self._param_names = [n for n, _ in model.named_parameters()]
        self._buffer_names = [n for n, _ in _saved_buffers(model)]
        with torch.no_grad():
            # Clones keep the DTensor type under FSDP2 (needed to gather full tensors later).
            self.params = [p.detach().clone() for _, p in model.named_parameters()]
            self.buffers = [b.detach().clone() for _, b in _saved_buffers(model)]

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move every shadow tensor towards the model's current (local) tensor."""
        params = [p for _, p in model.named_parameters()]
        named_buffers = dict(model.named_buffers())
        if len(params) != len(self.params) or any(n not in named_buffers for n in self._buffer_names):
            raise RuntimeError("EMA.update: the model's tensors changed since the EMA was built")
        buffers = [named_buffers[n] for n in self._buffer_names]
        ema_fn = get_ema_multi_avg_fn(self.current_decay())
        ema_local = [_local(e) for e in self.params]
        cur_local = [_local(p).detach() for p in params]
        # swa_utils' multi-tensor EMA needs matching dtypes/devices; keep them in the model's.
        ema_fn(ema_local, cur_local, self.num_updates)
        for e, b in zip(self.buffers, buffers):
            _local(e).copy_(_local(b))
        self.num_updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Full (gathered) tensors under the plain module's names. Collective under FSDP."""
        out = {}
        for name, t in zip(self._param_names + self._buffer_names, self.params + self.buffers):
            out[name] = _full(t).detach().cpu().clone()
        return out

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor], num_updates: int) -> None:
        """Load full tensors (each rank keeps its shard)."""
        names = self._param_names + self._buffer_names
        missing = [n for n in names if n not in state]
        if missing:
            raise KeyError(f"EMA state is missing tensors: {missing}")
        for name, t in zip(names, self.params + self.buffers):
            src = state[name]
            if tuple(src.shape) != tuple(t.shape):
                raise ValueError(f"EMA tensor {name}: checkpoint shape {tuple(src.shape)} != model {tuple(t.shape)}")
            placements = getattr(t, "placements", None)
            if placements is not None:
                from torch.distributed.tensor import distribute_tensor

                src = distribute_tensor(src.to(t.dtype), t.device_mesh, placements)
            _local(t).copy_(_local(src))
        self.num_updates = int(num_updates)
