"""Dependencies: setup.py's floors parse and hold, torchdata sits behind one module, extras stay optional.

The same file runs in both CI stages: on the newest releases (scripts/test.sh) and on the floors
(scripts/test_minimum_versions.sh, with ``HPDM_EXPECT_FLOORS=1``, where every declared package must
be installed at exactly its floor, so that the stage cannot pass on other versions)."""

import ast
import glob
import importlib.util
import io
import os
import re
import subprocess
import sys
from importlib import metadata

import pytest

from train_helpers import REPO, env

_spec = importlib.util.spec_from_file_location("minimum_versions", os.path.join(REPO, "scripts", "minimum_versions.py"))
minimum_versions = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(minimum_versions)

# What is imported only on first use, inside the function that needs it (the "text" and "hub" extras).
OPTIONAL = {"transformers", "sentencepiece", "huggingface_hub"}


def _release(version: str) -> tuple:
    """``"2.13.0+cpu"`` -> ``(2, 13, 0)``: the numeric release, without local or pre-release parts."""
    match = re.match(r"^\s*v?(\d+(?:\.\d+)*)", version)
    assert match, f"cannot read the version {version!r}"
    return tuple(int(p) for p in match.group(1).split("."))


def _padded(a: tuple, b: tuple) -> tuple:
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)), b + (0,) * (width - len(b))


def _installed(name: str):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def test_floors_parse_and_the_extras_are_declared():
    declared = minimum_versions.declared()
    assert {"install", "text", "hub", "test"} <= set(declared)
    parsed = {extra: {minimum_versions.parse(r)[0]: minimum_versions.parse(r)[1:] for r in reqs} for extra, reqs in declared.items()}
    assert {"torch", "numpy", "opencv-python-headless", "torchdata", "gin-config"} <= set(parsed["install"])
    assert {"transformers", "sentencepiece"} <= set(parsed["text"]) and "huggingface_hub" in parsed["hub"]
    # torchdata is bounded to the tested series; nothing else needs an upper bound.
    bounded = {name for reqs in parsed.values() for name, (_, below) in reqs.items() if below is not None}
    assert bounded == {"torchdata"}
    assert _release(parsed["install"]["torchdata"][1]) == (0, 12)
    # The floors the code's own needs set (setup.py's comments say why each one).
    assert _release(parsed["install"]["opencv-python-headless"][0]) >= (4, 12)
    assert _release(parsed["text"]["transformers"][0]) >= (4, 56)
    assert _release(parsed["install"]["torch"][0]) >= (2, 6)
    names = [name for reqs in parsed.values() for name in reqs]
    assert len(names) == len(set(names)), "a package is declared twice"
    pins = minimum_versions.pins()
    assert len(pins) == len(names) and all("==" in p for p in pins)
    with pytest.raises(ValueError, match="name>=FLOOR"):
        minimum_versions.parse("torch")


def test_installed_versions_satisfy_the_declared_ranges():
    """Every core requirement is installed within its range; so is every extra's that is installed.
    In the minimum-versions stage each must be exactly at its floor."""
    at_floor = os.environ.get("HPDM_EXPECT_FLOORS") == "1"
    checked = []
    for extra, requirements in minimum_versions.declared().items():
        for requirement in requirements:
            name, floor, below = minimum_versions.parse(requirement)
            version = _installed(name)
            if version is None:
                assert extra != "install" and not at_floor, f"{name} ({requirement}) is not installed"
                continue
            have, low = _padded(_release(version), _release(floor))
            assert have >= low, f"{name} {version} is older than setup.py's floor {requirement}"
            if below is not None:
                have_b, high = _padded(_release(version), _release(below))
                assert have_b < high, f"{name} {version} is outside setup.py's range {requirement}"
            if at_floor:
                assert have == low, f"minimum-versions stage: {name} is {version}, not its floor {floor}"
            checked.append(name)
    assert "torch" in checked and "numpy" in checked
    assert sys.version_info >= (3, 11)  # python_requires


def test_the_floors_have_what_the_code_uses():
    """The APIs that set the floors exist in what is installed (the floors themselves in CI's
    minimum-versions stage)."""
    import cv2
    import torch.distributed.checkpoint.state_dict as dcp_state
    from torch.distributed.fsdp import fully_shard  # noqa: F401 - public FSDP2 (torch >= 2.6)

    assert hasattr(cv2, "Animation") and hasattr(cv2, "imencodeanimation") and hasattr(cv2, "imreadanimation")
    dcp_state.StateDictOptions(full_state_dict=True, cpu_offload=True, strict=False)  # save and resume use these
    # transformers' ``from_pretrained(..., dtype=)`` (4.56): tests/test_text.py loads a T5 with it.


def _imports(path: str):
    """``(module root, at module level)`` of every import statement of a Python file."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots = [node.module.split(".")[0]]
        else:
            continue
        for root in roots:
            yield root, id(node) in top


def _python_files():
    for folder in ("hpdm", "tests", "scripts"):
        yield from glob.glob(os.path.join(REPO, folder, "**", "*.py"), recursive=True)


def test_torchdata_is_imported_by_one_module_only():
    importers = sorted(
        os.path.relpath(path, REPO) for path in _python_files() if any(root == "torchdata" for root, _ in _imports(path))
    )
    assert importers == [os.path.join("hpdm", "data", "nodes.py")]


def test_optional_packages_are_imported_on_first_use_only():
    """hpdm imports the "text" and "hub" extras' packages inside the functions that need them."""
    found = []
    for path in glob.glob(os.path.join(REPO, "hpdm", "**", "*.py"), recursive=True):
        found += [f"{os.path.relpath(path, REPO)}: {root}" for root, top in _imports(path) if top and root in OPTIONAL]
    assert not found, f"module-level imports of optional packages: {found}"


@pytest.mark.slow
def test_core_modules_import_without_the_extras():
    """With transformers, sentencepiece and huggingface_hub missing, the trainer, the text encoder's
    module, the sampling and evaluation binaries and the pipeline still import (training, sampling
    and evaluation of class-conditional models need none of them). hpdm-train's own module is left
    out: its flags and hpdm-sample's cannot be defined in one process."""
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in sorted(OPTIONAL))
    modules = ["hpdm.data", "hpdm.trainers.loop", "hpdm.trainers.text", "hpdm.cli.sample", "hpdm.cli.evaluate",
               "hpdm.pipeline"]
    code = f"import importlib, sys; {blocked}; [importlib.import_module(m) for m in {modules!r}]; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_a_t5_tokenizer_of_only_spiece_model_loads_with_the_text_extra(tmp_path, monkeypatch):
    """A T5 checkpoint folder whose tokenizer is a SentencePiece model (as google/t5-v1_1-*
    ship it, without tokenizer.json) loads through ``TextEncoder``: the "text" extra's sentencepiece."""
    spm = pytest.importorskip("sentencepiece")
    pytest.importorskip("transformers")
    import json

    from hpdm.trainers.text import TextEncoder, make_tiny_t5

    folder = make_tiny_t5(str(tmp_path / "t5"), d_model=16)
    for name in os.listdir(folder):
        if name not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(folder, name))  # the ByT5 tokenizer's files
    captions = ["a red ball moving left", "a blue square moving right", "a green disc", "a yellow square"]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(captions * 20), model_writer=model, vocab_size=40, hard_vocab_limit=False, minloglevel=2
    )
    with open(os.path.join(folder, "spiece.model"), "wb") as f:
        f.write(model.getvalue())
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "T5Tokenizer", "extra_ids": 0}, f)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = TextEncoder(folder, max_length=16, device="cpu")
    ids = encoder.tokenizer(["a red ball"]).input_ids[0]
    assert encoder.tokenizer.decode(ids, skip_special_tokens=True) == "a red ball"
    emb, mask = encoder(["a red ball", "a blue square moving right"])
    assert emb.shape[0] == 2 and emb.shape[2] == 16 and mask.sum(1).tolist()[0] < mask.sum(1).tolist()[1]
