"""``hpdm-eval`` protocols (paper Sec. 5, Appendix B): hpdm-sample folders read once per sample from the
``.npy``, reals centre-cropped like training clips, UCF-101 train split reals, and the recorded protocol
of folder and ``--workdir`` runs, checked against independent computations with stand-in detectors."""

import hashlib
import json
import os
import subprocess
import sys

import cv2
import gin
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import hpdm
import hpdm.core
from hpdm import metrics
from hpdm.core import HPDM
from hpdm.samplers.io import write_video_files
from hpdm.cli import evaluate
from binaries import binary_flags
from eval_helpers import (  # noqa: F401  (detectors: fixture)
    detectors,
    random_videos,
    reference_frechet,
    run_eval,
    write_video,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------- independent reference


def reference_fvd(i3d_path, fake_videos, real_videos):
    """FVD from uint8 ``[T, H, W, 3]`` arrays: one detector call per video, numpy moments, scipy sqrtm."""
    detector = torch.jit.load(i3d_path)

    def features(videos):
        rows = []
        for video in videos:
            batch = torch.from_numpy(np.ascontiguousarray(video)).permute(3, 0, 1, 2)[None]
            rows.append(detector(batch, rescale=True, resize=True, return_features=True)[0])
        return torch.stack(rows).double().numpy()

    return reference_frechet(features(fake_videos), features(real_videos))


def decode(path, num_frames):
    """The first ``num_frames`` RGB frames of a video file, read with OpenCV directly."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < num_frames:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame[..., ::-1])
    capture.release()
    return np.stack(frames)


def centre_crop(video, height, width):
    """Short side to the target with area filtering, then the middle ``height x width`` (no stretching)."""
    h, w = video.shape[1:3]
    scale = max(height / h, width / w)
    new_h, new_w = round(h * scale), round(w * scale)
    resized = np.stack([cv2.resize(np.ascontiguousarray(f), (new_w, new_h), interpolation=cv2.INTER_AREA) for f in video])
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return resized[:, top : top + height, left : left + width]


def sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


# --------------------------------------------------------------------------- fixtures


def sample_folder(root, videos):
    """A folder as ``hpdm-sample`` writes it: ``video_NNNN.{mp4,gif,png,npy}`` per video."""
    for i, video in enumerate(videos):
        write_video_files(video, str(root), f"video_{i:04d}")
    return str(root)


def ucf_root(root, frames, size_hw, train=(("ApplyEyeMakeup", 3), ("Archery", 2)), test=1, seed=0):
    """A miniature UCF-101: class folders, ``ucfTrainTestlist`` with classInd, trainlist01, testlist01."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    videos = random_videos(seed, sum(n + test for _, n in train), frames=frames, size=max(size_hw))
    classes, train_lines, test_lines, train_files = [], [], [], []
    for number, (name, count) in enumerate(train, start=1):
        classes.append(f"{number} {name}")
        for group in range(count + test):
            relative = f"{name}/v_{name}_g{group + 1:02d}_c01.avi"
            write_video(str(root / relative), videos.pop()[:, : size_hw[0], : size_hw[1]])
            if group < count:
                train_lines.append(f"{relative} {number}")
                train_files.append(root / relative)
            else:
                test_lines.append(relative)
    (lists / "classInd.txt").write_text("\n".join(classes) + "\n")
    (lists / "trainlist01.txt").write_text("\n".join(train_lines) + "\n")
    (lists / "testlist01.txt").write_text("\n".join(test_lines) + "\n")
    return str(root), train_files


TINY = dict(
    target_res=(2, 16, 16), patch_res=(2, 4, 4), token_size=(1, 2, 2), token_dim=16, latent_dim=16,
    num_latents=4, num_blocks=3, latent_layers_per_block=1, head_dim=8,
)


def tiny_workdir(root, num_classes=2):
    """A training workdir of a tiny model: ``config.gin`` and checkpoint step 10 (EMA and raw weights)."""
    torch.manual_seed(0)
    model = HPDM(**TINY, num_classes=num_classes)
    torch.nn.init.normal_(model.detokenizer.proj.weight, std=0.2)
    checkpoint = root / "checkpoints" / "step_00000010"
    checkpoint.mkdir(parents=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(checkpoint / "ema.safetensors"))
    save_file(state, str(checkpoint / "model.safetensors"))
    bindings = [f"HPDM.{name} = {value!r}" for name, value in TINY.items()]
    # A short schedule in the run's config: --protocol must replace it with the paper's.
    bindings += [f"HPDM.num_classes = {num_classes}", "SamplingSteps.base_steps = 4"]
    (root / "config.gin").write_text("\n".join(bindings) + "\n")
    return str(root)


# --------------------------------------------------------------------------- folders


def test_sample_folder_counts_each_video_once_from_its_npy(tmp_path, detectors, capsys):
    i3d, _ = detectors
    fakes = random_videos(1, 5, frames=8, tint=(30, -20, 0))
    fake_dir = sample_folder(tmp_path / "out", fakes)
    assert len(os.listdir(fake_dir)) == 20  # mp4, gif, png and npy of each video
    real = tmp_path / "real"
    for i, video in enumerate(random_videos(0, 7, frames=8)):
        write_video(str(real / f"r_{i}.avi"), video)
    argv = [f"--detector={i3d}", f"--real_dir={real}", "--num_frames=8", "--nocache_real_stats"]

    result = run_eval([*argv, f"--fake_dir={fake_dir}"], capsys)
    assert result["num_fake"] == 5 and result["skipped_fake"] == 0
    npy_only = [np.load(os.path.join(fake_dir, f"video_{i:04d}.npy")) for i in range(5)]
    reals = [decode(real / f"r_{i}.avi", 8) for i in range(7)]
    assert result["fvd"] == pytest.approx(reference_fvd(i3d, npy_only, reals), rel=1e-6)

    # Without the .npy files each video is read from one container (the .mp4), still once.
    for i in range(5):
        os.remove(os.path.join(fake_dir, f"video_{i:04d}.npy"))
    from_mp4 = run_eval([*argv, f"--fake_dir={fake_dir}"], capsys)
    assert from_mp4["num_fake"] == 5 and from_mp4["fvd"] != pytest.approx(result["fvd"], rel=1e-9)


def test_reals_of_another_aspect_ratio_are_centre_cropped(tmp_path, detectors, capsys):
    i3d, _ = detectors
    fakes = random_videos(2, 6, frames=8, size=16)
    fake_dir = sample_folder(tmp_path / "out", fakes)
    real = tmp_path / "real"
    wide = [video[:, :24, :].copy() for video in random_videos(3, 5, frames=8, size=64)]  # 24 x 64: 3:8
    for i, video in enumerate(wide):
        video[:, :, :16] = 255  # white left margin: outside the centre crop, inside a stretched frame
        write_video(str(real / f"r_{i}.avi"), video)
    result = run_eval(
        [f"--detector={i3d}", f"--real_dir={real}", f"--fake_dir={fake_dir}", "--num_frames=8", "--nocache_real_stats"],
        capsys,
    )
    assert result["resolution"] == [16, 16] and result["num_real"] == 5
    reals = [centre_crop(decode(real / f"r_{i}.avi", 8), 16, 16) for i in range(5)]
    assert result["fvd"] == pytest.approx(reference_fvd(i3d, fakes, reals), rel=1e-6)
    stretched = [np.stack([cv2.resize(f, (16, 16), interpolation=cv2.INTER_AREA) for f in decode(real / f"r_{i}.avi", 8)])
                 for i in range(5)]
    assert result["fvd"] != pytest.approx(reference_fvd(i3d, fakes, stretched), rel=1e-3)

    record = result["protocol"]
    assert record["name"] is None and record["overrides"] == {}
    assert record["detector_sha256"] == sha256(i3d) and record["c3d_sha256"] is None
    assert record["num_frames"] == 8 and record["resolution"] == [16, 16]
    assert record["real_source"] == {"kind": "folder", "path": str(real), "limit": None}
    assert record["fake_source"] == {"kind": "folder", "path": fake_dir, "samples": 6, "limit": None}
    assert record["sampler"] is None and record["guidance_scale"] is None and record["seed"] is None
    assert record["hpdm_version"] == hpdm.__version__


def test_protocol_folder_run_reads_the_train_split_and_records_overrides(tmp_path, detectors, capsys):
    i3d, c3d = detectors
    root, train_files = ucf_root(tmp_path / "UCF-101", frames=16, size_hw=(24, 32))
    fakes = random_videos(4, 5, frames=16, size=16)
    fake_dir = sample_folder(tmp_path / "out", fakes)
    result = run_eval(
        ["--protocol=fvd2048_16f", f"--detector={i3d}", f"--c3d_detector={c3d}", f"--real_dir={root}",
         f"--fake_dir={fake_dir}", "--num_fake=5", "--num_real=0", "--resolution=16,16", "--is_splits=1",
         f"--stats_cache_dir={tmp_path / 'cache'}"],
        capsys,
    )
    # Only the five train-list videos are reals (the test list's two are not), centre-cropped.
    assert result["num_fake"] == 5 and result["num_real"] == len(train_files) == 5
    reals = [centre_crop(decode(path, 16), 16, 16) for path in train_files]
    assert result["fvd"] == pytest.approx(reference_fvd(i3d, fakes, reals), rel=1e-6)
    assert 1.0 <= result["is"] <= 5.0

    record = result["protocol"]
    assert record["name"] == "fvd2048_16f"
    assert record["overrides"] == {"num_fake": 5, "num_real": 0, "resolution": [16, 16]}
    assert record["num_frames"] == 16 and record["resolution"] == [16, 16]
    assert record["detector_sha256"] == sha256(i3d) and record["c3d_sha256"] == sha256(c3d)
    assert record["real_source"] == {
        "kind": "ucf101", "root": root, "split": 1, "subset": "train", "listed_videos": 5, "limit": None, "seed": 0,
    }
    assert record["fake_source"]["kind"] == "folder" and record["fake_source"]["samples"] == 5

    again = run_eval(
        ["--protocol=fvd2048_16f", f"--detector={i3d}", f"--real_dir={root}", f"--fake_dir={fake_dir}",
         "--num_fake=5", "--num_real=0", "--resolution=16,16", f"--stats_cache_dir={tmp_path / 'cache'}"],
        capsys,
    )
    assert again["real_stats_cached"] and again["fvd"] == pytest.approx(result["fvd"], rel=1e-12)


def test_protocol_needs_a_ucf101_root_and_enough_fakes(tmp_path, detectors, capsys):
    i3d, _ = detectors
    fake_dir = sample_folder(tmp_path / "out", random_videos(5, 2, frames=16))
    plain = tmp_path / "plain"
    write_video(str(plain / "a.avi"), random_videos(6, 1, frames=16)[0])
    with pytest.raises(Exception, match="UCF-101 root"):
        run_eval(["--protocol=paper", f"--detector={i3d}", f"--real_dir={plain}", f"--fake_dir={fake_dir}"], capsys)
    root, _ = ucf_root(tmp_path / "UCF-101", frames=16, size_hw=(16, 16))
    with pytest.raises(ValueError, match="asked for 512 fake videos, only 2"):
        run_eval(["--protocol=fvd512", f"--detector={i3d}", f"--real_dir={root}", f"--fake_dir={fake_dir}",
                  "--resolution=16,16", "--nocache_real_stats"], capsys)
    with pytest.raises(Exception, match="unknown protocol 'nope'.*paper"):
        run_eval(["--protocol=nope", f"--detector={i3d}", f"--real_dir={root}", f"--fake_dir={fake_dir}"], capsys)
    with pytest.raises(Exception, match="--guidance_scale.*already made"):
        run_eval([f"--detector={i3d}", f"--real_dir={root}", f"--fake_dir={fake_dir}", "--guidance_scale=2"], capsys)


# --------------------------------------------------------------------------- workdir


def test_workdir_protocol_run_loads_once_and_records_the_sampling(tmp_path, detectors, capsys, monkeypatch):
    i3d, _ = detectors
    workdir = tiny_workdir(tmp_path / "run")
    root, _ = ucf_root(tmp_path / "UCF-101", frames=4, size_hw=(24, 32))
    loads = []
    load_pretrained = hpdm.core.load_pretrained

    def counting_load(*args, **kwargs):
        loads.append(args)
        return load_pretrained(*args, **kwargs)

    monkeypatch.setattr(hpdm.core, "load_pretrained", counting_load)
    steps = "SamplingSteps.num_steps = [3, 2, 2]"
    try:
        result = run_eval(
            ["--protocol=fvd512", f"--workdir={workdir}", f"--real_dir={root}", f"--detector={i3d}",
             "--num_fake=3", "--num_frames=2", "--resolution=16,16", "--sample_chunk=2", "--sample_batch_size=2",
             f"--sampler_param={steps}", "--guidance_scale=1.5", "--seed=4", "--nocache_real_stats", "--device=cpu"],
            capsys,
        )
    finally:
        gin.clear_config()
    assert len(loads) == 1  # two chunks, one model
    assert result["num_fake"] == 3 and result["num_real"] == 5 and np.isfinite(result["fvd"])

    record = result["protocol"]
    assert record["name"] == "fvd512" and record["detector_sha256"] == sha256(i3d)
    assert record["overrides"] == {
        "num_fake": 3, "num_frames": 2, "resolution": [16, 16], "guidance_scale": 1.5, "sampler_param": [steps],
    }
    assert record["num_frames"] == 2 and record["resolution"] == [16, 16]
    assert record["guidance_scale"] == 1.5 and record["seed"] == 4 and record["hpdm_version"] == hpdm.__version__
    assert record["real_source"]["kind"] == "ucf101" and record["real_source"]["subset"] == "train"
    assert record["fake_source"] == {
        "kind": "workdir", "workdir": workdir, "weights": os.path.join("checkpoints", "step_00000010", "ema.safetensors"),
        "step": 10, "ema": True, "export": False, "sample_chunk": 2,
        "labels": {"num_classes": 2, "drawn": "with the real videos' class frequencies"},
    }
    sampler = record["sampler"]
    assert [level["num_steps"] for level in sampler["levels"]] == [3, 2, 2]
    assert [level["stepper"] for level in sampler["levels"]] == ["heun", "euler", "euler"]
    # The paper's churn on level 0 and deterministic later levels, not the run's own schedule.
    assert [level["s_churn"] for level in sampler["levels"]] == [40.0, 0.0, 0.0]
    assert sampler["overlap"] == "hw" and sampler["bindings"][-1] == steps
    with open(os.path.join(workdir, "eval_f2_n3.json")) as handle:
        assert json.load(handle) == result


def test_workdir_run_without_protocol_uses_the_runs_schedule_and_raw_weights(tmp_path, detectors, capsys):
    i3d, _ = detectors
    workdir = tiny_workdir(tmp_path / "run", num_classes=0)
    real = tmp_path / "real"
    for i, video in enumerate(random_videos(7, 3, frames=2)):
        write_video(str(real / f"r_{i}.avi"), video)
    from hpdm.samplers import SamplingSteps  # noqa: F401  (registers the configurable bound below)

    gin.parse_config("SamplingSteps.base_steps = 9")  # the caller's config: the run's must neither use nor replace it
    result = run_eval(
        [f"--workdir={workdir}", f"--real_dir={real}", f"--detector={i3d}", "--num_fake=2", "--num_frames=2",
         "--nouse_ema", "--overlap=", "--nocache_real_stats", "--device=cpu"],
        capsys,
    )
    assert gin.query_parameter("SamplingSteps.base_steps") == 9
    with pytest.raises(ValueError):
        gin.query_parameter("HPDM.num_classes")  # nothing of the run's config is left bound
    record = result["protocol"]
    assert record["name"] is None and record["overrides"] == {}
    assert record["fake_source"]["weights"].endswith("model.safetensors") and record["fake_source"]["ema"] is False
    assert "labels" not in record["fake_source"]  # unconditional
    assert [level["num_steps"] for level in record["sampler"]["levels"]] == [4, 2, 1]  # the run's base_steps = 4
    assert record["sampler"]["overlap"] == "" and record["guidance_scale"] == 1.0 and record["seed"] == 0


# --------------------------------------------------------------------------- detectors, protocols, docs


@pytest.mark.slow
def test_detector_sha256_refuses_another_file(tmp_path, detectors, capsys):
    i3d, _ = detectors
    real = tmp_path / "real"
    write_video(str(real / "a.avi"), random_videos(8, 1, frames=4)[0])
    argv = [f"--detector={i3d}", f"--real_dir={real}", f"--fake_dir={real}", "--num_frames=4", "--nocache_real_stats"]
    with pytest.raises(metrics.DetectorMismatchError, match="refusing"):
        run_eval([*argv, f"--detector_sha256={'0' * 64}"], capsys)
    pinned = run_eval([*argv, f"--detector_sha256={sha256(i3d).upper()}"], capsys)
    assert pinned["protocol"]["detector_sha256"] == sha256(i3d)
    with binary_flags(evaluate.define_flags, ["hpdm-eval"]) as registry:
        assert "trust" in registry["detector"].help and "trust" in registry["c3d_detector"].help


def test_protocol_schedule_is_the_papers_whatever_the_run_bound():
    from hpdm import gin_utils
    from hpdm.samplers import SamplingSteps

    def levels():
        schedule = SamplingSteps()
        return [schedule.level(level) for level in range(4)]

    gin.clear_config()
    defaults = levels()
    gin_utils.parse(["gin/samplers/paper.gin"])
    assert levels() == defaults
    gin.clear_config()
    gin.parse_config(["SamplingSteps.num_steps = [3, 2]", "SamplingSteps.s_churn = 0.0", "SamplingSteps.min_steps = 8"])
    gin.parse_config(list(metrics.protocols.PAPER_SCHEDULE))
    assert levels() == defaults


def test_protocol_table_and_overrides():
    paper = metrics.get_protocol("paper")
    assert (paper.num_fake, paper.num_real, paper.num_frames, paper.real_split, paper.real_subset) == (
        10_000, 0, 16, 1, "train")
    assert (paper.overlap, paper.use_ema, paper.resolution) == ("hw", True, (256, 256))
    assert (metrics.PROTOCOLS["fvd2048_16f"].num_fake, metrics.PROTOCOLS["fvd2048_16f"].num_real) == (2048, 2048)
    assert metrics.PROTOCOLS["fvd512"].num_fake == 512 and metrics.PROTOCOLS["fvd10k"].num_fake == 10_000
    settings, overrides = metrics.apply_overrides(paper, {"num_fake": 512, "overlap": "hw", "resolution": (128, 128)})
    assert settings["num_fake"] == 512 and settings["resolution"] == [128, 128]
    assert overrides == {"num_fake": 512, "resolution": [128, 128]}  # same-as-protocol values are no override
    with pytest.raises(KeyError, match="not a protocol setting"):
        metrics.apply_overrides(paper, {"seed": 1})


@pytest.mark.slow
def test_readme_shows_the_paper_protocol_command():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    section = text.split("## Evaluation: FVD and IS", 1)[1].split("\n## ", 1)[0]
    assert "hpdm-eval --protocol=paper" in section
    assert all(name in section for name in metrics.PROTOCOLS)
    assert "trust" in section and "--detector_sha256" in section


@pytest.mark.slow
def test_folder_from_hpdm_sample_records_how_its_fakes_were_sampled(tmp_path, detectors, capsys):
    """``hpdm-sample`` writes ``sampling.json`` beside its videos; a folder run records its seed,
    guidance and sampler in the protocol, as a ``--workdir`` run does."""
    i3d, _ = detectors
    workdir = tiny_workdir(tmp_path / "run")
    out = tmp_path / "samples"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-m", "hpdm.cli.sample", f"--workdir={workdir}", f"--output_dir={out}", "--num_videos=2",
         "--seed=3", "--guidance_scale=1.5", "--class_label=1", "--overlap=", "--gin_param=SamplingSteps.base_steps = 2"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    made_with = json.loads((out / "sampling.json").read_text())
    assert made_with["seed"] == 3 and made_with["class_label"] == 1 and made_with["ema"] is True
    result = run_eval([f"--detector={i3d}", f"--fake_dir={out}", f"--real_dir={out}", "--nocache_real_stats",
                       "--num_frames=2"], capsys)
    protocol = result["protocol"]
    assert result["num_fake"] == 2
    assert protocol["seed"] == 3 and protocol["guidance_scale"] == 1.5
    assert protocol["sampler"]["overlap"] == "" and protocol["sampler"] == made_with["sampler"]
    # base_steps 2, halved per level down to one step: what the run's SamplingSteps gave.
    assert [level["num_steps"] for level in protocol["sampler"]["levels"]] == [2, 1, 1]
    assert protocol["fake_source"]["made_with"]["model"] == workdir
