"""``hpdm-bench`` end to end on the test-only ``tiny`` preset: the fixed JSON interface, not speed-ups.

Speed-ups are goals reported against (Table 1, Table 3, Sec. 4.5), never asserted: they depend on
the machine.
"""

import json
import math

import pytest

from absl import flags

from hpdm.cli import bench

REQUIRED = (
    "train_speedup_vs_full_res",
    "train_memory_ratio_vs_full_res",
    "adaptive_computation_speedup",
    "cached_sampling_speedup",
    "train_mfu",
)


@pytest.fixture
def parsed_flags():
    """Parse the bench's absl flags for an in-process run and restore them afterwards."""
    saved = flags.FLAGS.flag_values_dict()
    yield lambda argv: flags.FLAGS(["hpdm-bench", *argv])
    for name, value in saved.items():
        setattr(flags.FLAGS, name, value)


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_tiny_bench_writes_the_fixed_interface(tmp_path, parsed_flags, capsys):
    out = tmp_path / "bench.json"
    parsed_flags(["--preset=tiny", f"--output={out}", "--device=cpu"])
    bench.main(["hpdm-bench"])
    result = json.loads(out.read_text())

    for key in REQUIRED:
        assert _positive(result[key]), (key, result.get(key))
    assert result["summary"].keys() >= set(REQUIRED)
    for name in ("full_res", "hpdm_no_adaptive", "hpdm"):
        train = result["train"][name]
        for key in ("step_seconds", "videos_per_s", "flops_per_step", "flops_per_s"):
            assert _positive(train[key]), (name, key)
        assert _positive(train["memory_batch1"]["peak_bytes"])
        assert len(train["step_times"]) >= 1
    # Adaptive computation skips (level, block) pairs; the full-resolution model has one level.
    assert result["train"]["hpdm"]["level_block_evaluations_per_sample"] < result["train"]["hpdm_no_adaptive"][
        "level_block_evaluations_per_sample"]
    assert result["memory_measure"] == "saved_tensors_plus_params_grads_optimizer"
    sampling = result["sampling"]
    assert _positive(sampling["cached_step"]["step_seconds"]) and _positive(sampling["uncached_step"]["step_seconds"])
    assert sampling["cached_step"]["block_evaluations_per_step"] < sampling["uncached_step"]["block_evaluations_per_step"]
    assert _positive(sampling["whole_video"]["seconds"])
    loaders = result["data"]["loaders"]
    assert {"synthetic_workers0", "folder_opencv_workers2"} <= loaders.keys()
    assert all(_positive(v["hierarchies_per_s"]) for v in loaders.values())
    assert _positive(result["peak_matmul"]["flops_per_s"])
    assert result["machine"]["torch"] and result["machine"]["cpu_count"]
    assert "train_speedup_vs_full_res" in capsys.readouterr().out  # the printed table


def test_adaptive_loads_match_listing_1():
    assert bench.adaptive_loads(6, 3) == [1, 1, 2, 2, 3, 3]
    assert bench.adaptive_loads(3, 3) == [1, 2, 3]


def test_quick_preset_keeps_the_paper_proportions():
    quick, paper = bench.PRESETS["quick"], bench.PRESETS["paper"]

    def tokens(p):
        return math.prod(r // t for r, t in zip(p.patch_res, p.token_size))

    for p in (quick, paper):
        assert all(t == 4 * r for t, r in zip(p.target_res, p.patch_res))  # 3 levels, patch = target / 4
        assert p.token_dim == 4 * p.latent_dim
    assert quick.num_latents / tokens(quick) == paper.num_latents / tokens(paper) == 0.1875
