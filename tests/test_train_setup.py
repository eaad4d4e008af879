"""Trainer.setup and Trainer.sample on the tiny config: the TF32 switch, the seed's initial weights
with the loader built first, the class count from the data, and previews at the preview settings,
shared by the ranks."""

import os
import random

import gin
import numpy as np
import pytest
import torch

from hpdm import gin_utils
from train_helpers import write_gin


@pytest.fixture
def clean_state():
    """Restore what these tests change process-wide: gin, the TF32 flags, torch's thread count."""
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    gin.clear_config()
    yield
    gin.clear_config()
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
    torch.set_num_threads(threads)


def _global_rng() -> tuple:
    np_state = np.random.get_state()
    return torch.get_rng_state().clone(), np_state[1].copy(), np_state[2], random.getstate()


def test_set_matmul_precision_switch(clean_state):
    from hpdm.trainers.distributed import set_matmul_precision

    assert set_matmul_precision(torch.device("cpu"), tf32=False) == "float32 (CPU)"
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    set_matmul_precision(torch.device("cpu"), tf32=True)
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert set_matmul_precision(torch.device("cuda", 0), tf32=True) == "tf32 (CUDA)"


def test_loader_draws_nothing_from_the_global_rng(clean_state, tmp_path):
    """The trainer builds the loader before the model: it must leave the model's seeded draws alone."""
    from hpdm.data import build_train_loader

    gin_utils.parse([write_gin(tmp_path)])
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    before = _global_rng()
    loader = build_train_loader(batch_size=2, seed=0, rank=0, world_size=1)
    after = _global_rng()
    loader.close()
    assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    assert before[2:] == after[2:]


@pytest.mark.slow
def test_setup_tf32_off_initial_weights_and_preview_settings(clean_state, tmp_path):
    from hpdm.core import HPDM
    from hpdm.samplers import sample_videos
    from hpdm.trainers.loop import Trainer
    from hpdm.trainers.preview import preview_share
    from hpdm.trainers.rng import seed_everything

    gin_utils.parse(
        [write_gin(tmp_path)],
        [
            "set_matmul_precision.tf32 = False",
            "Trainer.num_samples = 3",
            "Trainer.preview_steps = [3, 2]",
            "Trainer.preview_overlap = ''",
            "SamplingSteps.num_steps = [5, 4, 4]",  # what hpdm-sample would use: not the preview's
        ],
    )
    calls = []

    def spy(model, num_videos, seed, cond=None, **options):
        calls.append({"num_videos": num_videos, "seed": seed, "cond": cond, **options})
        return sample_videos(model, num_videos, seed, cond=cond, **options)

    torch.backends.cuda.matmul.allow_tf32 = True
    trainer = Trainer(workdir=str(tmp_path / "w"), seed=0, sample_fn=spy)
    trainer.setup()
    try:
        assert not torch.backends.cuda.matmul.allow_tf32
        assert trainer.matmul_precision == "float32 (CPU)"
        with open(os.path.join(str(tmp_path / "w"), "config.gin")) as f:
            saved = f.read()
        assert "set_matmul_precision.tf32 = False" in saved and "Trainer.preview_steps = [3, 2]" in saved
        assert "SamplingSteps.num_steps = [5, 4, 4]" in saved

        # The loader is built before the model now; the seed's initial weights are unchanged.
        seed_everything(0)
        reference = HPDM().state_dict()
        for k, v in trainer.plain.state_dict().items():
            assert torch.equal(v, reference[k]), k

        trainer.sample()
        assert [c["num_videos"] for c in calls] == [1, 1, 1]
        assert [int(c["cond"]["label"]) for c in calls] == [0, 1, 2]
        assert len({c["seed"] for c in calls}) == 3
        for c in calls:
            schedule = c["level_schedule"]
            assert [schedule.level(l).num_steps for l in range(3)] == [3, 2, 2]
            assert c["overlap"] == ""
        assert preview_share(5, 1, 2) == [1, 3] and preview_share(1, 1, 2) == []
    finally:
        trainer.tb.close()
        trainer.loader.close()


@pytest.mark.slow
def test_preview_is_shared_by_the_ranks(tmp_path):
    """Two ranks (gloo on CPU): each samples its share of the previews, rank 0 logs all of them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from train_helpers import torchrun

    gin_file = write_gin(tmp_path, "Trainer.num_samples = 3\nTrainer.preview_steps = [1]\nTrainer.preview_overlap = ''")
    work = tmp_path / "w"
    err = torchrun(gin_file, work, "gin/mixins/ddp.gin", "TRAIN_STEPS=1", "SAMPLE_EVERY=1")
    assert "Preview at step 1: 3 videos sampled on 2 rank(s)" in err
    ea = EventAccumulator(str(work), size_guidance={"images": 0})
    ea.Reload()
    assert len(ea.Tags()["images"]) == 3  # one GIF summary per video


def test_num_classes_from_the_data(clean_state):
    """Unset or None takes the loader's count (and is bound, so config.gin records it); a bound
    count stays; a mismatch names the binding."""
    import types

    import hpdm.core  # noqa: F401  (registers HPDM with gin)
    from hpdm.trainers.classes import bind_num_classes_from_data, check_num_classes

    three, none = types.SimpleNamespace(num_classes=3), object()
    bind_num_classes_from_data(three)
    assert gin.query_parameter("HPDM.num_classes") == 3
    gin.clear_config()
    bind_num_classes_from_data(none)  # a loader without classes leaves HPDM's default
    with pytest.raises(ValueError):
        gin.query_parameter("HPDM.num_classes")
    gin.parse_config(["HPDM.num_classes = None"])
    with pytest.raises(ValueError, match="set HPDM.num_classes"):
        bind_num_classes_from_data(none)
    bind_num_classes_from_data(three)
    assert gin.query_parameter("HPDM.num_classes") == 3
    gin.clear_config()
    gin.parse_config(["HPDM.num_classes = 9"])
    bind_num_classes_from_data(three)
    assert gin.query_parameter("HPDM.num_classes") == 9
    with pytest.raises(ValueError, match=r"the data has 3 classes but the model was built for 9: set HPDM.num_classes = 3"):
        check_num_classes(three, types.SimpleNamespace(num_classes=9))
    check_num_classes(three, types.SimpleNamespace(num_classes=0))  # unconditional on labelled data is allowed


def _config(*lines: str, full: bool = True) -> str:
    from hpdm.trainers.config_diff import FULL_CONFIG_HEADER

    return "\n".join([FULL_CONFIG_HEADER] * full + list(lines) + [""])


def test_configs_are_compared_by_the_values_they_give_each_parameter():
    """A binding equal to the parameter's default is the same as none; any other value, bound on one
    side only or differently on both, is a difference, also through a macro."""
    import hpdm.core  # noqa: F401  (registers the configurables whose defaults are compared)
    import hpdm.trainers.loop  # noqa: F401
    from hpdm.trainers.config_diff import compare

    saved = _config("STEPS = 6", "HPDM.token_dim = 16", "Trainer.log_every = 10", "Trainer.train_steps = %STEPS")
    assert compare(saved, saved).same_run
    assert compare(saved, _config("STEPS = 6", "HPDM.token_dim = 16", "Trainer.train_steps = %STEPS")).same_run
    for current, named in [
        (_config("STEPS = 7", "HPDM.token_dim = 16", "Trainer.train_steps = %STEPS"), "-STEPS = 6"),
        (_config("STEPS = 6", "Trainer.train_steps = %STEPS"), "-HPDM.token_dim = 16"),
        (saved + "EMA.warmup = False\n", "+EMA.warmup = False"),
    ]:
        diff = compare(saved, current)
        assert not diff.same_run and named in diff.changed, diff
        assert not diff.added


def test_an_operative_config_of_an_earlier_version_is_the_same_run():
    """Earlier versions saved gin's operative config (no header): every parameter of what had been
    called, defaults included, nothing of what had not, and arguments the trainer has since lost.
    Resuming such a run under the same settings is no conflict: bindings of parts it never recorded
    are additions and retired arguments are left out; a changed value still conflicts."""
    import hpdm.core  # noqa: F401
    import hpdm.samplers  # noqa: F401
    import hpdm.trainers.loop  # noqa: F401
    from hpdm.trainers.config_diff import compare

    saved = _config(
        "# Parameters for HPDM:",
        "HPDM.channels = 3",
        "HPDM.token_dim = 16",
        "",
        "# Parameters for Trainer:",
        "Trainer.inject_signal = None",
        "Trainer.preview_steps = None",
        "Trainer.step_delay = 0.0",
        "Trainer.train_steps = 6",
        full=False,
    )
    current = _config(
        "HPDM.token_dim = 16",
        "SamplingSteps.num_steps = [3, 2]",
        "set_matmul_precision.tf32 = False",
        "Trainer.train_steps = 6",
    )
    diff = compare(saved, current)
    assert diff.same_run, diff.changed
    assert diff.added == ["SamplingSteps.num_steps = [3, 2]", "set_matmul_precision.tf32 = False"]
    assert diff.retired == ["Trainer.inject_signal = None", "Trainer.step_delay = 0.0"]
    # What the old config recorded, at its default then, set to something else now is a change.
    diff = compare(saved, current + "Trainer.preview_steps = [2]\n")
    assert diff.changed == ["-Trainer.preview_steps = None", "+Trainer.preview_steps = [2]"]
    assert not compare(saved.replace("= 6", "= 7"), current).same_run
