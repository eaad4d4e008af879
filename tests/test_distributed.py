"""torchrun --nproc_per_node=2 on CPU (gloo): DDP and FSDP2 match one process with the same global
batch, every EMA parameter moves, and an FSDP run resumes exactly (paper Table 8; Appendix B). A
signal that reaches one rank stops both after the same step with a checkpoint, and the resumed run
is bit-identical; a run resumed on another number of processes (2 -> 1, 1 -> 2) continues the global
sample order and ends with the weights of the uninterrupted one-process run."""

import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from hpdm.data.loader import sampler_state
from hpdm.trainers.checkpoint import list_checkpoints
from train_helpers import REPO, assert_tree_equal, ckpt_dir, env, load_ckpt, run, torchrun, torchrun_status, train_cmd, write_gin

pytestmark = pytest.mark.slow  # processes and/or the shipped weights

PARAMS = ("TRAIN_STEPS=3", "CHECKPOINT_EVERY=1")
DDP = "gin/mixins/ddp.gin"


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The one-process reference. It names the DDP mixin too (one process ignores it), so that a run
    moved between one and two processes keeps the same config."""
    tmp = tmp_path_factory.mktemp("single")
    gin_file = write_gin(tmp)
    run(train_cmd(gin_file, tmp / "w", *PARAMS, extra_flags=[f"--gin_file={DDP}"]))
    return gin_file, tmp / "w"


@pytest.fixture(scope="module")
def ddp(single, tmp_path_factory):
    work = tmp_path_factory.mktemp("ddp") / "w"
    torchrun(single[0], work, DDP, *PARAMS)
    return work


def assert_close_to_single(ref, work) -> None:
    """Weights equal up to float32 summation order: two half-batch gradients and an all-reduce leave
    up to ~1e-5 after three LAMB steps on some CPUs; a step moves a weight by 3e-3 - 7e-3 here, so
    the tolerance stays far below what one step (or one replayed batch) changes."""
    a, b = load_ckpt(ref, 3), load_ckpt(work, 3)
    for x, y in zip(a[:2], b[:2]):
        assert set(x) == set(y)
        for k in x:
            torch.testing.assert_close(y[k], x[k], rtol=0, atol=5e-5, msg=k)


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_data_parallel_matches_single_process(single, tmp_path, mode, request):
    gin_file, ref = single
    if mode == "ddp":
        work = request.getfixturevalue("ddp")
    else:
        work = tmp_path / mode
        torchrun(gin_file, work, f"gin/mixins/{mode}.gin", *PARAMS)
    a, b = load_ckpt(ref, 3), load_ckpt(work, 3)
    assert_close_to_single(ref, work)
    for k, s in a[2]["optimizer"]["state"].items():
        torch.testing.assert_close(b[2]["optimizer"]["state"][k]["exp_avg"], s["exp_avg"], rtol=0, atol=1e-5)
    assert b[2]["world_size"] == 2 and len(b[2]["ranks"]) == 2
    # Every EMA parameter moved between step 1 and step 3 (the paper's FSDP EMA bug, Appendix B).
    first, last = load_ckpt(work, 1), b
    params = {k for k in a[0] if not k.endswith("freqs")}  # noise_embed.freqs is a constant buffer
    frozen = [k for k in params if torch.equal(first[1][k], last[1][k])]
    assert not frozen, f"EMA tensors that never updated: {frozen}"

    if mode == "fsdp":
        # Resume under FSDP: drop the last checkpoint, rerun the same command, same bits.
        shutil.rmtree(ckpt_dir(work, 3))
        err = torchrun(gin_file, work, f"gin/mixins/{mode}.gin", *PARAMS)
        assert "Resumed from" in err
        again = load_ckpt(work, 3)
        for x, y in zip(b[:2], again[:2]):
            for k in x:
                assert torch.equal(x[k], y[k]), k


def test_signal_on_one_rank_stops_both_after_that_step_and_resumes_exactly(single, ddp, tmp_path):
    """SIGINT reaches rank 0 only (injected after step 1): both ranks stop after step 1 with exit
    status 130, a checkpoint is written (none is due before step 3), and the same command resumes
    to the weights of the uninterrupted DDP run, bit for bit."""
    gin_file, _ = single
    work = tmp_path / "w"
    params, sigint = (*PARAMS, "CHECKPOINT_EVERY=3"), {"signal": [1, "SIGINT"]}
    code, err = torchrun_status(gin_file, work, DDP, *params, faults=sigint)
    assert code != 0
    assert err.count("Stopped by SIGINT after step 1 of 3") == 2, err[-6000:]
    assert "exitcode  : 130" in err, err[-3000:]
    assert [s for s, _ in list_checkpoints(str(work))] == [1]
    err = torchrun(gin_file, work, DDP, *params, faults=sigint)
    assert "step_00000001 at step 1" in err
    expected, got = load_ckpt(ddp, 3), load_ckpt(work, 3)
    for x, y in zip(expected[:2], got[:2]):
        for k in x:
            assert torch.equal(x[k], y[k]), k
    for key in ("optimizer", "scheduler", "ema_updates"):
        assert_tree_equal(expected[2][key], got[2][key], key)


def _visited(state) -> int:
    """Items of epoch 0 the run's ranks have visited, across every change of world size."""
    samplers = [sampler_state(rank["data"]) for rank in state["ranks"]]
    assert all(s["epoch"] == 0 for s in samplers)
    handed_over = sum(sum(positions) for _, positions in samplers[0]["handover"])
    return handed_over + sum(s["position"] for s in samplers)


@pytest.mark.parametrize("direction", ["2->1", "1->2"])
def test_resume_on_another_world_size_continues_the_sample_order(single, ddp, tmp_path, direction):
    """A run's step-1 checkpoint resumed on the other number of processes ends like the uninterrupted
    one-process run: no batch replayed or skipped (steps 2 and 3 would differ by far more than float
    summation order), and the samplers have visited 3 steps x 4 samples, each once."""
    gin_file, ref = single
    source = ddp if direction == "2->1" else ref
    work = tmp_path / "w"
    shutil.copytree(source, work, ignore=shutil.ignore_patterns("events.out.tfevents.*"))
    for step in (2, 3):
        shutil.rmtree(ckpt_dir(work, step))
    if direction == "2->1":
        _, _, err = run(train_cmd(gin_file, work, *PARAMS, extra_flags=[f"--gin_file={DDP}"]))
        assert "Checkpoint was written by 2 ranks, resuming on 1: the data continues" in err
    else:
        err = torchrun(gin_file, work, DDP, *PARAMS)
        assert "Checkpoint was written by 1 ranks, resuming on 2: the data continues" in err
    assert_close_to_single(ref, work)
    assert _visited(load_ckpt(work, 3)[2]) == 12
