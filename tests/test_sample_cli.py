"""``hpdm-sample`` end to end on a tiny saved model: files, resolution, npy == frames, clear errors."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from hpdm.core import HPDM
from binaries import binary_flags


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: intra-op threads only add overhead, and thrash badly on a shared CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = (2, 16, 16)


def _config(num_classes: int, target=TARGET) -> str:
    return "\n".join(
        [
            f"HPDM.target_res = {tuple(target)}",
            "HPDM.patch_res = (2, 4, 4)",
            "HPDM.token_size = (1, 2, 2)",
            "HPDM.token_dim = 16",
            "HPDM.latent_dim = 16",
            "HPDM.num_latents = 4",
            "HPDM.num_blocks = 3",
            "HPDM.latent_layers_per_block = 1",
            "HPDM.head_dim = 8",
            f"HPDM.num_classes = {num_classes}",
            # Bindings of parts the sampler does not import must be skipped, not fatal.
            "Trainer.train_steps = 10",
            "",
        ]
    )


def _workdir(root, num_classes=0, target=TARGET, saved_target=None, seed=0):
    """A training workdir with config.gin and one checkpoint (EMA and raw weights)."""
    torch.manual_seed(seed)
    model = HPDM(
        target_res=saved_target or target, patch_res=(2, 4, 4), token_size=(1, 2, 2), token_dim=16, latent_dim=16,
        num_latents=4, num_blocks=3, latent_layers_per_block=1, head_dim=8, num_classes=num_classes,
    )
    torch.nn.init.normal_(model.detokenizer.proj.weight, std=0.2)
    ckpt = os.path.join(root, "checkpoints", "step_00000010")
    os.makedirs(ckpt)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(ckpt, "ema.safetensors"))
    save_file(state, os.path.join(ckpt, "model.safetensors"))
    with open(os.path.join(root, "config.gin"), "w") as f:
        f.write(_config(num_classes, target))
    return str(root)


def _sample(*args, check=True):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "hpdm.cli.sample", *args, "--gin_param=SamplingSteps.num_steps=[3, 2, 2]"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"hpdm-sample failed:\n{proc.stderr[-4000:]}")
    return proc


def _sample_inprocess(*args):
    """Run the binary's ``main`` in this process (fast), its flags defined for the call alone."""
    from hpdm.cli import sample

    with binary_flags(sample.define_flags, ["hpdm-sample", *args, "--gin_param=SamplingSteps.num_steps=[3, 2, 2]"]):
        sample.main([])


@pytest.fixture(scope="module")
def uncond_dir(tmp_path_factory):
    return _workdir(tmp_path_factory.mktemp("uncond"))


def test_files_resolution_and_npy(uncond_dir, tmp_path):
    out = tmp_path / "out"
    proc = _sample(f"--workdir={uncond_dir}", f"--output_dir={out}", "--num_videos=2", "--seed=5", "--overlap=hw")
    assert "level 3/3" in proc.stderr and "tiles/step" in proc.stderr  # progress: level, step, tiles
    t, h, w = TARGET
    for i in range(2):
        stem = out / f"video_{i:04d}"
        frames = np.load(f"{stem}.npy")
        assert frames.dtype == np.uint8 and frames.shape == (t, h, w, 3)
        cap = cv2.VideoCapture(f"{stem}.mp4")
        read = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            read.append(frame)
        assert len(read) == t and read[0].shape == (h, w, 3)
        ok, anim = cv2.imreadanimation(f"{stem}.gif")
        assert ok and len(anim.frames) == t and anim.frames[0].shape[:2] == (h, w)
        grid = cv2.imread(f"{stem}.png", cv2.IMREAD_UNCHANGED)
        assert grid.shape == (h, 2 * w, 3)  # 2 frames side by side
        # The PNG is lossless: the grid is exactly the frames (RGB -> BGR on disk).
        np.testing.assert_array_equal(grid[:, :w, ::-1], frames[0])
        np.testing.assert_array_equal(grid[:, w:, ::-1], frames[1])
    # The .npy equals the frames sample_videos returns for the same seed (in-process).
    from hpdm.core import load_pretrained
    from hpdm.samplers import SamplingSteps, sample_videos

    model, _ = load_pretrained(uncond_dir)
    videos = sample_videos(model, 2, 5, overlap="hw", level_schedule=SamplingSteps(num_steps=[3, 2, 2]))
    for i in range(2):
        np.testing.assert_array_equal(np.load(out / f"video_{i:04d}.npy"), videos[i].numpy())

    # Same seed with --nocache: the same videos; and a different seed: different ones.
    out2 = tmp_path / "nocache"
    _sample_inprocess(f"--workdir={uncond_dir}", f"--output_dir={out2}", "--num_videos=2", "--seed=5", "--overlap=hw", "--nocache")
    for i in range(2):
        np.testing.assert_array_equal(np.load(out / f"video_{i:04d}.npy"), np.load(out2 / f"video_{i:04d}.npy"))


def test_export_then_sample(uncond_dir, tmp_path):
    export = tmp_path / "export"
    _sample_inprocess(f"--workdir={uncond_dir}", f"--export_dir={export}")
    assert sorted(os.listdir(export)) == ["config.gin", "model.safetensors"]
    out = tmp_path / "out"
    _sample_inprocess(f"--workdir={export}", f"--output_dir={out}", "--num_videos=1", "--seed=0", "--overlap=")
    assert np.load(out / "video_0000.npy").shape == (*TARGET, 3)


def test_bad_inputs_give_clear_errors(tmp_path):
    cls_dir = _workdir(tmp_path / "cls", num_classes=3)
    out = f"--output_dir={tmp_path}/o"
    with pytest.raises(ValueError, match="class label 3 out of range"):
        _sample_inprocess(f"--workdir={cls_dir}", out, "--class_label=3")
    with pytest.raises(ValueError, match="model is class-conditional"):
        _sample_inprocess(f"--workdir={cls_dir}", out, "--prompt=a cat")
    # A checkpoint trained for a 2-level pyramid, asked for a 3-level one.
    short = _workdir(tmp_path / "short", target=(2, 16, 16), saved_target=(2, 8, 8))
    with pytest.raises(ValueError, match=r"has 2 pyramid level\(s\), but the model config needs 3"):
        _sample_inprocess(f"--workdir={short}", out)
    with pytest.raises(FileNotFoundError, match="config.gin"):
        _sample_inprocess(f"--workdir={tmp_path}/missing", out)
    with pytest.raises(ValueError, match="LevelSchedul"):
        _sample_inprocess(f"--workdir={cls_dir}", out, "--gin_param=LevelSchedul.rho=3")
    assert not os.path.exists(f"{tmp_path}/o")  # nothing written on bad input


def test_autoguidance_flags(tmp_path):
    from hpdm.core import load_pretrained
    from hpdm.samplers import Autoguidance, SamplingSteps, sample_videos

    good, weak = _workdir(tmp_path / "good", num_classes=3), _workdir(tmp_path / "weak", num_classes=3, seed=1)
    args = ["--num_videos=2", "--seed=3", "--class_label=1", "--overlap=hw"]
    _sample_inprocess(f"--workdir={good}", f"--output_dir={tmp_path}/plain", *args)
    _sample_inprocess(
        f"--workdir={good}", f"--output_dir={tmp_path}/guided", *args, f"--guide_model={weak}",
        "--autoguidance_scale=2.5", "--autoguidance_levels=0,1", "--autoguidance_sigmas=0.5,20",
    )
    guide, _ = load_pretrained(weak)
    model, _ = load_pretrained(good)
    schedule = SamplingSteps(num_steps=[3, 2, 2])
    expected = sample_videos(
        model, 2, 3, labels=1, overlap="hw", level_schedule=schedule,
        autoguidance=Autoguidance(guide, 2.5, levels=[0, 1], sigma_min=0.5, sigma_max=20.0),
    )
    for i in range(2):
        np.testing.assert_array_equal(np.load(tmp_path / "guided" / f"video_{i:04d}.npy"), expected[i].numpy())
    plain = np.stack([np.load(tmp_path / "plain" / f"video_{i:04d}.npy") for i in range(2)])
    assert not np.array_equal(plain, expected.numpy())
    # A guide of another conditioning, or a malformed interval: clear errors, nothing written.
    other = _workdir(tmp_path / "other", num_classes=5)
    with pytest.raises(ValueError, match="num_classes 5 != 3"):
        _sample_inprocess(f"--workdir={good}", f"--output_dir={tmp_path}/o", f"--guide_model={other}")
    with pytest.raises(ValueError, match="'lo,hi'"):
        _sample_inprocess(f"--workdir={good}", f"--output_dir={tmp_path}/o", f"--guide_model={weak}", "--autoguidance_sigmas=1")
    assert not os.path.exists(f"{tmp_path}/o")
