r"""``hpdm-bench``: the paper's efficiency claims as side-by-side ratios (Table 1, Table 3, Sec. 4.5).

Usage::

    # CPU, a few minutes on 2 cores: scaled-down geometry with the paper's ratios.
    hpdm-bench --preset=quick --output=bench_quick.json

    # GPU: 64x256x256 videos, 16x64x64 patches, HPDM-S widths; Table 1's largest batch per model.
    hpdm-bench --preset=paper --output=bench_paper.json --memory_budget_gb=75

One process measures, side by side, three models with the same widths and depths: a
full-resolution RIN on whole videos (``HPDM(target_res=T, patch_res=T)``: a one-level pyramid, the
paper's baseline), HPDM without adaptive computation (every block runs every level) and HPDM with
it (loads 1,1,2,2,3,3). Absolute times on a shared machine are noise; ratios of times taken in the
same interleaved round survive it (``hpdm.benchmarks.interleave``): every timed contender runs once
per round, after a warm-up round, for at least three rounds, and each headline ratio is the median
of the per-round ratios.

The JSON (``--output``; the table is printed either way):

* ``summary``: the headline ratios, each a median over rounds (also written at the top level):

  - ``train_speedup_vs_full_res``: HPDM's training videos/s over the full-resolution RIN's (Table 1:
    5.4x); ``train_memory_ratio_vs_full_res``: their batch-1 peak memory, full-resolution over HPDM
    (Table 1: 4.6x; counted, not timed); ``train_memory_ratio_lower_bound_without_checkpointing``
    where the baseline only fit with activation checkpointing (the budget over HPDM's peak);
  - ``adaptive_computation_speedup``: HPDM's training videos/s with over without adaptive
    computation (Table 3: 2.73 -> 4.4 videos/s, 1.6x);
  - ``train_mfu`` / ``train_mfu_full_res``: counted FLOPs of a training step per second over a
    ``size^3`` matmul's rate in the training dtype, the matmul timed in the same rounds;
  - ``cached_sampling_speedup``: one last-level tiled step without over with context caching
    (Sec. 4.5: ~1.4x; App. D item 1 names what the paper did not cache).

* ``summary_range``: for every key of ``summary``, ``[min, max]`` of that ratio over the rounds
  (a counted ratio has the same min and max). Two runs agree when their ranges overlap.
* ``adaptive_computation_flop_ratio``: counted FLOPs of a training step without over with adaptive
  computation: the speed-up adaptive computation could reach if time followed FLOPs. The measured
  ``adaptive_computation_speedup`` falls short of it by the work that is not FLOPs (optimiser,
  normalisations, element-wise ops, grid sampling), which both models pay alike.
* ``addition_step_ratios``: for each addition of the quickstart model that is not in the paper
  (``token_mixing``, ``block_mixing``, ``frame_latents``), the training step of the quickstart model
  (``gin/models/quickstart.gin``, at the preset's ``addition_res`` and ``addition_batch``) over the
  same model without that addition; ``addition_step_ratio_ranges`` its ``[min, max]`` over rounds and
  ``additions`` the times (``hpdm.benchmarks.additions``).
* ``machine_load``: the 1, 5 and 15 minute load averages ``before`` and ``after`` the run: a load
  above the cores used says other work shared the machine (the ranges then widen).
* ``train`` (per model: batch, per-round ``step_times``, videos/s, FLOPs, batch-1 memory), ``sampling``,
  ``data`` (loader throughput next to the trainer's consumption), ``peak_matmul``, ``machine``,
  ``config`` (the preset after overrides), ``goals`` (the paper's numbers), ``profile`` with
  ``--profile`` (top operators of one training step per model).

On GPU the three training models do not fit the device together at their largest batches, so a
round there runs, per model, a block of ``repeats`` steps after a warm-up step (its median is the
round's time) and frees it before the next model's block.

The ``quick`` preset keeps the paper's ratios: 3 levels, patch = target / 4 per axis, latents =
0.1875 x tokens per patch (HPDM-S: 768 / 4096) and token width = 4 x latent width (1024 : 256).

Where the time goes (``--profile`` adds the top operators of each model to the JSON): on CPU the
full-resolution RIN spends its time in large matmuls over its many more tokens, HPDM in many small
ops on its patches (matmuls, then layer norm, GELU, adds, concatenations and copies, LAMB's
per-tensor update and the context fusion's grid sampling), so its MFU is lower and adaptive
computation saves less time than FLOPs. On GPU at the paper's size the full-resolution RIN does not
fit one video without activation checkpointing; it is then measured with it and its memory ratio
is a lower bound.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from typing import Optional

from absl import app, flags, logging

from hpdm.cli.common import define_flag, run_binary

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags of ``hpdm-bench`` (``define_flag``: safe to call again, and beside other binaries)."""
    _flag(_enum("quick", "paper", "tiny"), "preset", "quick",
          "quick: CPU minutes; paper: GPU, Table 1 geometry; tiny: seconds, for tests only.")
    _flag(flags.DEFINE_string, "output", None, "JSON file to write (the table is printed either way).")
    _flag(flags.DEFINE_string, "device", None, "cpu or cuda; default cuda when available, else cpu.")
    _flag(flags.DEFINE_integer, "repeats", None, "interleaved rounds per measurement (at least 3; the median of the "
          "per-round ratios is reported) and, on GPU, steps per model block; default per preset.")
    _flag(flags.DEFINE_integer, "batch_size", None, "training batch (CPU, or GPU with --nobatch_search); default per "
          "preset.")
    _flag(flags.DEFINE_bool, "batch_search", None, "largest power-of-two batch under --memory_budget_gb per model "
          "(Table 1); default: on for cuda.")
    _flag(flags.DEFINE_float, "memory_budget_gb", None, "GPU memory budget of the batch search; default 95% of the "
          "device.")
    _flag(flags.DEFINE_integer, "max_batch", 1024, "upper end of the batch search.")
    _flag(_enum("float32", "bfloat16"), "dtype", "float32", "training dtype: float32 (TF32 matmuls on GPU) or bf16 "
          "autocast (App. D item 7: the paper's runs converged worse with it).")
    _flag(flags.DEFINE_list, "parts", list(PARTS), f"what to measure, of {', '.join(PARTS)}.")
    _flag(flags.DEFINE_list, "target_res", None, "override: full-resolution T,H,W.")
    _flag(flags.DEFINE_list, "patch_res", None, "override: patch t,h,w.")
    _flag(flags.DEFINE_list, "token_size", None, "override: tokenizer cell.")
    _flag(flags.DEFINE_integer, "token_dim", None, "override: interface token width.")
    _flag(flags.DEFINE_integer, "latent_dim", None, "override: latent width.")
    _flag(flags.DEFINE_integer, "num_latents", None, "override: latents per (sample, level).")
    _flag(flags.DEFINE_integer, "num_blocks", None, "override: RIN blocks.")
    _flag(flags.DEFINE_integer, "latent_layers", None, "override: latent layers per block.")
    _flag(flags.DEFINE_integer, "head_dim", None, "override: attention head width.")
    _flag(flags.DEFINE_list, "sample_steps", None, "override: steps per level of the whole-video sampling timing.")
    _flag(flags.DEFINE_string, "overlap", None, "override: tile overlap axes of the sampling timings (e.g. fhw, hw, "
          "'').")
    _flag(flags.DEFINE_bool, "profile", False, "add the top operators of one training step of each model "
          "(torch.profiler).")


def _flag(define, name: str, default, help: str) -> None:
    define_flag(define, name, default, help)


def _enum(*values: str):
    """``flags.DEFINE_enum`` over ``values`` with the ``(name, default, help)`` call ``define_flag`` makes."""

    def define(name, default, help, **kwargs):
        return flags.DEFINE_enum(name, default, list(values), help, **kwargs)

    return define


# What --parts may name: Table 1 / Table 3 training, Sec. 4.5 sampling, the data loader, and the
# cost of each addition of the quickstart model.
PARTS = ("train", "sampling", "data", "additions")

# Paper goals (never asserted): Table 1, Table 3, and the target for caching (paper: ~1.4x).
GOALS = {
    "train_speedup_vs_full_res": 5.4,
    "train_memory_ratio_vs_full_res": 4.6,
    "adaptive_computation_speedup": 1.6,
    "cached_sampling_speedup": 3.0,
}


@dataclasses.dataclass
class Preset:
    """Geometry, widths and measurement sizes of one benchmark run."""

    target_res: tuple
    patch_res: tuple
    token_size: tuple
    token_dim: int
    latent_dim: int
    num_latents: int
    num_blocks: int
    latent_layers: int
    head_dim: int
    batch_size: int
    repeats: int
    sample_steps: tuple
    overlap: str
    tile_batch_size: int
    matmul_size: int
    data_batches: int
    sample_repeats: int = 2
    data_workers: tuple = (0, 1, 2)
    folder_videos: int = 4
    # Each timed call of a CPU round is the best of this many back-to-back calls
    # (``hpdm.benchmarks.interleave``); GPU rounds time blocks of ``repeats`` steps instead.
    best_of: int = 1
    # The quickstart model of ``addition_step_ratios``: its (target_res, patch_res), training batch
    # and extra gin bindings (widths, for the test-only preset).
    addition_res: tuple = ((16, 64, 64), (4, 16, 16))
    addition_batch: int = 16
    addition_bindings: tuple = ()


PRESETS = {
    # Scaled down with the paper's proportions: 3 levels, patch = target / 4, 256 tokens per patch,
    # 48 latents (0.1875 x tokens), widths 4 : 1. Overlap is off for the step timings: the cached /
    # uncached ratio is per tile, and 64 tiles instead of 343 keep the uncached step affordable.
    # Batch 8, a CPU training batch (the quickstart trains at 16): at 2 the per-operator overhead of
    # HPDM's small kernels outweighed their FLOPs and hid what adaptive computation saves.
    "quick": Preset((16, 64, 64), (4, 16, 16), (1, 2, 2), 128, 32, 48, 6, 4, 16, batch_size=8, repeats=4,
                    sample_steps=(4, 2, 1), overlap="", tile_batch_size=16, matmul_size=2048, data_batches=5,
                    best_of=2),
    # Table 1 / HPDM-S (Table 8): 4096 tokens per patch, 768 latents, 1024 / 256 widths. The GPU batch
    # comes from the search; batch_size is the CPU fallback and the loader batch.
    "paper": Preset((64, 256, 256), (16, 64, 64), (1, 4, 4), 1024, 256, 768, 6, 4, 64, batch_size=8, repeats=3,
                    sample_steps=(32, 16, 8), overlap="", tile_batch_size=16, matmul_size=8192, data_batches=5,
                    data_workers=(0, 2, 8)),
    # For tests: every code path in seconds.
    "tiny": Preset((4, 16, 16), (1, 4, 4), (1, 2, 2), 16, 8, 4, 3, 1, 8, batch_size=2, repeats=1,
                   sample_steps=(2, 1, 1), overlap="", tile_batch_size=16, matmul_size=256, data_batches=2,
                   sample_repeats=1, data_workers=(0, 2), folder_videos=2,
                   addition_res=((4, 16, 16), (1, 4, 4)), addition_batch=2,
                   addition_bindings=("HPDM.token_dim = 16", "HPDM.latent_dim = 16", "HPDM.num_latents = 4",
                                      "HPDM.head_dim = 8")),
}


def adaptive_loads(num_blocks: int, num_levels: int) -> list:
    """Listing 1's loads generalised: block ``b`` runs ``ceil((b + 1) L / num_blocks)`` levels (6 blocks,
    3 levels: 1,1,2,2,3,3), so the late blocks run every level and the high levels skip early blocks."""
    return [math.ceil((b + 1) * num_levels / num_blocks) for b in range(num_blocks)]


def resolve_preset() -> Preset:
    """The chosen preset with the command-line overrides applied."""
    preset = dataclasses.replace(PRESETS[FLAGS.preset])
    ints = lambda values: tuple(int(v) for v in values)  # noqa: E731
    for name in ("target_res", "patch_res", "token_size", "sample_steps"):
        if getattr(FLAGS, name) is not None:
            setattr(preset, name, ints(getattr(FLAGS, name)))
    for flag, field in (("token_dim", "token_dim"), ("latent_dim", "latent_dim"), ("num_latents", "num_latents"),
                        ("num_blocks", "num_blocks"), ("latent_layers", "latent_layers"), ("head_dim", "head_dim"),
                        ("batch_size", "batch_size"), ("repeats", "repeats"), ("overlap", "overlap"),
                        ("repeats", "sample_repeats")):
        if getattr(FLAGS, flag) is not None:
            setattr(preset, field, getattr(FLAGS, flag))
    return preset


def build_models(preset: Preset, device) -> dict:
    """The three models of Table 1, identical in widths and depths, on ``device``."""
    from hpdm.core import HPDM
    from hpdm.pyramid import Pyramid

    widths = dict(target_res=preset.target_res, token_size=preset.token_size, token_dim=preset.token_dim,
                  latent_dim=preset.latent_dim, num_latents=preset.num_latents, num_blocks=preset.num_blocks,
                  latent_layers_per_block=preset.latent_layers, head_dim=preset.head_dim)
    levels = Pyramid(preset.target_res, preset.patch_res).num_levels
    return {
        "full_res": HPDM(patch_res=preset.target_res, **widths).to(device),
        "hpdm_no_adaptive": HPDM(patch_res=preset.patch_res, **widths).to(device),
        "hpdm": HPDM(patch_res=preset.patch_res, num_levels_per_block=adaptive_loads(preset.num_blocks, levels),
                     **widths).to(device),
    }


# Tries per round of each HPDM training step on CPU (``interleave``'s best_of), at least.
SMALL_MODEL_BEST_OF = 4


def measure_train(models: dict, preset: Preset, device, bf16: bool, budget_bytes: Optional[int]) -> tuple:
    """Memory and FLOPs at batch 1, then interleaved rounds of every model's training step (largest
    batch under the budget on GPU) and of the peak matmul.

    Returns the per-model records and the ``peak_matmul`` record.
    """
    import torch

    from hpdm.benchmarks import measure as bm
    from hpdm.benchmarks.interleave import MIN_ROUNDS, interleave

    results = {}
    batches = {}
    for name, model in models.items():
        search = None
        if budget_bytes is not None:
            search = bm.largest_batch(model, device, budget_bytes, bf16, FLAGS.max_batch)
            if search["batch"] < 1:
                # A full-resolution RIN may not fit even one video (the paper's took 65.3 GB, Table 1):
                # recompute activations in backward rather than report nothing; the JSON says so.
                model.activation_checkpointing = True
                without = search
                search = bm.largest_batch(model, device, budget_bytes, bf16, FLAGS.max_batch)
                search.update(activation_checkpointing=True, without_checkpointing=without)
                if search["batch"] < 1:
                    raise RuntimeError(f"{name}: batch 1 does not fit {budget_bytes / 2**30:.1f} GiB")
        memory = bm.memory_and_flops(model, device, bf16)
        memory["activation_checkpointing"] = model.activation_checkpointing
        batches[name] = search["batch"] if search else preset.batch_size
        results[name] = {"memory": memory, "batch_search": search}
        logging.info("%s: batch %d, batch-1 peak %.3f GiB", name, batches[name], memory["peak_bytes"] / 2**30)
    matmul_dtype = torch.bfloat16 if bf16 else torch.float32
    rounds = max(MIN_ROUNDS, preset.repeats)
    if device.type == "cuda":
        calls = {"matmul": bm.matmul_block(device, preset.matmul_size, matmul_dtype, preset.repeats)}
        calls.update({name: bm.timed_block(model, batches[name], device, bf16, preset.repeats)
                      for name, model in models.items()})
        times = interleave(calls, bm.self_timed, rounds=rounds, warmup=0)
    else:
        steps = {name: bm.TrainStep(model, batches[name], device, bf16) for name, model in models.items()}
        calls = {"matmul": bm.matmul_call(device, preset.matmul_size, matmul_dtype), **steps}
        try:
            # The HPDM steps are cheap next to the full-resolution one: more tries each keep a
            # round's HPDM times clear of the page faults that model's freed memory leaves behind.
            best_of = {name: preset.best_of for name in calls}
            best_of.update({name: max(preset.best_of, SMALL_MODEL_BEST_OF) for name in models if name != "full_res"})
            times = interleave(calls, bm.wall_clock(device), rounds=rounds, best_of=best_of)
        finally:
            for step in steps.values():
                step.close()
    for name, model in models.items():
        summary = bm.training_summary(model, batches[name], times[name], results[name]["memory"])
        if results[name]["batch_search"]:
            summary["batch_search"] = results[name]["batch_search"]
        results[name] = summary
    return results, bm.matmul_summary(preset.matmul_size, matmul_dtype, times["matmul"])


def profile_steps(models: dict, preset: Preset, device, bf16: bool, top: int = 12) -> dict:
    """Top operators (self time) of one training step of each model: where the time goes."""
    from torch.profiler import ProfilerActivity, profile

    from hpdm.benchmarks import measure as bm

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    out = {}
    for name, model in models.items():
        step = bm.TrainStep(model, preset.batch_size, device, bf16)
        step()
        with profile(activities=activities) as prof:
            step()
            bm.sync(device)
        events = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0), reverse=True)
        total = sum(getattr(e, key, 0) for e in events) or 1
        out[name] = [{"op": e.key, "ms": getattr(e, key, 0) / 1000.0, "share": getattr(e, key, 0) / total,
                      "calls": e.count} for e in events[:top]]
        step.close()
        bm.release(device)
    return out


def headline(results: dict) -> dict:
    """The fixed-interface ratios from the raw measurements: key -> ``Spread`` over the rounds.

    Every timed ratio divides two times of the same round; batch sizes and counted FLOPs enter as
    constant factors (videos/s is batch / seconds, a FLOP rate is FLOPs / seconds).
    """
    from hpdm.benchmarks.interleave import Spread, ratio

    out = {}
    train = results.get("train")
    if train:
        full, flat, ac = train["full_res"], train["hpdm_no_adaptive"], train["hpdm"]
        peak = results["peak_matmul"]
        out["train_speedup_vs_full_res"] = ratio(full["step_times"], ac["step_times"], ac["batch"] / full["batch"])
        out["train_memory_ratio_vs_full_res"] = Spread.constant(
            full["memory_batch1"]["peak_bytes"] / ac["memory_batch1"]["peak_bytes"])
        out["adaptive_computation_speedup"] = ratio(flat["step_times"], ac["step_times"], ac["batch"] / flat["batch"])
        out["train_mfu"] = ratio(peak["times"], ac["step_times"], ac["flops_per_step"] / peak["flops"])
        out["train_mfu_full_res"] = ratio(peak["times"], full["step_times"], full["flops_per_step"] / peak["flops"])
        if full["memory_batch1"].get("activation_checkpointing"):
            # The baseline only fit with recomputed activations: its true batch-1 peak exceeds the
            # budget, so the measured ratio understates the saving, and the budget bounds it below.
            out["train_memory_ratio_lower_bound_without_checkpointing"] = Spread.constant(
                results["memory_budget_gb"] * 2**30 / ac["memory_batch1"]["peak_bytes"])
    if "sampling" in results:
        sampling = results["sampling"]
        out["cached_sampling_speedup"] = ratio(sampling["uncached_step"]["step_times"],
                                               sampling["cached_step"]["step_times"])
    return out


def adaptive_flop_ratio(train: dict) -> float:
    """Counted FLOPs per sample without over with adaptive computation: the ceiling of its speed-up."""
    return (train["hpdm_no_adaptive"]["memory_batch1"]["flops_per_sample"]
            / train["hpdm"]["memory_batch1"]["flops_per_sample"])


def format_table(summary: dict, results: dict) -> str:
    """A small aligned table: metric, value (median, and [min, max] over rounds), paper goal, met."""
    ranges = results.get("summary_range", {})
    rows = [("metric", "value [min, max]", "paper goal", "met")]
    for key, value in summary.items():
        goal = GOALS.get(key)
        met = "" if goal is None else ("yes" if value >= goal else "NO")
        low, high = ranges.get(key, (value, value))
        rows.append((key, f"{value:.3g} [{low:.3g}, {high:.3g}]", "" if goal is None else f">= {goal}", met))
    if "adaptive_computation_flop_ratio" in results:
        rows.append(("adaptive_computation_flop_ratio", f"{results['adaptive_computation_flop_ratio']:.3g}", "", ""))
    for name, value in results.get("addition_step_ratios", {}).items():
        low, high = results["addition_step_ratio_ranges"][name]
        rows.append((f"step with / without {name}", f"{value:.3g} [{low:.3g}, {high:.3g}]", "", ""))
    for name, res in results.get("train", {}).items():
        rows.append((f"{name} videos/s (batch {res['batch']})", f"{res['videos_per_s']:.3g}", "", ""))
        rows.append((f"{name} peak GiB (batch 1)", f"{res['memory_batch1']['peak_bytes'] / 2**30:.3g}", "", ""))
    if "sampling" in results:
        rows.append(("whole video sampling s", f"{results['sampling']['whole_video']['seconds']:.3g}", "", ""))
    for name, res in results.get("data", {}).get("loaders", {}).items():
        rows.append((f"data {name} hier/s", f"{res['hierarchies_per_s']:.3g}",
                     f"x{res['over_trainer_consumption']:.2g} trainer", ""))
    load = results.get("machine_load", {})
    for when in ("before", "after"):
        if load.get(when) is not None:
            rows.append((f"load average {when} (1, 5, 15 min)", ", ".join(f"{v:.2f}" for v in load[when]), "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def pick_device(name: Optional[str]):
    import torch

    if name in (None, "auto"):  # "auto": the flag's former default, still accepted
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise app.UsageError("--device=cuda but no CUDA device is available")
    return torch.device(name)


def benchmark(preset: Preset, device, dtype: str, parts, batch_search: bool, budget_gb: Optional[float],
              profile: bool) -> dict:
    """Run the requested parts and return the JSON document."""
    import torch

    from hpdm.benchmarks import additions as ba
    from hpdm.benchmarks import parts as bp

    unknown = set(parts) - set(PARTS)
    if unknown:
        raise app.UsageError(f"--parts: unknown {sorted(unknown)}; choose from {', '.join(PARTS)}")
    started = time.perf_counter()
    load_before = bp.load_average()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # the float32 training dtype on GPU is TF32 matmuls
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    bf16 = dtype == "bfloat16"
    results: dict = {"preset": FLAGS.preset, "config": dataclasses.asdict(preset),
                     "machine": bp.describe_machine(device, dtype), "goals": GOALS}
    models = build_models(preset, device)
    budget = None
    if batch_search and device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        budget = int((budget_gb * 2**30) if budget_gb else 0.95 * total)
        results["memory_budget_gb"] = budget / 2**30
    if "train" in parts:
        logging.info("measuring train (%.0f s so far)", time.perf_counter() - started)
        results["train"], results["peak_matmul"] = measure_train(models, preset, device, bf16, budget)
        results["memory_measure"] = results["train"]["hpdm"]["memory_batch1"]["measure"]
        results["train_batch_selection"] = "largest power-of-two batch under the budget" if budget else "fixed"
        results["adaptive_computation_flop_ratio"] = adaptive_flop_ratio(results["train"])
    if "additions" in parts:
        logging.info("measuring additions (%.0f s so far)", time.perf_counter() - started)
        target, patch = preset.addition_res
        quickstart = ba.addition_models(target, patch, preset.addition_bindings, device)
        results["additions"], costs = ba.measure_additions(quickstart, preset.addition_batch, device,
                                                           preset.repeats, bf16, preset.best_of)
        del quickstart
        results["addition_step_ratios"] = {name: spread.median for name, spread in costs.items()}
        results["addition_step_ratio_ranges"] = {name: spread.range for name, spread in costs.items()}
    if "sampling" in parts:
        logging.info("measuring sampling (%.0f s so far)", time.perf_counter() - started)
        results["sampling"] = bp.measure_sampling(models["hpdm"], device, preset.overlap, preset.tile_batch_size,
                                                  preset.sample_repeats, preset.sample_steps, preset.best_of)
    if "data" in parts:
        logging.info("measuring data (%.0f s so far)", time.perf_counter() - started)
        data = bp.measure_data(preset.target_res, preset.patch_res, preset.batch_size, preset.data_batches,
                               preset.data_workers, preset.folder_videos)
        consumption = results["train"]["hpdm"]["videos_per_s"] if "train" in results else float("nan")
        results["data"] = bp.add_consumption(data, consumption)
    if profile:
        results["profile"] = profile_steps(models, preset, device, bf16)
    spreads = headline(results)
    summary = {key: spread.median for key, spread in spreads.items()}
    results.update(summary)
    results["summary"] = summary
    results["summary_range"] = {key: spread.range for key, spread in spreads.items()}
    results["machine"]["load_average_at_end"] = bp.load_average()
    results["machine_load"] = {"before": load_before, "after": results["machine"]["load_average_at_end"]}
    results["wall_seconds"] = time.perf_counter() - started
    return results


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    device = pick_device(FLAGS.device)
    preset = resolve_preset()
    batch_search = FLAGS.batch_search if FLAGS.batch_search is not None else device.type == "cuda"
    results = benchmark(preset, device, FLAGS.dtype, set(FLAGS.parts), batch_search, FLAGS.memory_budget_gb,
                        FLAGS.profile)
    print(format_table(results["summary"], results))
    print(f"wall time {results['wall_seconds']:.1f} s on {results['machine']['device']}")
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(results, f, indent=2, default=_json_default)


def _json_default(value):
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def run() -> None:
    """Console-script entry point (``hpdm-bench``)."""
    define_flags()
    run_binary(main, __name__)


if __name__ == "__main__":
    run()
