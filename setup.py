"""Packaging for hpdm: Hierarchical Patch Diffusion Models in pure PyTorch."""

from setuptools import find_packages, setup

setup(
    name="hpdm",
    version="0.1.0",
    description=(
        "Hierarchical Patch Diffusion Models (Skorokhodov et al., CVPR 2024): "
        "pixel-space patch diffusion for high-resolution video."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["hpdm", "hpdm.*"]),
    # A bare `torch` pin would let pip pick a multi-GB CUDA build on a fresh
    # machine; install the build you want first (README), this range accepts it.
    install_requires=[
        "torch>=2.4",
        "einops>=0.7",
        "gin-config>=0.5.0",
        "torchdata>=0.10",
        "absl-py>=1.0",
        "tensorboard>=2.14",
        "transformers>=4.40",
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "safetensors>=0.4",
    ],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6", "scipy>=1.10"],
    },
    entry_points={
        "console_scripts": [
            "hpdm-train=hpdm.trainers.train:run",
            "hpdm-sample=hpdm.trainers.sample:run",
            "hpdm-eval=hpdm.trainers.evaluate:run",
            "hpdm-bench=hpdm.trainers.bench:run",
        ]
    },
)
