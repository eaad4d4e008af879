"""TorchScript feature detectors used by the video-generation literature (paper Sec. 5, App. B).

The paper's numbers, like those of the works it compares against (StyleGAN-V, DIGAN, TATS,
PVDM), come from two TorchScript files that cannot be downloaded here and are never fetched by
this library: the user passes their path, and they are loaded with ``torch.jit.load`` only.

- I3D (``i3d_torchscript.pt``): Kinetics-400 I3D used for FVD, called on uint8 ``[B, C, T, H, W]``
  as ``detector(videos, rescale=True, resize=True, return_features=True)``; it rescales to
  [-1, 1] and resizes to 224x224 itself and returns 400-dim features.
- C3D (``c3d_ucf101.pt``): the UCF-101 fine-tuned C3D of TGAN / TGANv2 used for the video
  Inception Score, called as ``detector(videos)`` on uint8 ``[B, C, 16, H, W]``; it returns the
  101 class probabilities.

A TorchScript file is a program, not a table of numbers: ``torch.jit.load`` runs the graph it
contains. Use only files from a source you trust; ``verify_sha256`` refuses any other file than
the one whose SHA-256 you pinned, and every result records the hash of the file it used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings

import numpy as np
import torch


@dataclasses.dataclass(frozen=True)
class DetectorInfo:
    """What a detector file is and where researchers usually get it (for error messages)."""

    filename: str
    description: str
    origin: str


I3D = DetectorInfo(
    filename="i3d_torchscript.pt",
    description="the TorchScript I3D (Kinetics-400) feature extractor used for FVD",
    origin=(
        "it is distributed with the StyleGAN-V FVD code (universome/stylegan-v, "
        "src/metrics/frechet_video_distance.py), a TorchScript port of the VideoGPT / "
        "original TF-Hub FVD I3D model"
    ),
)

C3D = DetectorInfo(
    filename="c3d_ucf101.pt",
    description="the TorchScript C3D fine-tuned on UCF-101 used for the video Inception Score",
    origin=(
        "it is distributed with the StyleGAN-V metrics (universome/stylegan-v, "
        "src/metrics/video_inception_score.py), a TorchScript port of the TGAN / TGANv2 "
        "(pfnet-research/tgan2) chainer C3D, as used by the TGAN / DIGAN-style IS evaluations"
    ),
)


class DetectorNotFoundError(FileNotFoundError):
    """A detector path that does not point at a file; the message says what to get and where."""


class DetectorMismatchError(ValueError):
    """A detector file whose SHA-256 is not the one the user pinned."""


def check_detector_file(path: str, info: DetectorInfo) -> str:
    """Returns the absolute path of an existing detector file or raises a descriptive error."""
    if not path:
        raise DetectorNotFoundError(
            f"no path given for {info.filename}: {info.description}; {info.origin}. "
            "Download it yourself and pass its path."
        )
    resolved = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(resolved):
        raise DetectorNotFoundError(
            f"detector file not found: {resolved!r}. Expected {info.filename}: "
            f"{info.description}; {info.origin}. Weights are never downloaded by hpdm."
        )
    return resolved


def load_detector(path: str, info: DetectorInfo, device: str | torch.device = "cpu"):
    """Loads a TorchScript detector from a user-given path (``torch.jit.load`` only)."""
    resolved = check_detector_file(path, info)
    try:
        with warnings.catch_warnings():
            # The detectors only exist as TorchScript files; the deprecation notice is not actionable.
            warnings.simplefilter("ignore", DeprecationWarning)
            detector = torch.jit.load(resolved, map_location=device)
    except Exception as err:  # torch raises several unrelated types for a bad archive
        raise ValueError(
            f"{resolved!r} is not a loadable TorchScript file; expected {info.filename}: "
            f"{info.description}"
        ) from err
    return detector.eval()


def file_fingerprint(path: str) -> str:
    """SHA-256 of a file's content: identifies a detector in cache keys wherever it is copied."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str, expected: str | None, info: DetectorInfo) -> str:
    """SHA-256 of ``path``; with ``expected`` (hex, any case) a different file raises, before it is loaded."""
    digest = file_fingerprint(path)
    if expected is not None and digest != expected.strip().lower():
        raise DetectorMismatchError(
            f"{path!r} has SHA-256 {digest}, not the pinned {expected.strip().lower()}: refusing to load it "
            f"as {info.filename} (TorchScript files run code; use only the file you trust)"
        )
    return digest


def to_detector_layout(videos, device: str | torch.device) -> torch.Tensor:
    """uint8 ``[B, T, H, W, C]`` (file / sampler layout) -> uint8 ``[B, C, T, H, W]`` on device."""
    videos = torch.as_tensor(np.asarray(videos) if not torch.is_tensor(videos) else videos)
    if videos.dtype != torch.uint8 or videos.ndim != 5:
        raise ValueError(f"expected uint8 videos [B, T, H, W, C], got {videos.dtype} {tuple(videos.shape)}")
    return videos.permute(0, 4, 1, 2, 3).contiguous().to(device)


@torch.no_grad()
def i3d_features(detector, videos, device: str | torch.device = "cpu") -> torch.Tensor:
    """FVD features ``[B, D]`` of uint8 videos ``[B, T, H, W, C]``, called as the literature does."""
    inputs = to_detector_layout(videos, device)
    features = detector(inputs, rescale=True, resize=True, return_features=True)
    return features.reshape(features.shape[0], -1).double().cpu()


@torch.no_grad()
def c3d_probabilities(detector, videos, device: str | torch.device = "cpu") -> torch.Tensor:
    """UCF-101 class probabilities ``[B, 101]`` of uint8 16-frame videos ``[B, 16, H, W, C]``.

    The C3D file returns probabilities; if a detector returns anything else (negative values or
    rows not summing to one, i.e. logits) a softmax is applied so the IS stays defined.
    """
    inputs = to_detector_layout(videos, device)
    output = detector(inputs).reshape(inputs.shape[0], -1).double().cpu()
    is_distribution = bool((output >= 0).all()) and torch.allclose(
        output.sum(dim=1), torch.ones(output.shape[0], dtype=output.dtype), atol=1e-3
    )
    return output if is_distribution else torch.softmax(output, dim=1)
