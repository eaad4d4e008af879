"""The hpdm-train binary end to end on a tiny HPDM (CPU): exact resume after SIGKILL, TensorBoard
events, config and architecture checks, config overrides that take effect, checkpoint fallback,
non-finite loss handling, fine-tuning. Signals, locking and unreadable workdirs: test_recovery.py."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from train_helpers import flip_bit_in_payload
from train_helpers import assert_tree_equal, ckpt_dir, env, load_ckpt, run, train_cmd, write_gin, REPO


def _scalars(workdir, tag) -> dict:
    """``{step: value}`` of a TensorBoard scalar over every event file of a workdir."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(workdir), size_guidance={"scalars": 0})
    ea.Reload()
    return {e.step: e.value for e in ea.Scalars(tag)}


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(tmp_path):
    gin_file = write_gin(tmp_path)
    # The same command for both runs; the delay only gives the test time to kill mid-run.
    delay = {"step_delay": 0.4}
    full, killed = tmp_path / "full", tmp_path / "killed"
    run(train_cmd(gin_file, full, faults=delay))
    proc = subprocess.Popen(
        train_cmd(gin_file, killed, faults=delay), cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 180
        while not os.path.isdir(ckpt_dir(killed, 2)) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(0.6)  # now inside step 3 or 4
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not os.path.isdir(ckpt_dir(killed, 6))
    _, _, err = run(train_cmd(gin_file, killed, faults=delay))
    assert "Resumed from" in err
    a, b = load_ckpt(full, 6), load_ckpt(killed, 6)
    for x, y in zip(a[:2], b[:2]):
        assert set(x) == set(y)
        for k in x:
            assert torch.equal(x[k], y[k]), k
    assert_tree_equal(a[2]["optimizer"], b[2]["optimizer"], "optimizer")
    assert_tree_equal(a[2]["scheduler"], b[2]["scheduler"], "scheduler")
    assert a[2]["step"] == b[2]["step"] == 6
    # Running the finished command again is a no-op resume.
    _, _, err = run(train_cmd(gin_file, killed, faults=delay))
    assert "Nothing to do" in err


@pytest.mark.slow
def test_tensorboard_events_and_gif_samples(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    gin_file = write_gin(tmp_path, "SamplingSteps.num_steps = [2, 1]\nTrainer.num_samples = 1")
    work = tmp_path / "w"
    run(train_cmd(gin_file, work, "TRAIN_STEPS=2", "SAMPLE_EVERY=2"))
    ea = EventAccumulator(str(work), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    ea.Reload()
    scalars = set(ea.Tags()["scalars"])
    for tag in ("train/loss", "train/loss_level_0", "train/loss_level_1", "train/loss_level_2", "train/lr",
                "train/grad_norm", "speed/videos_per_s", "speed/patches_per_s", "train/skipped_steps"):
        assert tag in scalars, tag
    images = ea.Tags()["images"]
    assert images, "no GIF image summary"
    gif = ea.Images(images[0])[0]
    assert gif.encoded_image_string[:6] == b"GIF89a" and gif.step == 2
    assert os.path.isfile(os.path.join(str(work), "config.gin"))
    assert "config/text_summary" in ea.Tags()["tensors"]


@pytest.mark.slow
def test_sampler_bindings_reach_the_saved_config(tmp_path):
    """A run that never samples still records its sampler settings, so hpdm-sample uses them."""
    # The sampler's configurables must be registered for their bindings to be read back (gin skips
    # bindings of unknown configurables); alone, this test process would not have imported them.
    import hpdm.samplers  # noqa: F401
    from hpdm.core import load_pretrained
    from hpdm.trainers.config_diff import FULL_CONFIG_HEADER

    gin_file = write_gin(tmp_path, "SamplingSteps.num_steps = [3, 2]\nOverlapSampler.overlap = 'hw'")
    work = tmp_path / "w"
    run(train_cmd(gin_file, work, "TRAIN_STEPS=1", "SAMPLE_EVERY=0"))
    with open(os.path.join(str(work), "config.gin")) as f:
        saved = f.read()
    assert saved.startswith(FULL_CONFIG_HEADER)
    assert "SamplingSteps.num_steps = [3, 2]" in saved
    assert "OverlapSampler.overlap = 'hw'" in saved
    # A run saved by an earlier version (its operative config: no header, no sampler sections, the
    # trainer's retired fault-injection arguments) resumes without a config conflict, and its
    # config.gin becomes this version's; any other difference still conflicts.
    old = re.sub(r"# Parameters for (SamplingSteps|OverlapSampler):\n.*?\n\n", "", saved[len(FULL_CONFIG_HEADER) + 1 :], flags=re.S)
    old = old.replace("Trainer.train_steps", "Trainer.inject_signal = None\nTrainer.step_delay = 0.0\nTrainer.train_steps")
    assert "SamplingSteps.num_steps" not in old and "HPDM.token_dim" in old and "Trainer.step_delay" in old
    with open(os.path.join(str(work), "config.gin"), "w") as f:
        f.write(old)
    _, _, err = run(train_cmd(gin_file, work, "TRAIN_STEPS=1", "SAMPLE_EVERY=0"))
    assert "what this version records and the run's config predates" in err and "SamplingSteps.num_steps" in err
    with open(os.path.join(str(work), "config.gin")) as f:
        assert f.read() == saved
    code, _, err = run(train_cmd(gin_file, work, "TRAIN_STEPS=1", "SAMPLE_EVERY=0", "Lamb.lr=0.001"), check=False)
    assert code != 0 and "differs from the one saved" in err and "Lamb.lr" in err
    _, config = load_pretrained(str(work))
    assert config.query("SamplingSteps.num_steps") == [3, 2]
    assert config.query("OverlapSampler.overlap") == "hw"


@pytest.mark.slow
def test_bad_gin_binding_names_it(tmp_path):
    gin_file = write_gin(tmp_path)
    code, _, err = run(train_cmd(gin_file, tmp_path / "w", "Trainer.trian_steps=3"), check=False)
    assert code != 0 and "trian_steps" in err


@pytest.mark.slow
def test_config_conflict_override_and_architecture_mismatch(tmp_path):
    gin_file = write_gin(tmp_path)
    work = tmp_path / "w"
    run(train_cmd(gin_file, work, "TRAIN_STEPS=2"))
    code, _, err = run(train_cmd(gin_file, work, "TRAIN_STEPS=4"), check=False)
    assert code != 0 and "differs from the one saved" in err and "TRAIN_STEPS" in err
    # The workdir alone resumes with the saved config (nothing left to do at step 2 of 2).
    _, _, err = run([*train_cmd(gin_file, work)[:3], f"--workdir={work}"])
    assert "Nothing to do" in err
    # A longer run, another LR and warm-up: from the resumed step on, the run is what config.gin
    # says, i.e. what a run started with the new config does at steps 3 and 4 (LR, schedule state,
    # optimiser settings); the old schedule would have reached its end at step 2.
    new = ("TRAIN_STEPS=4", "Lamb.lr=0.002", "warmup_cosine.warmup_steps=3", "build_optimizer.weight_decay=0.02")
    _, _, err = run(train_cmd(gin_file, work, *new, extra_flags=["--allow_config_override"]))
    assert "LR schedule (4 steps) from the new config" in err
    fresh = tmp_path / "fresh"
    run(train_cmd(gin_file, fresh, *new))
    resumed, expected = load_ckpt(work, 4)[2], load_ckpt(fresh, 4)[2]
    assert resumed["step"] == 4
    assert_tree_equal(expected["scheduler"], resumed["scheduler"], "scheduler")
    assert_tree_equal(expected["optimizer"]["param_groups"], resumed["optimizer"]["param_groups"], "param_groups")
    lr, fresh_lr = _scalars(work, "train/lr"), _scalars(fresh, "train/lr")
    assert [lr[s] for s in (3, 4)] == [fresh_lr[s] for s in (3, 4)]
    with open(os.path.join(str(work), "config.gin")) as a, open(os.path.join(str(fresh), "config.gin")) as b:
        assert a.read() == b.read()
    code, _, err = run(
        train_cmd(gin_file, work, "TRAIN_STEPS=4", "HPDM.token_dim=24", extra_flags=["--allow_config_override"]),
        check=False,
    )
    assert code != 0 and "does not match the model's architecture" in err and "tokenizer.proj.weight" in err


@pytest.mark.slow
def test_corrupt_newest_checkpoint_falls_back(tmp_path):
    """A flipped bit inside a tensor of the newest checkpoint (a file that still parses) is caught
    by its checksum; the run resumes from the one before and ends with the same weights."""
    gin_file = write_gin(tmp_path)
    work = tmp_path / "w"
    run(train_cmd(gin_file, work, "TRAIN_STEPS=4"))
    reference = load_ckpt(work, 4)
    flip_bit_in_payload(os.path.join(ckpt_dir(work, 4), "model.safetensors"))
    _, _, err = run(train_cmd(gin_file, work, "TRAIN_STEPS=4"))
    assert "model.safetensors does not match its sha256" in err and "step_00000002 at step 2" in err
    again = load_ckpt(work, 4)
    for k in reference[0]:
        assert torch.equal(reference[0][k], again[0][k]), k


@pytest.mark.slow
def test_nonfinite_loss_skipped_then_clean_stop(tmp_path):
    gin_file = write_gin(tmp_path)
    one = tmp_path / "one"
    run(train_cmd(gin_file, one, "TRAIN_STEPS=3", faults={"nan_at_steps": [1]}))
    assert load_ckpt(one, 3)[2]["skipped_steps"] == 1

    stop = tmp_path / "stop"
    code, _, err = run(
        train_cmd(gin_file, stop, "CHECKPOINT_EVERY=1", "Trainer.max_consecutive_skips=3",
                  faults={"nan_at_steps": [2, 3, 4]}),
        check=False,
    )
    assert code != 0 and "NonFiniteLossError" in err and "3 consecutive non-finite steps" in err
    from hpdm.trainers.checkpoint import latest_valid_checkpoint

    assert latest_valid_checkpoint(str(stop)) == ckpt_dir(stop, 4)
    good, last = load_ckpt(stop, 2), load_ckpt(stop, 4)
    assert last[2]["skipped_steps"] == 2
    for k in good[0]:
        assert torch.equal(good[0][k], last[0][k]), k  # skipped steps never touched the weights


@pytest.mark.slow
def test_finetune_three_levels_from_one_level(tmp_path):
    gin_file = write_gin(tmp_path)
    small = tmp_path / "small"
    run(train_cmd(gin_file, small, "TRAIN_STEPS=1", "TARGET_RES=(1, 8, 8)"))
    big = tmp_path / "big"
    _, _, err = run(train_cmd(gin_file, big, "TRAIN_STEPS=1", f"Trainer.init_from='{small}'", "Trainer.init_from_ema=False"))
    assert "tensors loaded" in err
    src = load_file(os.path.join(ckpt_dir(small, 1), "model.safetensors"))
    # Check the load itself (before any training step) in-process.
    import gin

    from hpdm import gin_utils
    from hpdm.core import HPDM
    from hpdm.trainers.checkpoint import load_matching

    with open(os.path.join(str(big), "config.gin")) as f:
        gin_utils.parse_text(f.read(), skip_unknown=True)
    torch.manual_seed(0)
    model = HPDM()
    assert model.num_levels == 3
    loaded, initialised = load_matching(model, src)
    sd = model.state_dict()
    for k in src:
        if k == "latents":
            assert torch.equal(sd[k][:1], src[k])
        else:
            assert torch.equal(sd[k], src[k]), k
    assert "latents[0:1]" in loaded and "latents[1:3]" in initialised
    gin.clear_config()


@pytest.mark.slow
def test_class_count_from_folder_data_trains_and_samples(tmp_path):
    """HPDM.num_classes unset: the model takes the folder's 3 classes, config.gin records them, the
    same command resumes without a config conflict and hpdm-sample rebuilds the model; a count that
    disagrees with the data names the binding to fix."""
    from data_fixtures import make_video_tree
    from train_helpers import TINY_GIN

    make_video_tree(str(tmp_path / "videos"))
    folder = f"build_train_loader.source = @VideoFolder()\nVideoFolder.root = '{tmp_path / 'videos'}'\n"
    gin_file = tmp_path / "folder.gin"
    gin_file.write_text(TINY_GIN.replace("HPDM.num_classes = 9\n", "") + folder)
    work = tmp_path / "w"
    _, _, err = run(train_cmd(gin_file, work, "TRAIN_STEPS=2"))
    assert "matmul precision: float32 (CPU)" in err
    with open(os.path.join(str(work), "config.gin")) as f:
        assert "HPDM.num_classes = 3" in f.read()
    assert load_ckpt(work, 2)[0]["class_embed.table.weight"].shape[0] == 4  # 3 classes + the null class
    _, _, err = run(train_cmd(gin_file, work, "TRAIN_STEPS=2"))
    assert "Nothing to do" in err
    out = tmp_path / "out"
    run([sys.executable, "-m", "hpdm.cli.sample", f"--workdir={work}", f"--output_dir={out}", "--num_videos=1",
         "--class_label=2", "--gin_param=SamplingSteps.num_steps=[2, 1]"])
    assert os.path.isfile(os.path.join(str(out), "video_0000.npy"))

    code, _, err = run(train_cmd(gin_file, tmp_path / "nine", "TRAIN_STEPS=1", "HPDM.num_classes=9"), check=False)
    assert code != 0 and "the data has 3 classes but the model was built for 9" in err
    assert "HPDM.num_classes = 3" in err
