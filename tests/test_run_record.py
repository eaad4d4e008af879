"""Run records (``hpdm.trainers.run_record``): what produced a run directory, beside ``config.gin``.

A tiny ``hpdm-train`` run writes ``run_record.json`` with versions, commit, command line and world
size; its resume appends a second entry and keeps the first. ``hpdm-eval`` puts a record in its
result. The git commit is ``None`` rather than an error wherever git cannot tell it."""

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata

import pytest

from hpdm.trainers import run_record
from eval_helpers import detectors, random_videos, run_eval, write_folder  # noqa: F401 (a fixture)
from train_helpers import REPO, run, train_cmd, write_gin

RECORD_KEYS = {"time", "hpdm_version", "git_commit", "git_dirty", "python", "packages", "argv", "world_size"}
PACKAGE_KEYS = {"torch", "transformers", "torchdata", "gin-config", "opencv", "numpy"}


def _expected_commit():
    """What the record should say for this checkout: HEAD when git reads it, None otherwise."""
    if shutil.which("git") is None or not os.path.exists(os.path.join(REPO, ".git")):
        return None
    proc = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _check_record(record, world_size=1):
    import hpdm

    assert RECORD_KEYS <= set(record)
    assert record["hpdm_version"] == hpdm.__version__
    assert set(record["packages"]) == PACKAGE_KEYS
    assert record["packages"]["torch"] == metadata.version("torch")
    assert record["packages"]["numpy"] == metadata.version("numpy")
    assert record["packages"]["torchdata"] == metadata.version("torchdata")
    assert record["packages"]["gin-config"] == metadata.version("gin-config")
    assert record["packages"]["opencv"] is not None
    assert record["world_size"] == world_size
    assert record["git_commit"] == _expected_commit()
    assert (record["git_dirty"] is None) == (record["git_commit"] is None)


@pytest.mark.slow
def test_training_writes_a_record_and_a_resume_appends_one(tmp_path):
    gin_file = write_gin(tmp_path)
    work = tmp_path / "w"
    first_cmd = train_cmd(gin_file, work, "TRAIN_STEPS=2")
    run(first_cmd)
    path = work / run_record.RECORD_FILE
    assert (work / "config.gin").is_file() and path.is_file()
    with open(path) as f:
        records = json.load(f)
    assert isinstance(records, list) and len(records) == 1
    first = records[0]
    _check_record(first)
    assert first["start_step"] == 0
    assert first["argv"][1:] == first_cmd[3:]  # argv[0] is the module's file under `python -m`
    assert first["argv"][0].endswith(os.path.join("hpdm", "cli", "train.py"))

    # Resumed from step 2 with a longer schedule: the first record stays as it was.
    resume_cmd = train_cmd(gin_file, work, "TRAIN_STEPS=4", extra_flags=["--allow_config_override"])
    _, _, err = run(resume_cmd)
    assert "Resumed from" in err
    records = run_record.read(str(work))
    assert len(records) == 2 and records[0] == first
    _check_record(records[1])
    assert records[1]["start_step"] == 2 and records[1]["argv"][-1] == "--allow_config_override"


def test_evaluation_result_carries_a_record(tmp_path, detectors, capsys):  # noqa: F811 (the fixture)
    i3d, _ = detectors
    real, fake = str(tmp_path / "real"), str(tmp_path / "fake")
    write_folder(real, random_videos(0, 4, frames=8))
    write_folder(fake, random_videos(1, 4, frames=8))
    result = run_eval([f"--detector={i3d}", "--num_frames=8", f"--real_dir={real}", f"--fake_dir={fake}",
                       "--nocache_real_stats"], capsys)
    _check_record(result["run_record"])
    assert result["run_record"]["argv"] == sys.argv


def test_no_git_means_no_commit_not_an_error(tmp_path, monkeypatch):
    # Not a checkout (an installed package): git is not even asked.
    assert run_record.git_state(str(tmp_path)) == (None, None)
    # A checkout, but no git executable on PATH.
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert run_record.git_state(REPO) == (None, None)
    assert run_record.collect()["git_commit"] is None


@pytest.mark.skipif(shutil.which("git") is None, reason="needs a git executable")
@pytest.mark.slow
def test_a_repository_around_an_installed_package_is_not_its_commit(tmp_path):
    outer = tmp_path / "project"
    site = outer / "venv" / "site-packages"
    (site / "hpdm").mkdir(parents=True)
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    subprocess.run(["git", "init", "-q", str(outer)], check=True, env=env)
    (outer / "README").write_text("x\n")
    subprocess.run(["git", "-C", str(outer), "add", "README"], check=True, env=env)
    subprocess.run(["git", "-C", str(outer), "commit", "-qm", "x"], check=True, env=env)
    commit, dirty = run_record.git_state(str(outer))
    assert len(commit) == 40 and dirty is False
    (outer / "README").write_text("y\n")
    assert run_record.git_state(str(outer))[1] is True
    # hpdm installed inside that repository: the project's commit is not hpdm's.
    assert run_record.git_state(str(site)) == (None, None)


def test_records_accumulate_and_an_unreadable_file_is_kept(tmp_path):
    assert run_record.read(str(tmp_path)) == []
    run_record.append(str(tmp_path), {"n": 1})
    run_record.append(str(tmp_path), {"n": 2})
    assert run_record.read(str(tmp_path)) == [{"n": 1}, {"n": 2}]
    path = tmp_path / run_record.RECORD_FILE
    path.write_text('{"not": "a list"}')
    run_record.append(str(tmp_path), {"n": 3})
    assert (tmp_path / (run_record.RECORD_FILE + ".unreadable")).read_text() == '{"not": "a list"}'
    path.write_text("[{truncated")
    run_record.append(str(tmp_path), {"n": 4})
    assert (tmp_path / (run_record.RECORD_FILE + ".unreadable.1")).read_text() == "[{truncated"
    assert run_record.read(str(tmp_path)) == [{"n": 4}]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
