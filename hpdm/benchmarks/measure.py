"""Measurement helpers of ``hpdm-bench``: timing, training steps, peak memory, FLOPs, batch search.

What Table 1 of the paper compares (speed at the largest batch, memory at batch 1) and what MFU
needs (FLOPs of a step over the machine's peak) are measured here; ``bench.py`` only orchestrates
and reports. Times are taken after warm-up, because the first calls pay for allocator growth,
kernel selection and lazy initialisation, and ratios come from interleaved rounds
(``hpdm.benchmarks.interleave``).
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from hpdm.core import HPDM, diffusion_loss
from hpdm.pyramid import sample_hierarchy
from hpdm.trainers.lamb import Lamb, param_groups


# ------------------------------------------------------------------ timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> list:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones.

    CUDA events on GPU (they time the device work, not the Python launch loop); ``perf_counter``
    around a synchronised call on CPU.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(max(1, repeats)):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


def median(values) -> float:
    return float(statistics.median(values))


# ------------------------------------------------------------------ the training step


def random_batch(model: HPDM, batch: int, device: torch.device, seed: int = 0):
    """``x0 [B, L+1, C, t, h, w]`` and ``coords [B, L+1, 6]`` from one random full-resolution video.

    Timing does not depend on content, so one video with ``batch`` independently drawn nested patch
    hierarchies is enough, and it keeps host memory small at the paper's 64x256x256.
    """
    gen = torch.Generator().manual_seed(seed)
    video = torch.rand((model.channels, *model.pyramid.target_res), generator=gen) * 2 - 1
    pairs = [sample_hierarchy(video, model.pyramid, gen) for _ in range(batch)]
    x0 = torch.stack([p[0] for p in pairs]).to(device)
    coords = torch.stack([p[1] for p in pairs]).to(device)
    return x0, coords


class TrainStep:
    """One optimisation step (Eq. 4 loss, backward, LAMB as in Table 8) on a fixed batch.

    ``forward_backward()`` is the part FLOPs and saved activations are counted on; ``__call__`` adds
    the optimiser update, which is what a trainer pays per step.
    """

    def __init__(self, model: HPDM, batch: int, device: torch.device, bf16: bool = False, seed: int = 0):
        self.model = model
        self.batch = batch
        self.device = device
        self.bf16 = bf16
        self.x0, self.coords = random_batch(model, batch, device, seed)
        # Fixed noise on the device: drawing a full-resolution video's noise on the host every step
        # would charge the baseline for host work that a real trainer overlaps or does on the device.
        self.noise = torch.randn(self.x0.shape, generator=torch.Generator().manual_seed(seed + 1)).to(device)
        self.generator = torch.Generator().manual_seed(seed)
        self.optimizer = Lamb(param_groups(model, 0.01, model.no_weight_decay_names()), lr=1e-4)

    def forward_backward(self) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss, _ = diffusion_loss(self.model, self.x0, self.coords, generator=self.generator, noise=self.noise)
        loss.backward()

    def __call__(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.forward_backward()
        self.optimizer.step()

    def close(self) -> None:
        """Drop the batch, gradients and optimiser state (before the next model or batch size)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer.state.clear()
        self.x0 = self.coords = self.noise = None


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------ memory


def tensor_state_bytes(step: TrainStep) -> dict:
    """Bytes of parameters, gradients and optimiser state (what persists between steps)."""
    params = list(step.model.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    grad_bytes = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    state_bytes = sum(
        v.numel() * v.element_size()
        for state in step.optimizer.state.values()
        for v in state.values()
        if torch.is_tensor(v)
    )
    return {"param_bytes": param_bytes, "grad_bytes": grad_bytes, "optimizer_bytes": state_bytes}


def saved_activation_bytes(step: TrainStep) -> int:
    """Bytes of the tensors autograd keeps for backward during one forward (deduplicated by storage).

    The CPU allocator reports no peak, and the activations kept for backward are what dominates a
    training step's peak (and what Table 1's gap comes from). Parameters are excluded here because
    they are counted once in ``tensor_state_bytes``.
    """
    seen = {p.untyped_storage().data_ptr() for p in step.model.parameters()}
    total = 0

    def pack(t: torch.Tensor):
        nonlocal total
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
        return t

    step.optimizer.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast(step.device.type, dtype=torch.bfloat16, enabled=step.bf16):
            loss, _ = diffusion_loss(step.model, step.x0, step.coords, generator=step.generator, noise=step.noise)
    loss.backward()
    step.optimizer.zero_grad(set_to_none=True)
    return total


def memory_and_flops(model: HPDM, device: torch.device, bf16: bool = False) -> dict:
    """Batch-1 peak training memory (Table 1's memory column) and FLOPs of one forward + backward.

    A warm-up step creates the optimiser state first, as in a running trainer. GPU:
    ``torch.cuda.max_memory_allocated`` over a step. CPU (no allocator peak): saved activations
    plus parameters, gradients and optimiser state, an estimate of the same quantity. FLOPs grow
    linearly with the batch (every sample and level is independent work), so they are counted once
    here and scaled by the timed batch.
    """
    step = TrainStep(model, 1, device, bf16)
    try:
        step()
        out = tensor_state_bytes(step)
        if device.type == "cuda":
            sync(device)
            torch.cuda.reset_peak_memory_stats(device)
            step()
            sync(device)
            out["peak_bytes"] = int(torch.cuda.max_memory_allocated(device))
            out["measure"] = "cuda_max_memory_allocated"
            out["flops_per_sample"] = step_flops(step)
        else:
            with _flop_counter() as counter:
                out["activation_bytes"] = saved_activation_bytes(step)
            out["flops_per_sample"] = int(counter.get_total_flops())
            out["peak_bytes"] = sum(out[k] for k in ("activation_bytes", "param_bytes", "grad_bytes", "optimizer_bytes"))
            out["measure"] = "saved_tensors_plus_params_grads_optimizer"
    finally:
        step.close()
        model.zero_grad(set_to_none=True)
        release(device)
    return out


# ------------------------------------------------------------------ FLOPs and peak


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _flop_mapping() -> dict:
    """FLOP formulas for the CPU attention kernels, which torch's counter does not know (it reports 0)."""
    ops = torch.ops.aten
    mapping = {}
    if hasattr(ops, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[ops._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flops
        mapping[ops._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_sdpa_backward_flops
    return mapping


def _flop_counter() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping=_flop_mapping())


def step_flops(step: TrainStep) -> int:
    """Model FLOPs of one forward + backward (matmuls, convolutions, attention; the optimiser is negligible)."""
    step.optimizer.zero_grad(set_to_none=True)
    with _flop_counter() as counter:
        step.forward_backward()
    step.optimizer.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def matmul_call(device: torch.device, size: int, dtype: torch.dtype) -> Callable[[], object]:
    """One ``size^3`` matmul in the training dtype: the machine's attainable peak, timed beside the steps."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device, dtype)
    b = torch.randn(size, size, generator=gen).to(device, dtype)
    return lambda: torch.mm(a, b)


def matmul_block(device: torch.device, size: int, dtype: torch.dtype, repeats: int) -> Callable[[], float]:
    """A call that allocates the matmul's operands, times ``repeats`` matmuls after one warm-up, frees
    them and returns the median seconds (a GPU round: nothing stays allocated beside the steps)."""

    def block() -> float:
        fn = matmul_call(device, size, dtype)
        try:
            return median(time_call(fn, device, repeats, warmup=1))
        finally:
            del fn
            release(device)

    return block


def matmul_summary(size: int, dtype: torch.dtype, times: list) -> dict:
    """The JSON record of the peak matmul from its (interleaved) times."""
    seconds = median(times)
    return {"size": size, "dtype": str(dtype).replace("torch.", ""), "seconds": seconds,
            "flops_per_s": 2.0 * size**3 / seconds, "flops": 2 * size**3, "times": times}


def counted_flops(model: HPDM, device: torch.device, bf16: bool = False) -> int:
    """Counted FLOPs of one batch-1 forward + backward of ``model`` (``step_flops`` on a fresh step)."""
    step = TrainStep(model, 1, device, bf16)
    try:
        return step_flops(step)
    finally:
        step.close()
        model.zero_grad(set_to_none=True)


# ------------------------------------------------------------------ Table 1 batch search


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def largest_batch(model: HPDM, device: torch.device, budget_bytes: int, bf16: bool, max_batch: int) -> dict:
    """The largest power-of-two batch whose training step fits ``budget_bytes`` (Table 1, "maxed-out batch").

    Doubles from 1 until a step runs out of memory or its peak exceeds the budget.
    """
    best, peaks, batch = 0, {}, 1
    while batch <= max_batch:
        step = None
        try:
            step = TrainStep(model, batch, device, bf16)
            step()
            sync(device)
            torch.cuda.reset_peak_memory_stats(device)
            step()
            sync(device)
            peak = int(torch.cuda.max_memory_allocated(device))
        except RuntimeError as err:  # torch.cuda.OutOfMemoryError is a RuntimeError
            if not _is_oom(err):
                raise
            peak = None
        finally:
            if step is not None:
                step.close()
            model.zero_grad(set_to_none=True)
            del step
            release(device)
        peaks[batch] = peak
        if peak is None or peak > budget_bytes:
            break
        best = batch
        batch *= 2
    return {"batch": best, "peak_bytes_by_batch": {str(k): v for k, v in peaks.items()}}


# ------------------------------------------------------------------ clocks of interleaved rounds


def wall_clock(device: torch.device) -> Callable[[Callable[[], object]], float]:
    """``clock(fn)``: seconds of one synchronised call (the clock of ``interleave``)."""
    return lambda fn: time_call(fn, device, 1, warmup=0)[0]


def self_timed(fn: Callable[[], float]) -> float:
    """The clock for calls that time themselves and return their seconds (a whole GPU block)."""
    return float(fn())


def timed_block(model: HPDM, batch: int, device: torch.device, bf16: bool, repeats: int) -> Callable[[], float]:
    """A call that builds a ``TrainStep``, times ``repeats`` steps after one warm-up, frees it and
    returns the median seconds.

    On GPU the models of Table 1 do not fit the device together at their largest batches, so an
    interleaved round there runs one such block per model instead of one step per model.
    """

    def block() -> float:
        step = TrainStep(model, batch, device, bf16)
        try:
            return median(time_call(step, device, repeats, warmup=1))
        finally:
            step.close()
            model.zero_grad(set_to_none=True)
            release(device)

    return block


def _block_evaluations(model: HPDM) -> int:
    """(level, block) pairs one training sample runs: the work adaptive computation saves (Listing 1)."""
    return int(model.scheduler.evaluations(model.num_levels))


def training_summary(model: HPDM, batch: int, times: list, memory: dict) -> dict:
    """Throughput, FLOP rate and memory of one model in the JSON layout of ``hpdm-bench``."""
    seconds = median(times)
    flops = memory["flops_per_sample"] * batch
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "level_block_evaluations_per_sample": _block_evaluations(model),
        "batch": batch,
        "step_times": times,
        "step_seconds": seconds,
        "videos_per_s": batch / seconds,
        "flops_per_step": flops,
        "flops_per_s": flops / seconds,
        "memory_batch1": memory,
    }
