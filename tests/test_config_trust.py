"""Saved configs run no foreign code: a ``config.gin`` in a workdir or export that imports a module
from outside hpdm is refused naming the line (the module is never imported), unless trusted."""

import os
import subprocess
import sys
import re
import uuid

import pytest
from safetensors.torch import save_file

from hpdm import gin_utils
from hpdm.core import HPDM, export_model, load_pretrained

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(
    target_res=(2, 16, 16), patch_res=(2, 4, 4), token_size=(1, 2, 2), token_dim=16, latent_dim=16,
    num_latents=4, num_blocks=3, latent_layers_per_block=1, head_dim=8,
)


@pytest.fixture(autouse=True)
def _untrusted_by_default(monkeypatch):
    """``hpdm-sample`` sets the process-wide trust; no test may leak it into another."""
    monkeypatch.setattr(gin_utils, "_trust_default", False)


@pytest.fixture
def sentinel(tmp_path, monkeypatch):
    """A module (unique name, importable from tmp_path) that writes a file when imported."""
    name = f"hpdm_sentinel_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / f"{name}.ran"
    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "modules"))
    yield name, marker
    sys.modules.pop(name, None)


def _export(root, first_lines=()) -> str:
    """An export directory: ``config.gin`` (``first_lines`` on top) and the tiny model's weights."""
    os.makedirs(root)
    model = HPDM(**TINY)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(root, "model.safetensors"))
    bindings = [f"HPDM.{k} = {tuple(v) if isinstance(v, tuple) else v}" for k, v in TINY.items()]
    with open(os.path.join(root, "config.gin"), "w") as f:
        f.write("\n".join([*first_lines, "import hpdm.core", *bindings, ""]))
    return str(root)


@pytest.mark.slow
def test_foreign_import_refused_naming_the_line_then_trusted(tmp_path, sentinel):
    name, marker = sentinel
    export = _export(tmp_path / "export", ["# shared by someone", f"import {name}"])
    with pytest.raises(gin_utils.UntrustedConfigError, match=rf"config.gin:2: 'import {name}' imports .*outside hpdm"):
        load_pretrained(export)
    assert not marker.exists()
    with pytest.raises(gin_utils.UntrustedConfigError, match="--trust_config"):
        gin_utils.check_saved_config(os.path.join(export, "config.gin"))  # what hpdm-eval calls
    with pytest.raises(gin_utils.UntrustedConfigError, match=f"import {name}"):
        export_model(export, str(tmp_path / "again"))
    assert not marker.exists() and not (tmp_path / "again").exists()

    model, _ = load_pretrained(export, trust_config=True)
    assert marker.exists() and isinstance(model, HPDM)


def test_from_import_dynamic_registration_and_outside_include_refused(tmp_path, sentinel):
    name, marker = sentinel
    outside = tmp_path / "outside.gin"
    outside.write_text(f"import {name}\n")
    lines = [f"from {name} import thing", "from __gin__ import dynamic_registration", f"include {str(outside)!r}"]
    for number, line in enumerate(lines, 1):
        with pytest.raises(gin_utils.UntrustedConfigError, match=re.escape(f"config.gin:1: {line!r}")):
            load_pretrained(_export(tmp_path / f"export{number}", [line]))
    assert not marker.exists()


def test_gin_tree_include_and_hpdm_imports_are_allowed(tmp_path):
    """The shipped exports load untouched; a gin-tree include is pinned to the tree's own file."""
    for export in ("quickstart", "quickstart_run7"):
        path = os.path.join(REPO, "pretrained", export, "config.gin")
        text = gin_utils.read_config(path)
        assert gin_utils.vet_config(text, path) == text
    vetted = gin_utils.vet_config("include 'models/quickstart.gin'  # the tiny model\n", "config.gin")
    assert vetted == f"include {os.path.join(os.path.realpath(gin_utils.GIN_ROOT), 'models', 'quickstart.gin')!r}\n"


@pytest.mark.slow
def test_hpdm_train_refuses_then_trusts_a_saved_config(tmp_path, sentinel):
    name, marker = sentinel
    work = tmp_path / "work"
    work.mkdir()
    # An unknown binding after the import: the trusted run stops right after parsing, not training.
    (work / "config.gin").write_text(f"import {name}\nTrainer.no_such_argument = 1\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "modules"), REPO]), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "hpdm.cli.train", f"--workdir={work}"]
    refused = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and f"config.gin:1: 'import {name}'" in refused.stderr, refused.stderr[-2000:]
    assert not marker.exists()
    trusted = subprocess.run([*cmd, "--trust_config"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert trusted.returncode != 0 and "no_such_argument" in trusted.stderr, trusted.stderr[-2000:]
    assert marker.exists()


@pytest.mark.slow
def test_hpdm_sample_refuses_then_exports_with_trust_config(tmp_path, sentinel):
    from hpdm.cli import sample
    from binaries import binary_flags

    name, marker = sentinel
    export = _export(tmp_path / "export", [f"import {name}"])

    def run(*args):
        with binary_flags(sample.define_flags, ["hpdm-sample", f"--workdir={export}", *args]):
            sample.main([])

    with pytest.raises(gin_utils.UntrustedConfigError, match=f"config.gin:1: 'import {name}'"):
        run(f"--output_dir={tmp_path / 'out'}", "--num_videos=1")
    with pytest.raises(gin_utils.UntrustedConfigError):
        run(f"--export_dir={tmp_path / 'copy'}")
    assert not marker.exists() and not (tmp_path / "out").exists()
    run(f"--export_dir={tmp_path / 'copy'}", "--trust_config")
    assert sorted(os.listdir(tmp_path / "copy")) == ["config.gin", "model.safetensors"]
    assert not marker.exists()  # exporting copies the config; it does not run it


@pytest.mark.slow
def test_hpdm_eval_refuses_a_foreign_workdir_config_before_any_work(tmp_path, sentinel):
    name, marker = sentinel
    export = _export(tmp_path / "run", [f"import {name}"])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, str(tmp_path / "modules")]), OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-m", "hpdm.cli.evaluate", f"--workdir={export}", "--detector=missing.pt", "--num_fake=1"],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode != 0 and f"import {name}" in done.stderr and "--trust_config" in done.stderr, done.stderr
    assert not marker.exists()
