"""Shared by the evaluation tests: stand-in TorchScript detectors, tiny videos written with OpenCV,
an in-process ``hpdm-eval`` run and independent references (numpy + scipy) for FVD."""

import json
import os

import cv2
import numpy as np
import pytest
import scipy.linalg
import torch

from hpdm.cli import evaluate

from binaries import binary_flags


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
    with binary_flags(evaluate.define_flags, ["hpdm-eval", *argv]):
        evaluate.main(["hpdm-eval"])
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


