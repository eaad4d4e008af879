"""Shared helpers for the training tests: a tiny config and the hpdm-train binary as a subprocess."""

import os
import signal
import struct
import subprocess
import sys

import torch
from safetensors.torch import load_file

from faults import command as faults_command

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_GIN = """
import hpdm.core
import hpdm.data
include 'train/base.gin'
include 'optim/lamb.gin'
include 'data/synthetic.gin'

TARGET_RES = (4, 32, 32)
PATCH_RES = (1, 8, 8)
BATCH_SIZE = 4
TRAIN_STEPS = 6
CHECKPOINT_EVERY = 2
SAMPLE_EVERY = 0

HPDM.target_res = %TARGET_RES
HPDM.patch_res = %PATCH_RES
HPDM.token_size = (1, 4, 4)
HPDM.token_dim = 16
HPDM.latent_dim = 16
HPDM.num_latents = 4
HPDM.num_blocks = 2
HPDM.latent_layers_per_block = 1
HPDM.head_dim = 8
HPDM.num_classes = 9
HPDM.schedule = @NoiseSchedule()
build_train_loader.target_res = %TARGET_RES
build_train_loader.patch_res = %PATCH_RES
build_train_loader.prefetch = 0
SyntheticVideos.length = 64
warmup_cosine.warmup_steps = 2
Trainer.log_every = 1
"""


def write_gin(tmp_path, extra: str = "", name: str = "tiny.gin") -> str:
    path = os.path.join(str(tmp_path), name)
    with open(path, "w") as f:
        f.write(TINY_GIN + "\n" + extra + "\n")
    return path


def train_cmd(gin_file, workdir, *params, extra_flags=(), faults=None):
    """hpdm-train's command line; with ``faults`` (``faults.Faults``' fields) it runs through
    tests/faults.py, which injects them."""
    start = faults_command(faults) if faults else [sys.executable, "-m", "hpdm.cli.train"]
    cmd = [*start, f"--gin_file={gin_file}", f"--workdir={workdir}"]
    cmd += [f"--gin_param={p}" for p in params]
    return cmd + list(extra_flags)


def env():
    e = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=REPO)
    return e


def run(cmd, timeout=240, check=True):
    proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)  # by pid: only the process this test started
        out, err = proc.communicate()
        raise AssertionError(f"timed out: {cmd}\n{err[-4000:]}")
    if check and proc.returncode != 0:
        raise AssertionError(f"command failed ({proc.returncode}): {cmd}\n{err[-6000:]}")
    return proc.returncode, out, err


def ckpt_dir(workdir, step):
    return os.path.join(str(workdir), "checkpoints", f"step_{step:08d}")


def load_ckpt(workdir, step):
    d = ckpt_dir(workdir, step)
    return (
        # Private copies: safetensors maps the file, and tests later damage or replace it.
        {k: v.clone() for k, v in load_file(os.path.join(d, "model.safetensors")).items()},
        {k: v.clone() for k, v in load_file(os.path.join(d, "ema.safetensors")).items()},
        torch.load(os.path.join(d, "state.pt"), weights_only=True),
    )


def assert_tree_equal(a, b, path="state"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            assert_tree_equal(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_tree_equal(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def flip_bit_in_payload(path):
    """Flip one bit in the middle of a file's payload: a safetensors file's tensor bytes (past its
    JSON header, so the file still parses), or the middle of state.pt."""
    with open(path, "r+b") as f:
        raw = f.read()
        start = 8 + struct.unpack("<Q", raw[:8])[0] if path.endswith(".safetensors") else 0
        offset = (start + len(raw)) // 2
        f.seek(offset)
        f.write(bytes([raw[offset] ^ 0x01]))


def torchrun_status(gin_file, workdir, mixin, *params, faults=None, timeout=300) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += train_cmd(gin_file, workdir, *params, faults=faults)[1:] + [f"--gin_file={mixin}"]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the process group this test started (torchrun + its workers)
        out, err = proc.communicate()
        raise AssertionError(f"torchrun timed out\n{err[-4000:]}")
    return proc.returncode, err


def torchrun(gin_file, workdir, mixin, *params, faults=None, timeout=300):
    code, err = torchrun_status(gin_file, workdir, mixin, *params, faults=faults, timeout=timeout)
    assert code == 0, err[-6000:]
    return err
