"""Sampling, data and machine parts of ``hpdm-bench`` (paper Sec. 4.5; App. D item 1; data loader).

Sampling compares one last-level step with and without context caching, in interleaved rounds:
the cached step runs only the blocks the last level runs, the uncached one re-runs every lower
level of every tile (the paper's ~1.4x, Sec. 4.5, came from caching only part of that). Data throughput is reported next
to the trainer's consumption rate: a loader slower than the trainer starves it.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from typing import Optional

import numpy as np
import torch

from hpdm import host_memory
from hpdm.benchmarks.interleave import MIN_ROUNDS, interleave, ratio
from hpdm.benchmarks.measure import sync, wall_clock
from hpdm.benchmarks.sampling import LevelStep
from hpdm.samplers import SamplingSteps, sample_videos


# ------------------------------------------------------------------ sampling


def measure_sampling(model, device: torch.device, overlap: str, tile_batch_size: int, repeats: int, steps,
                     best_of: int = 1) -> dict:
    """Cached vs uncached last-level step (Sec. 4.5) in interleaved rounds, and the time to sample one
    whole video. ``cached_sampling_speedup`` is the median of the per-round ratios."""
    common = dict(overlap=overlap, tile_batch_size=tile_batch_size, device=device)
    cached = LevelStep(model, cached=True, **common)
    uncached = LevelStep(model, cached=False, **common)
    times = interleave({"cached": cached, "uncached": uncached}, wall_clock(device), rounds=max(MIN_ROUNDS, repeats),
                       best_of=best_of)
    speedup = ratio(times["uncached"], times["cached"])
    schedule = SamplingSteps(num_steps=list(steps))
    sync(device)
    t0 = time.perf_counter()
    sample_videos(model, 1, seed=0, overlap=overlap, tile_batch_size=tile_batch_size, level_schedule=schedule,
                  device=device)
    sync(device)
    whole = time.perf_counter() - t0
    record = {
        "overlap": overlap,
        "tile_batch_size": tile_batch_size,
        "cached_step": cached.record(times["cached"]),
        "uncached_step": uncached.record(times["uncached"]),
        "cached_sampling_speedup": speedup.median,
        "whole_video": {"seconds": whole, "steps_per_level": list(steps), "num_videos": 1, "cached": True},
    }
    return record


# ------------------------------------------------------------------ data


def _write_videos(root: str, count: int, frames: int, height: int, width: int) -> None:
    """A tiny class-folder dataset of MJPG AVI files written with OpenCV (moving noise blocks)."""
    import cv2

    folder = os.path.join(root, "class_a")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        writer = cv2.VideoWriter(os.path.join(folder, f"v{i}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (width, height))
        base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        for f in range(frames):
            writer.write(np.roll(base, f, axis=1))
        writer.release()


def measure_data(target_res, patch_res, batch_size: int, num_batches: int, workers, folder_videos: int) -> dict:
    """Loader hierarchies/s for the synthetic source with each worker count, and an OpenCV folder."""
    from hpdm.data import SyntheticVideos, measure_throughput
    from hpdm.data.sources import VideoFolder

    common = dict(batch_size=batch_size, target_res=tuple(target_res), patch_res=tuple(patch_res), num_batches=num_batches)
    out = {}
    for w in workers:
        out[f"synthetic_workers{w}"] = measure_throughput(source=SyntheticVideos(), num_workers=w, **common)
    if folder_videos > 0:
        with tempfile.TemporaryDirectory() as tmp:
            t, h, w = target_res
            _write_videos(os.path.join(tmp, "videos"), folder_videos, t + 4, h, w)
            source = VideoFolder(os.path.join(tmp, "videos"), cache_dir=os.path.join(tmp, "cache"))
            out["folder_opencv_workers2"] = measure_throughput(source=source, num_workers=2, **common)
    return out


def add_consumption(data: dict, trainer_videos_per_s: float) -> dict:
    """Each loader's rate over the trainer's consumption (one hierarchy per video): >= 1 keeps up."""
    for result in data.values():
        result["over_trainer_consumption"] = result["hierarchies_per_s"] / trainer_videos_per_s
    return {"trainer_hierarchies_per_s": trainer_videos_per_s, "loaders": data}


# ------------------------------------------------------------------ machine


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine(device: torch.device, dtype: str) -> dict:
    """What the numbers were measured on; the load average says how shared the CPU was."""
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(device),
        "dtype": dtype,
        "host_memory": host_memory.status(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = list(os.getloadavg())
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=props.total_memory / 2**30, cuda=torch.version.cuda,
                    tf32=torch.backends.cuda.matmul.allow_tf32)
    return info


def load_average() -> Optional[list]:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None
