"""The shapes users run: every shipped experiment and both quickstarts, end to end.

Each config is run through ``gin/mixins/shrink.gin``, which keeps its structure (levels, blocks and
per-block loads, latent stack depth, fusion mode, conditioning kind, token layout, data source) and
shrinks widths, batch and steps; the pyramid shrinks with the same per-axis level ratios. For each:

* every parameter receives a gradient on a step where all levels are present (DDP requires it, and
  a parameter without one has no optimizer state);
* training in one process, and under ``torchrun --nproc_per_node=2`` with ``gin/mixins/ddp.gin`` and
  ``gin/mixins/fsdp.gin`` (gloo on CPU), which match the one-process run;
* the workdir copied without its last checkpoint and run again ends bit-identical (weights, EMA,
  optimizer and schedule state), in one process and under DDP;
* ``hpdm-sample`` draws a video from the result and ``hpdm-eval`` scores it with a stand-in I3D.

The class-conditional experiments train on a UCF-101-layout folder with split files, the text ones
on a captioned folder through a tiny random T5, the quickstarts on the built-in synthetic videos.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys

import gin
import numpy as np
import pytest
import torch

from hpdm import gin_utils
from hpdm.core import HPDM, diffusion_loss
from hpdm.pyramid import sample_hierarchy
from data_fixtures import write_video
from train_helpers import REPO, assert_tree_equal, ckpt_dir, env, load_ckpt, run

pytestmark = pytest.mark.slow  # processes and/or the shipped weights

ROOT = gin_utils.GIN_ROOT
SHRINK = os.path.join(ROOT, "mixins", "shrink.gin")
CONFIGS = {
    os.path.basename(p)[:-4]: p for p in sorted(glob.glob(os.path.join(ROOT, "experiments", "*.gin")))
}
CONFIGS["quickstart"] = os.path.join(ROOT, "quickstart.gin")
CONFIGS["quickstart_t2v"] = os.path.join(ROOT, "quickstart_t2v.gin")
# Table 3's ablations and the additions that are not in the paper, each on HPDM-S.
HPDM_S_MIXINS = [
    "no_adaptive_computation",
    "shallow_fusion",
    "context_detach",
    "no_coords",
    "token_mixing",
    "block_mixing",
    "frame_latents",
]
CLASSES = ("Diving", "Archery", "Biking", "Fencing")
TEXT_DIM = 32  # the tiny T5's width
STEPS, MID = 4, 2  # shrink.gin: TRAIN_STEPS, CHECKPOINT_EVERY


def _config_values(path: str, extra: list[str]) -> dict:
    gin.clear_config()
    gin_utils.parse([path], ["DATA_ROOT='unused'", "CAPTIONS='unused'", *extra])
    import hpdm.core  # noqa: F401

    def query(binding, default):
        try:
            return gin.query_parameter(binding)
        except ValueError:  # not bound: HPDM's default
            return default

    values = {
        "target": tuple(query("%TARGET_RES", None)),
        "patch": tuple(query("%PATCH_RES", None)),
        "token": tuple(query("HPDM.token_size", (1, 4, 4))),
        "classes": query("HPDM.num_classes", 0),
        "text_dim": query("HPDM.text_dim", 0),
    }
    gin.clear_config()
    return values


def shrunk_geometry(target, patch, token) -> tuple[tuple, tuple]:
    """A pyramid with the same per-axis level ratios: two tokens per patch axis (one where the token
    already spans the whole patch axis)."""
    small_patch = tuple(k * (1 if p == k else 2) for p, k in zip(patch, token))
    return tuple(s * (t // p) for s, t, p in zip(small_patch, target, patch)), small_patch


def _data(name: str, values: dict, data: dict) -> list[str]:
    """Bindings that point a config at the test's data, text encoder and shrunk pyramid."""
    target, patch = shrunk_geometry(values["target"], values["patch"], values["token"])
    params = [f"TARGET_RES = {target}", f"PATCH_RES = {patch}"]
    if not name.startswith("quickstart"):
        params.append(f"DATA_ROOT = '{data['videos']}'")
    if values["text_dim"]:
        params += [f"T5_MODEL = '{data['t5']}'", f"HPDM.text_dim = {TEXT_DIM}"]
        params += [f"TextEncoder.cache_dir = '{data['text_cache']}'"]
        if not name.startswith("quickstart"):
            params.append(f"CAPTIONS = '{data['captions']}'")
    elif values["classes"] and not name.startswith("quickstart"):
        params.append(f"HPDM.num_classes = {len(CLASSES)}")
    return params


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A UCF-101-layout folder with split files and captions, a stand-in I3D and a tiny T5."""
    base = tmp_path_factory.mktemp("matrix_data")
    videos = base / "UCF-101"
    train, test, captions = [], [], []
    for i, cls in enumerate(CLASSES):
        for j in range(2):
            rel = f"{cls}/v_{cls}_g0{j + 1}_c01.avi"
            write_video(str(videos / rel), frames=18, size=(48, 64), seed=10 * i + j)
            (train if j == 0 else test).append(rel)
            captions.append(json.dumps({"path": rel, "caption": f"a clip of {cls.lower()} number {j}"}))
    lists = base / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(CLASSES)))
    (lists / "trainlist01.txt").write_text("".join(f"{p} {CLASSES.index(p.split('/')[0]) + 1}\n" for p in train))
    (lists / "testlist01.txt").write_text("".join(f"{p}\n" for p in test))
    (base / "captions.jsonl").write_text("\n".join(captions) + "\n")

    from hpdm.trainers.text import make_tiny_t5
    from eval_helpers import StandInI3D

    make_tiny_t5(str(base / "t5"), d_model=TEXT_DIM)
    torch.jit.script(StandInI3D()).save(str(base / "i3d.pt"))
    return {
        "videos": str(videos),
        "captions": str(base / "captions.jsonl"),
        "t5": str(base / "t5"),
        "text_cache": str(base / "text_cache"),
        "i3d": str(base / "i3d.pt"),
    }


def _train_argv(name: str, workdir, params: list[str], mixins=()) -> list[str]:
    argv = [f"--gin_file={CONFIGS[name]}", f"--gin_file={SHRINK}"]
    argv += [f"--gin_file={os.path.join(ROOT, 'mixins', m + '.gin')}" for m in mixins]
    return argv + [f"--gin_param={p}" for p in params] + [f"--workdir={workdir}"]


def train(name, workdir, params, mixins=()):
    return run([sys.executable, "-m", "hpdm.cli.train", *_train_argv(name, workdir, params, mixins)], timeout=300)[2]


def torchrun(name, workdir, params, mixin):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    cmd += ["hpdm.cli.train", *_train_argv(name, workdir, params, [mixin])]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _, err = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the process group this test started: torchrun and its workers
        _, err = proc.communicate()
        raise AssertionError(f"torchrun timed out\n{err[-4000:]}")
    assert proc.returncode == 0, err[-6000:]
    return err


def rerun_without_last_checkpoint(workdir, copy, rerun) -> None:
    """Copy a finished run without its last checkpoint, run the same command on the copy, and
    require the last checkpoint to come out bit-identical."""
    shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("events.out.tfevents.*"))
    shutil.rmtree(ckpt_dir(copy, STEPS))
    err = rerun(copy)
    assert f"step_{MID:08d}" in err and "Resumed from" in err
    first, again = load_ckpt(workdir, STEPS), load_ckpt(copy, STEPS)
    for name, a, b in zip(("model", "ema"), first[:2], again[:2]):
        assert set(a) == set(b), name
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}: {k}"
    for key in ("optimizer", "scheduler", "ema_updates", "step", "skipped_steps"):
        assert_tree_equal(first[2][key], again[2][key], key)


def assert_matches(reference, workdir) -> None:
    """Data-parallel weights equal one process with the same global batch, up to float32 summation
    order (see test_distributed), and every parameter has optimizer state."""
    a, b = load_ckpt(reference, STEPS), load_ckpt(workdir, STEPS)
    for x, y in zip(a[:2], b[:2]):
        assert set(x) == set(y)
        for k in x:
            torch.testing.assert_close(y[k], x[k], rtol=0, atol=5e-5, msg=k)
    params = {k for k in a[0] if not k.endswith("freqs")}  # noise_embed.freqs is a constant buffer
    assert set(b[2]["optimizer"]["state"]) == params


def sample_and_evaluate(name, values, workdir, tmp_path, data) -> None:
    levels = max((t // p).bit_length() for t, p in zip(values["target"], values["patch"]))
    out = tmp_path / "samples"
    cmd = [sys.executable, "-m", "hpdm.cli.sample", f"--workdir={workdir}", f"--output_dir={out}"]
    cmd += ["--num_videos=1", "--seed=0", f"--gin_param=SamplingSteps.num_steps = {[2] * levels}"]
    if values["text_dim"]:
        cmd.append("--prompt=a clip of diving")
    elif values["classes"]:
        cmd.append("--class_label=1")
    run(cmd, timeout=300)
    video = next(out.glob("*.npy"))
    frames = int(np.load(video).shape[0])
    _, stdout, _ = run(
        [sys.executable, "-m", "hpdm.cli.evaluate", f"--detector={data['i3d']}", f"--fake_dir={out}",
         f"--real_dir={data['videos']}", f"--num_frames={frames}", "--nocache_real_stats"],
        timeout=300,
    )
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["num_fake"] >= 1 and result["num_real"] == 2 * len(CLASSES)
    assert result["fvd"] >= 0 and result["fvd"] == result["fvd"]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_parameter_gets_a_gradient(name, data):
    values = _config_values(CONFIGS[name], [])
    _check_gradients(CONFIGS[name], [], _data(name, values, data), values)


@pytest.mark.parametrize("mixin", HPDM_S_MIXINS)
def test_every_parameter_gets_a_gradient_with_hpdm_s_mixins(mixin, data):
    path = os.path.join(ROOT, "mixins", mixin + ".gin")
    values = _config_values(CONFIGS["hpdm_s"], [])
    _check_gradients(CONFIGS["hpdm_s"], [path], _data("hpdm_s", values, data), values)


def _check_gradients(path, mixins, params, values) -> None:
    gin_utils.parse([path, SHRINK, *mixins], params)
    torch.manual_seed(0)
    model = HPDM()
    gen = torch.Generator().manual_seed(0)
    pairs = [sample_hierarchy(torch.rand(3, *model.pyramid.target_res, generator=gen) * 2 - 1, model.pyramid, gen) for _ in range(2)]
    x = torch.stack([p[0] for p in pairs])
    coords = torch.stack([p[1] for p in pairs])
    cond = {}
    if model.num_classes:
        cond["label"] = torch.tensor([0, model.num_classes])  # a label and the null class
    if model.text_dim:
        cond["text"] = torch.randn(2, 3, model.text_dim)
        cond["text_mask"] = torch.tensor([[True, True, False], [False, False, False]])
    sigma = torch.full((2, model.num_levels), 2.0)
    loss, _ = diffusion_loss(model, x, coords, cond=cond or None, sigma=sigma, loss_mask=torch.ones_like(sigma, dtype=torch.bool))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without a gradient: {missing}"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_train_resume_distributed_sample_evaluate(name, data, tmp_path):
    values = _config_values(CONFIGS[name], [])
    params = _data(name, values, data)
    single = tmp_path / "single"
    train(name, single, params)
    rerun_without_last_checkpoint(single, tmp_path / "single_resumed", lambda w: train(name, w, params))

    ddp = tmp_path / "ddp"
    torchrun(name, ddp, params, "ddp")
    assert_matches(single, ddp)
    rerun_without_last_checkpoint(ddp, tmp_path / "ddp_resumed", lambda w: torchrun(name, w, params, "ddp"))

    fsdp = tmp_path / "fsdp"
    torchrun(name, fsdp, params, "fsdp")
    assert_matches(single, fsdp)

    sample_and_evaluate(name, values, single, tmp_path, data)


@pytest.mark.parametrize("mixin", HPDM_S_MIXINS)
def test_hpdm_s_mixins_train_and_resume(mixin, data, tmp_path):
    values = _config_values(CONFIGS["hpdm_s"], [])
    params = _data("hpdm_s", values, data)
    work = tmp_path / "run"
    train("hpdm_s", work, params, [mixin])
    rerun_without_last_checkpoint(work, tmp_path / "resumed", lambda w: train("hpdm_s", w, params, [mixin]))
