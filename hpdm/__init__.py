"""hpdm: Hierarchical Patch Diffusion Models (Skorokhodov et al., CVPR 2024) in pure PyTorch.

Subpackages: ``layers`` (reusable modules), ``pyramid`` (geometry), ``core`` (the diffusion model),
``samplers`` (tiled hierarchical inference), ``data`` (torchdata pipelines), ``trainers`` (training
loop and the absl binaries), ``metrics`` (FVD, IS, seam score).
"""

__version__ = "0.1.0"
