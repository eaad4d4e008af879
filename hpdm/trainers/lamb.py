"""LAMB: layer-wise adaptive moments for large-batch training (You et al., 2020).

The paper trains every HPDM variant with LAMB, following RIN (paper Sec. 4.6; Appendix C, Table 8:
target LR 0.005, weight decay 0.01). torch ships no LAMB, so it is written here from the update
equations of You et al., Algorithm 2, for one parameter tensor ``x`` (a "layer") with gradient ``g``
at step ``t``::

    m_t = beta1 * m_{t-1} + (1 - beta1) * g
    v_t = beta2 * v_{t-1} + (1 - beta2) * g**2
    m_hat = m_t / (1 - beta1**t)          v_hat = v_t / (1 - beta2**t)     (bias correction)
    r_t = m_hat / (sqrt(v_hat) + eps)
    u_t = r_t + weight_decay * x
    trust = ||x|| / ||u_t||               (1 when either norm is 0)
    x <- x - lr * trust * u_t

Two per-group switches keep the usual exclusions: ``weight_decay`` (0 for norms, biases, embeddings
and latents) and ``layer_adaptation`` (``trust = 1``). Following the reference TensorFlow LAMB that
RIN used, :func:`param_groups` excludes the same tensors from both: a trust ratio is meaningless for
a bias or a norm gain whose norm says nothing about the layer's scale. Which tensors those are is the
model's to say (``HPDM.no_weight_decay_names``); there is no second rule here.

The update runs on the local tensors, so it works unchanged on DDP replicas. Under FSDP the norms
hold only the local shard, so ``_norm`` all-reduces the squared norms over the shard group and the
sharded update equals the unsharded one.
"""

from __future__ import annotations

from typing import Iterable

import gin
import torch
from torch import nn


def _local(t: torch.Tensor) -> torch.Tensor:
    """The shard a DTensor (FSDP2) holds on this rank; the tensor itself otherwise."""
    to_local = getattr(t, "to_local", None)
    return to_local() if to_local is not None else t


def _norm(param: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """L2 norm of the whole (possibly sharded) tensor.

    For an FSDP2 DTensor the squared local norm is summed over the shards' process group, so the
    trust ratio is the one a single process would compute (required for DDP/FSDP == single run).
    """
    sq = local.float().pow(2).sum()
    mesh = getattr(param, "device_mesh", None)
    if mesh is not None and mesh.size() > 1:
        import torch.distributed as dist

        dist.all_reduce(sq, group=mesh.get_group())
    return sq.sqrt()


@gin.configurable
class Lamb(torch.optim.Optimizer):
    """LAMB optimiser (You et al., Algorithm 2) with per-group decay and layer-adaptation switches.

    Args:
        params: parameters or param groups (see :func:`param_groups`). A group may set
            ``weight_decay`` and ``layer_adaptation`` (bool) to override the defaults.
        lr: peak learning rate; HPDM uses 0.005 (Table 8).
        betas: moment decay rates (beta1, beta2).
        eps: added to sqrt(v_hat).
        weight_decay: decoupled L2 term folded into the update before the trust ratio (Table 8: 0.01).
        layer_adaptation: scale each tensor's update by the trust ratio ||x|| / ||u||.
        max_trust_ratio: optional upper clamp on the trust ratio (None: unclamped, as in the paper
            of You et al.).
        bias_correction: divide the moments by (1 - beta**t).
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 0.005,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
        layer_adaptation: bool = True,
        max_trust_ratio: float | None = None,
        bias_correction: bool = True,
    ):
        if lr < 0:
            raise ValueError(f"Lamb: learning rate must be >= 0, got {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Lamb: betas must be in [0, 1), got {betas}")
        if eps <= 0:
            raise ValueError(f"Lamb: eps must be > 0, got {eps}")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            layer_adaptation=layer_adaptation,
            max_trust_ratio=max_trust_ratio,
            bias_correction=bias_correction,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params and not any(hasattr(p, "to_local") or p.grad.is_sparse for p in params):
                self._step_plain(group, params)
                continue
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                x = _local(p)
                g = _local(p.grad)
                if g.is_sparse:
                    raise RuntimeError("Lamb does not support sparse gradients")
                state = self._state(p)
                m, v = _local(state["exp_avg"]), _local(state["exp_avg_sq"])
                state["step"] += 1
                t = int(state["step"].item())

                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                if group["bias_correction"]:
                    c1, c2 = 1 - beta1**t, 1 - beta2**t
                else:
                    c1 = c2 = 1.0
                update = (m / c1) / ((v / c2).sqrt().add_(group["eps"]))
                if group["weight_decay"] != 0:
                    update.add_(x, alpha=group["weight_decay"])

                trust = 1.0
                if group["layer_adaptation"]:
                    w_norm = _norm(p, x)
                    u_norm = _norm(p, update)
                    if w_norm > 0 and u_norm > 0:
                        trust = (w_norm / u_norm).item()
                    if group["max_trust_ratio"] is not None:
                        trust = min(trust, group["max_trust_ratio"])
                x.add_(update, alpha=-group["lr"] * trust)
        return loss

    def _state(self, p: torch.Tensor) -> dict:
        """``p``'s state, created at its first update."""
        state = self.state[p]
        if not state:
            # `step` is a tensor, as in torch's own optimisers, so the state dict stays
            # tensors-only (loadable with torch.load(weights_only=True)).
            state["step"] = torch.zeros((), dtype=torch.float32)
            # Moments have the parameter's own type (a DTensor under FSDP2), so
            # torch.distributed.checkpoint can gather them into a full state dict.
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def _step_plain(self, group: dict, params: list) -> None:
        """The update of ``step`` for a group of plain (unsharded, dense) tensors, as multi-tensor
        (``torch._foreach_*``) operations: the same equations, without a Python loop of ~15 small
        operations and one host sync (the trust ratio's ``.item()``) per tensor. Results equal the
        per-tensor loop's up to float rounding (``tests/test_optim.py``)."""
        beta1, beta2 = group["betas"]
        grads = [p.grad for p in params]
        states = [self._state(p) for p in params]
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1)
        ms, vs = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
        torch._foreach_mul_(ms, beta1)
        torch._foreach_add_(ms, grads, alpha=1 - beta1)
        torch._foreach_mul_(vs, beta2)
        torch._foreach_addcmul_(vs, grads, grads, value=1 - beta2)
        if group["bias_correction"]:
            ts = torch.stack(steps).tolist()
            updates = torch._foreach_div(ms, [1 - beta1**t for t in ts])
            denom = torch._foreach_div(vs, [1 - beta2**t for t in ts])
        else:
            updates, denom = torch._foreach_mul(ms, 1.0), torch._foreach_mul(vs, 1.0)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, group["eps"])
        torch._foreach_div_(updates, denom)
        if group["weight_decay"] != 0:
            torch._foreach_add_(updates, params, alpha=group["weight_decay"])
        if group["layer_adaptation"]:
            w_norm = torch.stack(torch._foreach_norm([p.float() for p in params]))
            u_norm = torch.stack(torch._foreach_norm([u.float() for u in updates]))
            trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm)).tolist()
            if group["max_trust_ratio"] is not None:
                trust = [min(t, group["max_trust_ratio"]) for t in trust]
            torch._foreach_mul_(updates, [-group["lr"] * t for t in trust])
        else:
            torch._foreach_mul_(updates, -group["lr"])
        torch._foreach_add_(params, updates)


def param_groups(model: nn.Module, weight_decay: float, no_decay: Iterable[str]) -> list[dict]:
    """Split parameters into decayed and excluded groups (paper Table 8: decay 0.01).

    Excluded (no weight decay, no layer adaptation): the parameters named in ``no_decay``; HPDM
    names them in ``model.no_weight_decay_names()`` (norms, biases, embeddings, latents, and the
    zero-initialised output projections). Parameter names are those of the plain module (wrappers
    must be applied after the groups are built, or the names must be stripped of their prefixes).
    """
    no_decay = set(no_decay)
    decay, excluded = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (excluded if name in no_decay else decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay, "layer_adaptation": True})
    if excluded:
        groups.append({"params": excluded, "weight_decay": 0.0, "layer_adaptation": False})
    return groups


@gin.configurable
def build_optimizer(model: nn.Module, optimizer_cls=Lamb, weight_decay: float = 0.01) -> torch.optim.Optimizer:
    """Build the optimiser over :func:`param_groups` of ``model`` (gin: ``build_optimizer.optimizer_cls``).

    The exclusions are the model's own ``no_weight_decay_names()``; a module without that method
    (a test's toy model) has none: every parameter is decayed and layer-adapted.
    ``optimizer_cls`` may be any torch optimiser class (``@torch.optim.AdamW`` with ``import
    gin.torch``); the LR, betas etc. are bound on the class itself (``Lamb.lr = 0.005``).
    """
    names = getattr(model, "no_weight_decay_names", None)
    groups = param_groups(model, weight_decay, names() if names is not None else ())
    if not issubclass(optimizer_cls, Lamb):
        for g in groups:
            g.pop("layer_adaptation", None)
    return optimizer_cls(groups)

