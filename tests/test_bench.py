"""``hpdm-bench`` end to end on the test-only ``tiny`` preset: the fixed JSON interface, not speed-ups;
and the interleaving that every ratio it reports goes through.

Speed-ups are goals reported against (Table 1, Table 3, Sec. 4.5), never asserted: they depend on
the machine.
"""

import itertools
import json
import math

import pytest
import torch

from absl import flags

from hpdm.benchmarks import interleave as il
from hpdm.benchmarks import measure
from hpdm.cli import bench
from hpdm.core import HPDM

REQUIRED = (
    "train_speedup_vs_full_res",
    "train_memory_ratio_vs_full_res",
    "adaptive_computation_speedup",
    "cached_sampling_speedup",
    "train_mfu",
)


@pytest.fixture
def parsed_flags(monkeypatch):
    """The bench's flags, defined in a registry of their own and parsed for an in-process run.

    Other binaries' tests define flags of the same names (``--batch_size``, ``--repeats``) with
    their own defaults in the process-wide registry; this test never sees them, nor they its flags.
    """
    registry = flags.FlagValues()
    monkeypatch.setattr(flags, "FLAGS", registry)
    monkeypatch.setattr(bench, "FLAGS", registry)
    bench.define_flags()
    bench.define_flags()  # defining them twice keeps them as they are
    return lambda argv: registry(["hpdm-bench", *argv])


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
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

    # Every headline ratio comes with its spread over at least three interleaved rounds.
    assert result["summary_range"].keys() == result["summary"].keys()
    for key, (low, high) in result["summary_range"].items():
        assert low <= result["summary"][key] <= high, key
    assert len(result["train"]["hpdm"]["step_times"]) >= il.MIN_ROUNDS
    assert len(result["sampling"]["cached_step"]["step_times"]) >= il.MIN_ROUNDS
    assert _positive(result["adaptive_computation_flop_ratio"])
    assert result["addition_step_ratios"].keys() == {"token_mixing", "block_mixing", "frame_latents"}
    assert result["addition_step_ratio_ranges"].keys() == result["addition_step_ratios"].keys()
    assert all(_positive(v) for v in result["addition_step_ratios"].values())
    assert set(result["machine_load"]) == {"before", "after"}


def _fake_clock(seconds):
    """A clock that reads the next of ``seconds`` for each call it times (and makes the call)."""
    it = iter(seconds)

    def clock(fn):
        fn()
        return next(it)

    return clock


def test_interleave_runs_round_robin_after_the_warm_up():
    order = []
    calls = {name: (lambda name=name: order.append(name)) for name in ("a", "b", "c")}
    times = il.interleave(calls, _fake_clock(itertools.count(1)), rounds=3, warmup=1)
    assert order == ["a", "b", "c"] * 4  # one untimed round, then three timed ones
    assert times == {"a": [1, 4, 7], "b": [2, 5, 8], "c": [3, 6, 9]}


def test_best_of_keeps_the_shortest_of_back_to_back_calls():
    # Round 1: a takes 5 then 3, b 2 then 4; round 2: a 6 then 7, b 1 then 9.
    times = il.interleave({"a": lambda: None, "b": lambda: None}, _fake_clock([5, 3, 2, 4, 6, 7, 1, 9]), rounds=2,
                          warmup=0, best_of=2)
    assert times == {"a": [3, 6], "b": [2, 1]}


def test_best_of_can_differ_per_call():
    # Round 1: a takes 5 then 3, b 2 (one try); round 2: a 6 then 7, b 9.
    times = il.interleave({"a": lambda: None, "b": lambda: None}, _fake_clock([5, 3, 2, 6, 7, 9]), rounds=2,
                          warmup=0, best_of={"a": 2})
    assert times == {"a": [3, 6], "b": [2, 9]}
    with pytest.raises(ValueError, match="at least 1"):
        il.interleave({"a": lambda: None}, _fake_clock([1]), rounds=1, warmup=0, best_of={"a": 0})


def test_interleaved_pair_gives_exact_medians_and_ranges():
    # A's and B's seconds, alternating: pairs (2, 1), (6, 2), (3, 1), (8, 4), (5, 1).
    out = il.interleave_pair(lambda: None, lambda: None, _fake_clock([2, 1, 6, 2, 3, 1, 8, 4, 5, 1]), pairs=5,
                             warmup=2)
    assert out["a_seconds"] == [2, 6, 3, 8, 5] and out["b_seconds"] == [1, 2, 1, 4, 1]
    assert out["ratios"] == [2.0, 3.0, 3.0, 2.0, 5.0]
    assert out["ratio"] == 3.0 and out["range"] == [2.0, 5.0]


def test_ratio_scales_and_checks_its_rounds():
    spread = il.ratio([4.0, 6.0, 10.0], [2.0, 2.0, 2.0], scale=0.5)
    assert spread.values == (1.0, 1.5, 2.5) and spread.median == 1.5 and spread.range == [1.0, 2.5]
    assert il.Spread.constant(3.0).range == [3.0, 3.0]
    with pytest.raises(ValueError, match="same non-zero number of rounds"):
        il.ratio([1.0, 2.0], [1.0])
    for bad in (dict(rounds=0), dict(best_of=0)):
        with pytest.raises(ValueError, match="at least 1"):
            il.interleave({"a": lambda: None}, _fake_clock([]), **bad)


def test_adaptive_computation_counts_fewer_flops():
    widths = dict(target_res=(4, 16, 16), patch_res=(1, 4, 4), token_size=(1, 2, 2), token_dim=16, latent_dim=8,
                  num_latents=4, num_blocks=6, latent_layers_per_block=1, head_dim=8)
    loads = bench.adaptive_loads(6, 3)
    assert loads == [1, 1, 2, 2, 3, 3]
    torch.manual_seed(0)
    flat = measure.counted_flops(HPDM(**widths), torch.device("cpu"))
    adaptive = measure.counted_flops(HPDM(num_levels_per_block=loads, **widths), torch.device("cpu"))
    assert flat / adaptive > 1


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
