"""``hpdm.HPDMPipeline`` and ``hpdm.save_video``: the README's five lines on the shipped model, sampler
defaults from the saved config, workdirs, exports with a model card, Hub repo ids offline, progress."""

import io
import os
import re
import subprocess
import sys

import gin
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import hpdm
from hpdm.core import HPDM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(
    target_res=(2, 16, 16), patch_res=(2, 4, 4), token_size=(1, 2, 2), token_dim=16, latent_dim=16,
    num_latents=4, num_blocks=3, latent_layers_per_block=1, head_dim=8,
)
FEW = dict(num_steps=[1, 1, 1], overlap="", progress=False)


def _state(seed: int = 0, **overrides) -> dict:
    """Weights of a tiny HPDM whose outputs depend on its inputs (the detokenizer starts at zero)."""
    torch.manual_seed(seed)
    # Every argument a test's config binds is explicit: an earlier load leaves its gin config bound.
    model = HPDM(**{"num_classes": 0, "text_dim": 0, **TINY, **overrides})
    torch.nn.init.normal_(model.detokenizer.proj.weight, std=0.2)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def _config(extra=(), **overrides) -> str:
    bindings = [f"HPDM.{k} = {v!r}" for k, v in {**TINY, **overrides}.items()]
    return "\n".join(["import hpdm.core", *bindings, *extra, ""])


def _export(root, extra=(), seed=0, **overrides) -> str:
    """An export directory (config.gin + model.safetensors) of a tiny HPDM."""
    os.makedirs(root)
    save_file(_state(seed, **overrides), os.path.join(root, "model.safetensors"))
    with open(os.path.join(root, "config.gin"), "w") as f:
        f.write(_config(extra, **overrides))
    return str(root)


def _readme_python_section() -> str:
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = readme.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def _assert_same_up_to_rounding(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal uint8 videos but for a few values off by one (float rounding of other batch shapes)."""
    diff = (a.int() - b.int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-4, f"{int((diff > 0).sum())} values differ"


def test_readme_five_lines_on_the_shipped_model(tmp_path, monkeypatch):
    code = _readme_python_section()
    lines = code.strip().splitlines()
    assert len(lines) == 5, code
    os.symlink(os.path.join(ROOT, "pretrained"), tmp_path / "pretrained")  # the lines name it relatively
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    videos = scope["videos"]
    assert videos.dtype == torch.uint8 and tuple(videos.shape) == (2, 16, 64, 64, 3)
    written = [name for name in os.listdir(tmp_path) if name.endswith(".mp4")]
    assert len(written) == 1 and os.path.getsize(tmp_path / written[0]) > 0
    # The README's call samples both videos in one batch (default batch_size 8); one at a time, the
    # same seed gives the same videos: the same noise and labels, and pixels equal up to the rounding
    # of batched kernels (a matmul of one row rounds differently from one of two: on 2 CPU cores 7
    # of the 393,216 values differ, by 1).
    (call,) = [line for line in lines if "= pipe(" in line]
    exec(compile(call.replace("pipe(", "pipe(batch_size=1, ", 1), "README.md", "exec"), scope)
    _assert_same_up_to_rounding(scope["videos"], videos)


def test_defaults_are_the_saved_sampler_settings(tmp_path):
    extra = ["SamplingSteps.num_steps = [3, 2, 1]", "OverlapSampler.overlap = 'h'", "OverlapSampler.tile_batch_size = 5"]
    pipe = hpdm.HPDMPipeline.from_pretrained(_export(tmp_path / "m", extra, num_classes=3), "cpu")
    assert pipe.defaults.overlap == "h" and pipe.defaults.tile_batch_size == 5
    gin.clear_config()  # what loading another model does: the pipeline keeps its own settings
    seen = {}
    pipe(num_videos=1, progress=lambda info: seen.setdefault(info["level"], (info["num_steps"], info["tiles"])))
    assert seen == {0: (3, 1), 1: (2, 6), 2: (1, 28)}  # tiles: 50% overlap on h only (3 x 2 and 7 x 4)
    seen.clear()
    pipe(num_videos=1, num_steps=[2, 1, 1], overlap="", progress=lambda info: seen.setdefault(info["level"], (info["num_steps"], info["tiles"])))
    assert seen == {0: (2, 1), 1: (1, 4), 2: (1, 16)}
    with pytest.raises(ValueError, match=r"one count >= 1 per pyramid level \(3\)"):
        pipe(num_steps=[2, 2])
    with pytest.raises(ValueError, match="labels or prompts, not both"):
        pipe(labels=[0], prompts=["a"])
    with pytest.raises(ValueError, match="2 labels for num_videos=3"):
        pipe(labels=[0, 1], num_videos=3)
    with pytest.raises(ValueError, match="model is class-conditional"):
        pipe(prompts=["a red ball"])


@pytest.mark.slow
def test_workdir_newest_checkpoint_and_hpdm_sample_use_the_same_videos(tmp_path):
    workdir = tmp_path / "run"
    for step, seeds in ((1, (0, 1)), (2, (2, 3))):
        ckpt = workdir / "checkpoints" / f"step_{step:08d}"
        os.makedirs(ckpt)
        save_file(_state(seeds[0], num_classes=3), str(ckpt / "ema.safetensors"))
        save_file(_state(seeds[1], num_classes=3), str(ckpt / "model.safetensors"))
    (workdir / "config.gin").write_text(_config(["Trainer.train_steps = 10"], num_classes=3))
    for use_ema, seed in ((True, 2), (False, 3)):
        pipe = hpdm.HPDMPipeline.from_pretrained(str(workdir), "cpu", use_ema=use_ema)
        for name, tensor in _state(seed, num_classes=3).items():
            assert torch.equal(pipe.model.state_dict()[name], tensor), name
    videos = pipe(num_videos=2, seed=3, **FEW)  # labels drawn from the seed, one per video

    from binaries import binary_flags
    from hpdm.cli import sample

    with binary_flags(sample.define_flags, [
        "hpdm-sample", f"--workdir={workdir}", f"--output_dir={tmp_path}/out", "--num_videos=2", "--seed=3",
        "--nouse_ema", "--batch_size=2", "--overlap=", "--gin_param=SamplingSteps.num_steps=[1, 1, 1]",
    ]):
        sample.main([])
    for i in range(2):
        np.testing.assert_array_equal(np.load(tmp_path / "out" / f"video_{i:04d}.npy"), videos[i].numpy())


def test_save_pretrained_writes_an_export_with_a_model_card(tmp_path):
    pipe = hpdm.HPDMPipeline.from_pretrained(
        _export(tmp_path / "m", num_classes=3), "cpu", bindings=["SamplingSteps.num_steps = [2, 1, 1]"]
    )
    out = pipe.save_pretrained(str(tmp_path / "export"))
    assert sorted(os.listdir(out)) == ["README.md", "config.gin", "model.safetensors"]
    card = open(os.path.join(out, "README.md"), encoding="utf-8").read()
    params = sum(p.numel() for p in pipe.model.parameters())
    for text in ("library_name: hpdm", "2x4x4 -> 2x8x8 -> 2x16x16", f"| parameters | {params:,} |",
                 "class labels 0-2 (3 classes)", "| 0 | 2x4x4 | heun | 2 |", "| 2 | 2x16x16 | euler | 1 |",
                 "HPDMPipeline.from_pretrained", "videos = pipe(labels=[0], seed=0)"):
        assert text in card, text
    again = hpdm.HPDMPipeline.from_pretrained(out, "cpu")
    assert again.defaults.level_schedule.num_steps == [2, 1, 1]  # the load-time bindings travel along
    saved = load_file(os.path.join(out, "model.safetensors"))
    assert set(saved) == set(pipe.model.state_dict())
    assert all(torch.equal(saved[k], v) for k, v in again.model.state_dict().items())


def _hub_cache(root, repo_id: str, files: str) -> str:
    """A Hugging Face Hub cache holding one snapshot of ``repo_id`` (what a download leaves behind)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = os.path.join(root, "models--" + repo_id.replace("/", "--"))
    os.makedirs(os.path.join(repo, "refs"))
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write(commit)
    snapshot = os.path.join(repo, "snapshots", commit)
    os.makedirs(snapshot)
    for name in os.listdir(files):
        os.link(os.path.join(files, name), os.path.join(snapshot, name))
    return str(root)


@pytest.mark.slow
def test_hub_repo_id_resolves_offline_from_the_local_cache(tmp_path):
    cache = _hub_cache(tmp_path / "hub", "hpdm-tests/tiny", _export(tmp_path / "m", num_classes=3))
    script = "\n".join([
        "import hpdm",
        "pipe = hpdm.HPDMPipeline.from_pretrained('hpdm-tests/tiny', 'cpu')",
        "print('classes', pipe.model.num_classes, tuple(pipe(labels=[2], num_steps=[1, 1, 1], overlap='').shape))",
        "try:",
        "    hpdm.HPDMPipeline.from_pretrained('hpdm-tests/absent', 'cpu')",
        "except FileNotFoundError as err:",
        "    print('absent:', err)",
    ])
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=cache, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "classes 3 (1, 2, 16, 16, 3)" in proc.stdout
    assert "absent: 'hpdm-tests/absent' is neither a local directory nor a model the Hugging Face Hub resolves" in proc.stdout


def test_missing_optional_packages_name_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r'pip install "hpdm\[hub\]"'):
        hpdm.HPDMPipeline.from_pretrained("hpdm-tests/tiny")
    extra = ["import hpdm.trainers.text", "TextEncoder.name_or_path = 'some-t5'"]
    pipe = hpdm.HPDMPipeline.from_pretrained(_export(tmp_path / "t2v", extra, text_dim=16), "cpu")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r'pip install "hpdm\[text\]"'):
        pipe(prompts=["a red ball"], **FEW)


def test_prompts_go_through_the_runs_text_encoder(tmp_path):
    from hpdm.trainers.text import make_tiny_t5

    t5 = make_tiny_t5(str(tmp_path / "t5"), d_model=16)
    extra = ["import hpdm.trainers.text", f"TextEncoder.name_or_path = {t5!r}", "TextEncoder.device = 'cpu'"]
    pipe = hpdm.HPDMPipeline.from_pretrained(_export(tmp_path / "t2v", extra, text_dim=16), "cpu")
    hpdm.HPDMPipeline.from_pretrained(_export(tmp_path / "other", num_classes=3), "cpu")  # replaces gin's config
    videos = pipe(prompts=["a red ball", "a blue cube"], seed=1, **FEW)
    assert tuple(videos.shape) == (2, 2, 16, 16, 3)
    _assert_same_up_to_rounding(pipe(prompts="a red ball", seed=1, **FEW)[0], videos[0])  # video 0 alone


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_a_bar_on_a_terminal_and_log_lines_elsewhere(tmp_path, monkeypatch, caplog):
    import logging

    pipe = hpdm.HPDMPipeline.from_pretrained(_export(tmp_path / "m"), "cpu")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    pipe(num_videos=2, num_steps=[2, 2, 2], overlap="")
    monkeypatch.undo()
    drawn = terminal.getvalue()
    assert drawn.startswith("\rsampling |") and drawn.endswith("\n")
    assert "100% 84/84 | " in drawn and "tile steps/s | ETA " in drawn  # 2 videos x 2 steps x (1 + 4 + 16) tiles
    with caplog.at_level(logging.INFO, logger="absl"):
        pipe(num_videos=2, num_steps=[2, 2, 2], overlap="")
    lines = [r.getMessage() for r in caplog.records if "tiles/step" in r.getMessage()]
    assert any("level 3/3 | step 2/2 | 16 tiles/step" in line for line in lines)
    assert "ETA" in lines[-1] and "\r" not in caplog.text


def test_progress_bar_rate_eta_and_redraws():
    from hpdm.progress import ProgressBar

    now = [0.0]
    stream = _Terminal()
    bar = ProgressBar(10, "x", "steps", stream, min_interval=1.0, width=10, clock=lambda: now[0])
    bar.update(0)
    now[0] = 0.5
    bar.update(2)  # within min_interval: not drawn
    now[0] = 5.0
    bar.update(5, "half")
    assert stream.getvalue().split("\r")[-1] == "x |#####-----|  50% 5/10 | 1 steps/s | ETA 0:00:05 | half"
    now[0] = 5.1
    bar.update(10)  # the end is always drawn
    bar.close()
    last = stream.getvalue().split("\r")[-1]
    assert stream.getvalue().count("\r") == 3 and last.startswith("x |##########| 100% 10/10 | ")
    assert last.endswith("\n") and last.rstrip().endswith("| ETA 0:00:00")  # blanks pad over the longer line


def test_save_video_by_extension(tmp_path):
    video = torch.randint(0, 256, (3, 8, 8, 3), dtype=torch.uint8)
    for ext in ("mp4", "gif", "png", "npy"):
        path = hpdm.save_video(video, str(tmp_path / "sub" / f"v.{ext}"))
        assert os.path.getsize(path) > 0
    np.testing.assert_array_equal(np.load(tmp_path / "sub" / "v.npy"), video.numpy())
    with pytest.raises(ValueError, match=r"\.mp4, \.gif, \.png, \.npy; cannot tell a format from .*v\.avi"):
        hpdm.save_video(video, str(tmp_path / "v.avi"))
    with pytest.raises(ValueError, match=r"got a batch \(1, 3, 8, 8, 3\): index it"):
        hpdm.save_video(video[None], str(tmp_path / "v.mp4"))
    assert not os.path.exists(tmp_path / "v.avi") and not os.path.exists(tmp_path / "v.mp4")
