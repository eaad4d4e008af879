"""hpdm: Hierarchical Patch Diffusion Models (Skorokhodov et al., CVPR 2024) in pure PyTorch.

Subpackages: ``layers`` (reusable modules), ``pyramid`` (geometry), ``core`` (the diffusion model),
``samplers`` (tiled hierarchical inference), ``data`` (torchdata pipelines), ``trainers`` (training
loop and the absl binaries), ``metrics`` (FVD, IS, seam score).

For generation from Python: ``hpdm.HPDMPipeline`` (load, call, save) and ``hpdm.save_video``.
"""

import importlib

__version__ = "0.1.0"

# Imported on first use: ``import hpdm.data`` (and every other subpackage) runs this file, and
# should not pay for the model, the samplers and OpenCV.
_LAZY = {"HPDMPipeline": "hpdm.pipeline", "save_video": "hpdm.samplers.io"}
__all__ = ["HPDMPipeline", "__version__", "save_video"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hpdm' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
