"""Shared helpers for the training tests: a tiny config and the hpdm-train binary as a subprocess."""

import os
import signal
import subprocess
import sys

import torch
from safetensors.torch import load_file

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


def train_cmd(gin_file, workdir, *params, extra_flags=()):
    cmd = [sys.executable, "-m", "hpdm.cli.train", f"--gin_file={gin_file}", f"--workdir={workdir}"]
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
