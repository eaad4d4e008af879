"""A built wheel, installed (not editable) in a fresh environment, trains from any directory.

The configs ship inside the wheel (``hpdm/configs``); the environment borrows this one's third-party
packages through a path file, which adds their directory but none of the path files in it, so this
checkout's editable hpdm stays invisible there.
"""

import os
import shutil
import site
import subprocess
import sys
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.slow


def _run(cmd, **kwargs):
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    base = tmp_path_factory.mktemp("wheel")
    # A copy of what the wheel is built from: a build/ folder left in the checkout by an earlier
    # build could carry modules that no longer exist into it.
    source = base / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("hpdm", "gin"):
        shutil.copytree(os.path.join(ROOT, name), source / name, ignore=ignore)
    for name in ("setup.py", "README.md"):
        shutil.copy(os.path.join(ROOT, name), source / name)
    dist = base / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)],
         cwd=str(base))
    (wheel,) = [p for p in dist.iterdir() if p.suffix == ".whl"]
    env_dir = base / "env"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)])
    python = env_dir / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}
    with open(os.path.join(purelib, "borrowed_dependencies.pth"), "w") as f:
        f.write("\n".join(sorted(ours)) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)])
    return env_dir


def test_the_installed_package_is_the_wheel_not_this_checkout(installed, tmp_path):
    out = _run([str(installed / "bin" / "python"), "-c", "import hpdm, hpdm.gin_utils as g; print(hpdm.__file__); print(g.GIN_ROOT)"],
               cwd=str(tmp_path)).stdout.split()
    assert not out[0].startswith(ROOT) and out[1].endswith(os.path.join("hpdm", "configs"))


@pytest.mark.parametrize("name", ["quickstart.gin", "gin/quickstart.gin"])
def test_hpdm_train_from_another_directory(installed, tmp_path, name):
    workdir = tmp_path / "run"
    _run([
        str(installed / "bin" / "hpdm-train"), f"--gin_file={name}", f"--workdir={workdir}",
        "--gin_param=TRAIN_STEPS=2", "--gin_param=SAMPLE_EVERY=0", "--gin_param=BATCH_SIZE=2",
    ], cwd=str(tmp_path), env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert sorted(os.listdir(workdir / "checkpoints")) == ["step_00000002"]
