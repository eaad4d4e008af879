"""torchrun --nproc_per_node=2 on CPU (gloo): DDP and FSDP2 match one process with the same global
batch, every EMA parameter moves, and an FSDP run resumes exactly (paper Table 8; Appendix B)."""

import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from test_train_helpers import REPO, ckpt_dir, env, load_ckpt, run, train_cmd, write_gin

PARAMS = ("TRAIN_STEPS=3", "CHECKPOINT_EVERY=1")


def torchrun(gin_file, workdir, mixin, *params, timeout=300):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += train_cmd(gin_file, workdir, *params)[1:] + [f"--gin_file={mixin}"]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the process group this test started (torchrun + its workers)
        out, err = proc.communicate()
        raise AssertionError(f"torchrun timed out\n{err[-4000:]}")
    assert proc.returncode == 0, err[-6000:]
    return err


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("single")
    gin_file = write_gin(tmp)
    run(train_cmd(gin_file, tmp / "w", *PARAMS))
    return gin_file, tmp / "w"


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_data_parallel_matches_single_process(single, tmp_path, mode):
    gin_file, ref = single
    work = tmp_path / mode
    torchrun(gin_file, work, f"gin/mixins/{mode}.gin", *PARAMS)
    a, b = load_ckpt(ref, 3), load_ckpt(work, 3)
    # float32 sums in another order (two half-batch gradients, then the all-reduce) leave up to ~1e-5
    # after three LAMB steps on some CPUs; a step moves a weight by 3e-3 - 7e-3 here, so the tolerance stays
    # far below what one step changes.
    for x, y in zip(a[:2], b[:2]):
        assert set(x) == set(y)
        for k in x:
            torch.testing.assert_close(y[k], x[k], rtol=0, atol=5e-5, msg=k)
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
