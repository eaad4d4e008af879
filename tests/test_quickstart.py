"""The README's main job and its text-to-video variant run end to end (shortened)."""

import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # processes and/or the shipped weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def _env():
    env = dict(os.environ, HPDM_NO_SETUP="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    return env


def test_quickstart_script_fine_tunes_the_shipped_model_and_samples(tmp_path):
    workdir = tmp_path / "qs"
    env = dict(_env(), WORKDIR=str(workdir), NUM_VIDEOS="1")
    out = subprocess.run(
        ["bash", "scripts/quickstart.sh", "--gin_param=TRAIN_STEPS=2", "--gin_param=SamplingSteps.num_steps=[2, 1, 1]"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "init_from" in (workdir / "config.gin").read_text()
    video = np.load(workdir / "samples" / "video_0000.npy")
    assert video.shape == (16, 64, 64, 3) and video.dtype == np.uint8
    assert "TensorBoard logs" in out.stdout


def test_text_to_video_quickstart_with_a_tiny_local_t5(tmp_path):
    from hpdm.trainers.text import make_tiny_t5

    t5 = make_tiny_t5(str(tmp_path / "t5"))
    workdir = tmp_path / "t2v"
    params = [
        f"--gin_param=T5_MODEL='{t5}'",
        f"--gin_param=TextEncoder.cache_dir='{tmp_path / 'cache'}'",
        "--gin_param=TRAIN_STEPS=2",
        "--gin_param=SAMPLE_EVERY=0",
    ]
    train = subprocess.run(
        [os.path.join(BIN, "hpdm-train"), "--gin_file=gin/quickstart_t2v.gin", f"--workdir={workdir}", *params],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    sample = subprocess.run(
        [
            os.path.join(BIN, "hpdm-sample"), f"--workdir={workdir}", f"--output_dir={tmp_path / 'out'}",
            "--num_videos=1", "--seed=0", "--prompt=a red disc moving left on a blue background",
            "--guidance_scale=2.0", "--overlap=", "--gin_param=SamplingSteps.num_steps=[2, 1, 1]",
        ],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600,
    )
    assert sample.returncode == 0, sample.stderr[-3000:]
    assert np.load(tmp_path / "out" / "video_0000.npy").shape == (16, 64, 64, 3)
