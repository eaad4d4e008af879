"""What clusters do to hpdm-train, end to end on the tiny config (CPU): SIGTERM mid-run, a second
run on the same workdir, a killed run's stale lock, a workdir whose checkpoints are all unreadable.
Each test injects the fault, checks what the operator sees, and that nothing is lost: the weights
after recovery are those of an uninterrupted run."""

import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest
import torch

from hpdm.trainers.checkpoint import list_checkpoints
from hpdm.trainers.lock import LOCK_FILE
from train_helpers import flip_bit_in_payload
from train_helpers import REPO, assert_tree_equal, ckpt_dir, env, load_ckpt, run, train_cmd, write_gin

pytestmark = pytest.mark.slow  # processes and/or the shipped weights


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted tiny run (6 steps): what every recovered run must end with."""
    tmp = tmp_path_factory.mktemp("reference")
    run(train_cmd(write_gin(tmp), tmp / "w"))
    return load_ckpt(tmp / "w", 6)


def assert_same_run(expected, got) -> None:
    for name, a, b in zip(("model", "ema"), expected[:2], got[:2]):
        assert set(a) == set(b), name
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}: {k}"
    for key in ("optimizer", "scheduler", "ema_updates", "step", "skipped_steps"):
        assert_tree_equal(expected[2][key], got[2][key], key)


class Background:
    """hpdm-train in the background; a thread drains its stderr so the pipe never fills. On exit
    the process is killed by its pid if still running (only the process this test started)."""

    def __init__(self, cmd):
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True)
        self._reader.start()

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, condition, timeout=180) -> None:
        deadline = time.time() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(f"the run ended before the test could act on it:\n{self.text[-4000:]}")
            if time.time() > deadline:
                raise AssertionError(f"timed out waiting:\n{self.text[-4000:]}")
            time.sleep(0.05)

    def finish(self, timeout=180) -> tuple[int, str]:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code, self.text

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _lock_holder(workdir) -> str:
    with open(os.path.join(str(workdir), LOCK_FILE)) as f:
        return f.read()


def test_sigterm_stops_after_the_step_with_a_checkpoint_and_resumes_exactly(tmp_path, reference):
    gin_file = write_gin(tmp_path)
    work = tmp_path / "w"
    # No periodic checkpoint before the last step: a checkpoint before it can only be the stop's.
    cmd = train_cmd(gin_file, work, "CHECKPOINT_EVERY=6", faults={"step_delay": 0.3})
    with Background(cmd) as training:
        training.wait_for(lambda: "step 2/6 |" in training.text)
        os.kill(training.proc.pid, signal.SIGTERM)
        code, err = training.finish()
    assert code == 143, err[-4000:]
    stopped = re.search(r"Stopped by SIGTERM after step (\d) of 6; checkpoint \S+step_0000000\1\. Run the same command", err)
    assert stopped and "Exiting with status 143 (128 + SIGTERM)" in err, err[-4000:]
    step = int(stopped.group(1))
    assert 2 <= step < 6 and [s for s, _ in list_checkpoints(str(work))] == [step]
    assert _lock_holder(work) == ""  # released on the way out

    _, _, err = run(cmd)
    assert f"step_{step:08d} at step {step}" in err
    assert_same_run(reference, load_ckpt(work, 6))


def test_second_run_is_refused_and_a_killed_runs_lock_is_taken_over(tmp_path, reference):
    gin_file = write_gin(tmp_path)
    work = tmp_path / "w"
    cmd = train_cmd(gin_file, work, faults={"step_delay": 0.4})
    with Background(cmd) as first:
        first.wait_for(lambda: os.path.isdir(ckpt_dir(work, 2)))
        # Frozen, it still holds the lock however long the second run takes to start.
        os.kill(first.proc.pid, signal.SIGSTOP)
        code, _, err = run(cmd, check=False)
        assert code != 0
        assert f"is in use by another run (pid {first.proc.pid} on host {socket.gethostname()}" in err
        os.kill(first.proc.pid, signal.SIGKILL)  # no chance to release anything
        first.proc.wait()
    assert f'"pid": {first.proc.pid}' in _lock_holder(work)

    _, _, err = run(cmd)
    assert "Taking over the stale lock" in err and f"pid {first.proc.pid}" in err and "no longer running" in err
    assert "Resumed from" in err
    assert_same_run(reference, load_ckpt(work, 6))
    assert _lock_holder(work) == ""


def test_all_checkpoints_unreadable_is_refused_unless_restarting_from_scratch(tmp_path):
    gin_file = write_gin(tmp_path)
    work = tmp_path / "w"
    params = ("TRAIN_STEPS=2", "CHECKPOINT_EVERY=1")
    cmd = train_cmd(gin_file, work, *params)
    run(cmd)
    original = load_ckpt(work, 2)
    with open(os.path.join(ckpt_dir(work, 2), "model.safetensors"), "r+b") as f:
        f.truncate(64)
    flip_bit_in_payload(os.path.join(ckpt_dir(work, 1), "ema.safetensors"))

    code, _, err = run(cmd, check=False)
    assert code != 0 and "every checkpoint in" in err and "is unreadable" in err
    assert "step_00000002: model.safetensors has 64 bytes" in err
    assert "step_00000001: ema.safetensors does not match its sha256" in err
    assert "--restart_from_scratch" in err
    assert sorted(os.listdir(os.path.join(str(work), "checkpoints"))) == ["step_00000001", "step_00000002"]

    _, _, err = run(train_cmd(gin_file, work, *params, extra_flags=["--restart_from_scratch"]))
    assert "set aside 2 unreadable checkpoints" in err and "Resumed from" not in err
    assert sorted(os.listdir(os.path.join(str(work), "checkpoints"))) == [
        "step_00000001", "step_00000001.unreadable", "step_00000002", "step_00000002.unreadable",
    ]
    assert_same_run(original, load_ckpt(work, 2))


def test_a_config_that_binds_the_retired_fault_arguments_still_parses(tmp_path):
    """Earlier versions recorded Trainer.inject_nan_at_steps / inject_signal / step_delay (test hooks,
    gone from the trainer) in every config.gin: such a workdir resumes from its saved config alone."""
    import gin

    from hpdm import gin_utils
    from hpdm.trainers.command import parse_config

    retired = "Trainer.inject_nan_at_steps = ()\nTrainer.inject_signal = None\nTrainer.step_delay = 0.0\n"
    (tmp_path / "config.gin").write_text(f"import hpdm.trainers.loop\n{retired}Trainer.train_steps = 6\n")
    with gin_utils.isolated_config():
        parse_config(str(tmp_path))
        assert gin.query_parameter("Trainer.train_steps") == 6
