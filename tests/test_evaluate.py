"""``hpdm-eval`` end to end with stand-in TorchScript detectors on tiny OpenCV videos (paper Sec. 5)."""

import json
import os
import shutil
import subprocess
import sys

import cv2
import gin
import numpy as np
import pytest
import scipy.linalg
import torch
from absl import flags

from hpdm.cli import evaluate

FLAGS = flags.FLAGS


class StandInI3D(torch.nn.Module):
    """Same call signature and input contract as ``i3d_torchscript.pt``; 6 cheap features."""

    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> torch.Tensor:
        assert x.dtype == torch.uint8 and x.dim() == 5 and x.shape[1] == 3, "expects uint8 [B, C, T, H, W]"
        assert rescale and resize and return_features, "FVD calls with rescale/resize/return_features"
        v = x.float() / 127.5 - 1.0
        return torch.cat([v.mean(dim=(2, 3, 4)), v.mean(dim=(3, 4)).std(dim=2)], dim=1)


class StandInC3D(torch.nn.Module):
    """Returns probabilities over 5 classes from the 16-frame clip's colour, like ``c3d_ucf101.pt``."""

    def __init__(self):
        super().__init__()
        self.register_buffer("weight", torch.linspace(-4.0, 4.0, 15).reshape(3, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dtype == torch.uint8 and x.shape[2] == 16, "expects uint8 [B, C, 16, H, W]"
        return torch.softmax((x.float() / 255.0).mean(dim=(2, 3, 4)) @ self.weight, dim=1)


@pytest.fixture()
def detectors(tmp_path):
    i3d_path, c3d_path = tmp_path / "i3d_torchscript.pt", tmp_path / "c3d_ucf101.pt"
    torch.jit.script(StandInI3D()).save(str(i3d_path))
    torch.jit.script(StandInC3D()).save(str(c3d_path))
    return str(i3d_path), str(c3d_path)


def write_video(path, frames_rgb, fps=8):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    height, width = frames_rgb.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames_rgb:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def random_videos(seed, n, frames=10, size=16, tint=(0, 0, 0)):
    """Videos of moving colour blobs; distinct seeds and tints give distinct feature statistics."""
    rng = np.random.default_rng(seed)
    t, y, x = np.meshgrid(np.arange(frames), np.arange(size), np.arange(size), indexing="ij")
    videos = []
    for _ in range(n):
        base = rng.uniform(40, 200, size=3) + np.asarray(tint)
        speed, phase = rng.uniform(0.2, 0.8), rng.uniform(0, 6.3)
        wave = 40 * np.sin(0.5 * x + speed * t + phase) * np.cos(0.3 * y - speed * t)
        videos.append(np.clip(base + wave[..., None], 0, 255).astype(np.uint8))
    return videos


def write_folder(root, videos, classes=None):
    for i, video in enumerate(videos):
        sub = f"{classes[i]}/" if classes else ""
        write_video(os.path.join(root, f"{sub}v_{i:03d}.avi"), video)


def run_eval(argv, capsys):
    """Runs ``main`` in-process with fresh flags; returns the JSON of the last printed line."""
    FLAGS.unparse_flags()
    FLAGS(["hpdm-eval", *argv])
    try:
        evaluate.main(["hpdm-eval"])
    finally:
        FLAGS.unparse_flags()
    lines = capsys.readouterr().out.strip().splitlines()
    return json.loads(lines[-1])


def independent_fvd(i3d_path, real_root, fake_root, num_frames):
    """Reads the files with OpenCV directly and computes FVD with numpy + scipy's sqrtm."""
    detector = torch.jit.load(i3d_path)

    def features(root):
        rows = []
        for directory, _, files in sorted(os.walk(root)):
            for name in sorted(files):
                capture = cv2.VideoCapture(os.path.join(directory, name))
                frames = []
                while len(frames) < num_frames:
                    ok, frame = capture.read()
                    if not ok:
                        break
                    frames.append(frame[..., ::-1])  # BGR -> RGB
                capture.release()
                video = torch.from_numpy(np.ascontiguousarray(np.stack(frames)))
                batch = video.permute(3, 0, 1, 2)[None]
                rows.append(detector(batch, rescale=True, resize=True, return_features=True)[0])
        return torch.stack(rows).double().numpy()

    return reference_frechet(features(fake_root), features(real_root))


def reference_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance of two feature sets with numpy and scipy's sqrtm (the independent reference)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False, bias=True), np.cov(b, rowvar=False, bias=True)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float((mu_a - mu_b) @ (mu_a - mu_b) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root))


def test_identical_folders_give_zero_and_different_ones_match_reference(tmp_path, detectors, capsys):
    i3d, _ = detectors
    real, fake, copy = str(tmp_path / "real"), str(tmp_path / "fake"), str(tmp_path / "copy")
    write_folder(real, random_videos(0, 12))
    write_folder(fake, random_videos(1, 10, tint=(30, -20, 0)))
    shutil.copytree(real, copy)
    common = [f"--detector={i3d}", "--num_frames=8", "--batch_size=4", f"--stats_cache_dir={tmp_path / 'cache'}"]

    same = run_eval([*common, f"--real_dir={real}", f"--fake_dir={copy}"], capsys)
    assert same["fvd"] == pytest.approx(0.0, abs=1e-9)
    assert same["num_fake"] == same["num_real"] == 12 and same["resolution"] == [16, 16]
    assert "is" not in same and not any(k.startswith("seam") for k in same)

    different = run_eval([*common, f"--real_dir={real}", f"--fake_dir={fake}"], capsys)
    assert different["fvd"] > 0.01
    assert different["real_stats_cached"] is True  # same real folder, resolution, frames, detector
    assert different["fvd"] == pytest.approx(independent_fvd(i3d, real, fake, 8), rel=1e-6)

    fvd_at_4 = run_eval([*common, f"--real_dir={real}", f"--fake_dir={fake}", "--num_fake=4"], capsys)
    assert fvd_at_4["num_fake"] == 4 and fvd_at_4["fvd"] != pytest.approx(different["fvd"])


def test_inception_score_seams_and_skips_from_folders(tmp_path, detectors, capsys):
    i3d, c3d = detectors
    real, fake = str(tmp_path / "real"), str(tmp_path / "fake")
    write_folder(real, random_videos(2, 6, frames=20))
    write_folder(fake, random_videos(3, 10, frames=20))
    write_video(os.path.join(fake, "zz_short.avi"), random_videos(4, 1, frames=5)[0])
    with open(os.path.join(fake, "zz_broken.avi"), "wb") as handle:
        handle.write(b"not a video")
    result = run_eval(
        [f"--detector={i3d}", f"--c3d_detector={c3d}", f"--real_dir={real}", f"--fake_dir={fake}",
         "--num_frames=16", "--is_splits=2", "--patch_res=8,8,8", "--nocache_real_stats"],
        capsys,
    )
    assert result["skipped_fake"] == 2 and result["num_fake"] == 10
    assert 1.0 <= result["is"] <= 5.0 and result["is_std"] >= 0.0
    assert {"seam_t", "seam_h", "seam_w"} <= set(result)
    assert all(np.isfinite(result[k]) for k in ("seam_t", "seam_h", "seam_w"))


def test_missing_detector_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "real").mkdir()
    with pytest.raises(FileNotFoundError, match=r"i3d_torchscript\.pt.*FVD.*StyleGAN-V"):
        run_eval([f"--detector={tmp_path / 'i3d_torchscript.pt'}", f"--real_dir={tmp_path / 'real'}",
                  f"--fake_dir={tmp_path / 'real'}"], capsys)


def test_read_workdir_config_resolves_macros_and_multiline(tmp_path):
    (tmp_path / "config.gin").write_text(
        "# operative config\n"
        "TARGET_RES = (16, 64, 64)\n"
        "PATCH_RES = (8,\n    32, 32)  # tile size\n"
        "HPDM.target_res = %TARGET_RES\n"
        "HPDM.patch_res = %PATCH_RES\n"
        "ClassEmbedder.num_classes = 101\n"
        "train.data = @ucf101()\n"
    )
    assert evaluate.read_workdir_config(str(tmp_path)) == {
        "target_res": (16, 64, 64), "patch_res": (8, 32, 32), "num_classes": 101,
    }
    assert evaluate.read_workdir_config(str(tmp_path / "missing")) == {}


def grid_videos(num, seed, shape=(16, 32, 32), patch=(8, 16, 16)):
    """Smooth videos with a bright line pasted on every last-level tile edge (50% overlap)."""
    videos = torch.from_numpy(np.stack(random_videos(seed, num, frames=shape[0], size=shape[1])))
    edges = evaluate.metrics.video_tile_edges(shape, patch, (0.5, 0.5, 0.5))
    videos[:, :, edges["h"]] = 255
    videos[:, :, :, edges["w"]] = 255
    return videos


class StandInSampler:
    """``evaluate.WorkdirSampler``'s interface without a model: grid videos, calls and loads recorded."""

    loads, calls = [], []

    def __init__(self, workdir, **options):
        self.options = options
        StandInSampler.loads.append((workdir, options))
        self.num_classes = 2

    def __call__(self, count, seed, labels, offset=0):
        StandInSampler.calls.append((count, seed, None if labels is None else labels.tolist(), offset))
        return grid_videos(count, seed % 1000)

    def source_record(self):
        return {"kind": "workdir", "workdir": "stand-in", "step": 7, "ema": self.options["use_ema"]}

    def record(self):
        return {"overlap": self.options["overlap"], "levels": []}


def test_workdir_mode_samples_with_data_labels_and_writes_json(tmp_path, detectors, capsys, monkeypatch):
    i3d, _ = detectors
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.gin").write_text("TARGET_RES = (16, 32, 32)\nPATCH_RES = (8, 16, 16)\nNUM_CLASSES = 2\n")
    real = str(tmp_path / "real")
    write_folder(real, random_videos(5, 8, frames=16, size=32), classes=["A"] * 6 + ["B"] * 2)
    StandInSampler.loads, StandInSampler.calls = [], []
    # A stand-in sampler: this test pins the contract without loading a model or the sampler code.
    monkeypatch.setattr(evaluate, "WorkdirSampler", StandInSampler)
    result = run_eval(
        [f"--workdir={workdir}", f"--detector={i3d}", "--num_fake=10", f"--real_dir={real}",
         "--num_frames=16", "--sample_chunk=4", "--sample_batch_size=3", "--nocache_real_stats", "--overlap=thw"],
        capsys,
    )
    # One model load for every chunk, with the flags' settings.
    assert len(StandInSampler.loads) == 1
    workdir_arg, options = StandInSampler.loads[0]
    assert workdir_arg == str(workdir) and options["overlap"] == "fhw" and options["batch_size"] == 3
    assert options["total"] == 10 and options["use_ema"] is True and options["guidance_scale"] == 1.0
    calls = StandInSampler.calls
    assert [c[0] for c in calls] == [4, 4, 2] and [c[3] for c in calls] == [0, 4, 8]
    assert len({c[1] for c in calls}) == 3  # a seed per chunk: no repeated videos
    labels = sum((c[2] for c in calls), [])
    assert len(labels) == 10 and set(labels) <= {0, 1}
    assert result["num_fake"] == 10 and result["fvd"] > 0
    assert result["seam_h"] > 1.5 and result["seam_w"] > 1.5 and result["seam_t"] == pytest.approx(1.0, abs=0.3)
    assert result["protocol"]["fake_source"]["labels"]["drawn"] == "with the real videos' class frequencies"
    with open(workdir / "eval_f16_n10.json") as handle:
        assert json.load(handle) == result


def test_real_videos_from_a_data_config_are_cached_by_config(tmp_path, detectors, capsys):
    i3d, _ = detectors
    fake = str(tmp_path / "fake")
    write_folder(fake, random_videos(8, 6, frames=8))
    data_gin = tmp_path / "synthetic.gin"
    data_gin.write_text("SyntheticVideos.seed = 3\n")
    argv = [f"--detector={i3d}", f"--fake_dir={fake}", f"--gin_file={data_gin}", "--num_real=5",
            "--num_frames=8", f"--stats_cache_dir={tmp_path / 'cache'}"]
    try:
        gin.clear_config()  # the binary parses once per process; these are two "processes"
        first = run_eval(argv, capsys)
        gin.clear_config()
        second = run_eval(argv, capsys)
    finally:
        gin.clear_config()
    assert first["num_real"] == 5 and first["fvd"] > 0 and not first["real_stats_cached"]
    assert second["real_stats_cached"] and second["fvd"] == pytest.approx(first["fvd"], rel=1e-12)


def test_overlap_flag_maps_to_axis_fractions():
    assert evaluate.overlap_fractions("hw") == (0.0, 0.5, 0.5)
    assert evaluate.overlap_fractions("thw") == evaluate.overlap_fractions("fhw") == (0.5, 0.5, 0.5)
    assert evaluate.overlap_fractions("") == (0.0, 0.0, 0.0)
    with pytest.raises(Exception, match="subset"):
        evaluate.overlap_fractions("xy")


def test_draw_labels_follows_class_frequencies(tmp_path):
    real = str(tmp_path / "real")
    write_folder(real, random_videos(6, 4, frames=2), classes=["Archery", "Archery", "Archery", "Bowling"])
    labels = evaluate.draw_labels(4000, 0, 2, real)
    assert abs((labels == 0).mean() - 0.75) < 0.03
    assert evaluate.draw_labels(5, 0, None, real) is None
    uniform = evaluate.draw_labels(4000, 0, 3, real)  # class count mismatch: uniform labels
    assert set(np.unique(uniform)) == {0, 1, 2}


def test_console_entry_point_prints_json_last(tmp_path, detectors):
    i3d, _ = detectors
    real = str(tmp_path / "real")
    write_folder(real, random_videos(7, 3, frames=4))
    completed = subprocess.run(
        [sys.executable, "-m", "hpdm.cli.evaluate", f"--detector={i3d}", f"--real_dir={real}",
         f"--fake_dir={real}", "--num_frames=4", "--nocache_real_stats"],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "features of 3/3 videos" in completed.stderr  # progress lines
    assert json.loads(completed.stdout.strip().splitlines()[-1])["fvd"] == pytest.approx(0.0, abs=1e-9)
