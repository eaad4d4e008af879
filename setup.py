"""Packaging for hpdm: Hierarchical Patch Diffusion Models in pure PyTorch."""

from setuptools import find_packages, setup

# Every floor below is a version that CI installs and tests: scripts/test_minimum_versions.sh
# installs each requirement (extras included) at its floor in a second environment and runs the
# core tests there; scripts/test.sh runs the whole suite on the newest releases. A floor is raised
# to the oldest release that passes, never set below it; the comments say what holds each one up.
# tests/test_dependencies.py checks that the floors parse and that the installed versions meet them.
INSTALL_REQUIRES = [
    # A bare `torch` pin would let pip pick a multi-GB CUDA build on a fresh machine; install the
    # build you want first (README), this range accepts it. 2.13 is the only torch CI can install
    # (the CPU build at hand; other wheels are multi-GB CUDA builds). The code itself needs >= 2.6
    # (public FSDP2 `torch.distributed.fsdp.fully_shard`), but nothing older than 2.13 is tested.
    "torch>=2.13",
    "einops>=0.7",
    "gin-config>=0.5.0",
    # Maintenance-only upstream: bounded to the tested series (0.10, 0.11), and imported by one
    # module only (hpdm/data/nodes.py), so that replacing it touches one file.
    "torchdata>=0.10,<0.12",
    "absl-py>=1.0",
    # 2.17.1: older releases use `np.string_`, which NumPy 2 (needed by OpenCV >= 4.12) removed.
    "tensorboard>=2.17.1",
    # 2.0: OpenCV 4.12's wheels require NumPy >= 2.
    "numpy>=2.0",
    # 4.12: the first with `cv2.imencodeanimation` (the GIF writer); 4.11 has `cv2.Animation` only.
    # Its first wheel is 4.12.0.88, written out so that the minimum-versions pin names a release.
    "opencv-python-headless>=4.12.0.88",
    # 0.4.3: the oldest that transformers 4.56 (the "text" extra) accepts; CI installs both.
    "safetensors>=0.4.3",
]

EXTRAS_REQUIRE = {
    # The T5 text encoder (text-to-video; hpdm/trainers/text.py imports transformers on first use).
    # transformers 4.56: the first whose `from_pretrained` takes `dtype=`. sentencepiece: T5
    # checkpoints whose tokenizer is only a `spiece.model` (google/t5-v1_1-*) need it to load.
    "text": ["transformers>=4.56", "sentencepiece>=0.2.0"],
    # `HPDMPipeline.from_pretrained("owner/name")`. 0.34: the oldest that transformers 4.56 accepts.
    "hub": ["huggingface_hub>=0.34"],
    # scipy 1.13: the first release built for NumPy 2.
    "test": ["pytest>=7.0", "hypothesis>=6.0", "scipy>=1.13"],
}

setup(
    name="hpdm",
    version="0.1.0",
    description=(
        "Hierarchical Patch Diffusion Models (Skorokhodov et al., CVPR 2024): "
        "pixel-space patch diffusion for high-resolution video."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    # 3.11: the only Python CI runs (the torch build at hand is for 3.11).
    python_requires=">=3.11",
    # The gin tree ships inside the package as hpdm/configs (gin_utils.GIN_ROOT finds it), so an
    # installed wheel resolves --gin_file=quickstart.gin from any directory.
    packages=find_packages(include=["hpdm", "hpdm.*"]) + ["hpdm.configs"],
    package_dir={"hpdm.configs": "gin"},
    package_data={"hpdm.configs": ["*.gin", "*/*.gin"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={
        "console_scripts": [
            "hpdm-train=hpdm.cli.train:run",
            "hpdm-sample=hpdm.cli.sample:run",
            "hpdm-eval=hpdm.cli.evaluate:run",
            "hpdm-bench=hpdm.cli.bench:run",
            "hpdm-diagnose=hpdm.cli.diagnose:run",
        ]
    },
)
