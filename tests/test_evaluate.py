"""``hpdm-eval`` end to end with stand-in TorchScript detectors on tiny OpenCV videos (paper Sec. 5),
and the evaluation library's folder reading."""

import json
import os
import shutil
import subprocess
import sys

import gin
import numpy as np
import pytest
import torch
from absl import flags

from hpdm import evaluation, metrics
from hpdm.cli import evaluate
from hpdm.evaluation import fakes as evaluation_fakes
from hpdm.video.skips import SkipReport

from binaries import own_registry
from eval_helpers import (  # noqa: F401 (detectors: a fixture)
    detectors,
    independent_fvd,
    random_videos,
    run_eval,
    write_folder,
    write_video,
)



def test_identical_folders_give_zero_and_different_ones_match_reference(tmp_path, detectors, capsys):
    i3d, _ = detectors
    real, fake, copy = str(tmp_path / "real"), str(tmp_path / "fake"), str(tmp_path / "copy")
    write_folder(real, random_videos(0, 12))
    write_folder(fake, random_videos(1, 10, tint=(30, -20, 0)))
    shutil.copytree(real, copy)
    common = [f"--detector={i3d}", "--num_frames=8", "--batch_size=4", f"--stats_cache_dir={tmp_path / 'cache'}"]

    same = run_eval([*common, f"--real_dir={real}", f"--fake_dir={copy}"], capsys)
    assert same["fvd"] == pytest.approx(0.0, abs=1e-9)
    assert same["num_fake"] == same["num_real"] == 12 and same["resolution"] == [16, 16]
    assert "is" not in same and not any(k.startswith("seam") for k in same)

    different = run_eval([*common, f"--real_dir={real}", f"--fake_dir={fake}"], capsys)
    assert different["fvd"] > 0.01
    assert different["real_stats_cached"] is True  # same real folder, resolution, frames, detector
    assert different["fvd"] == pytest.approx(independent_fvd(i3d, real, fake, 8), rel=1e-6)

    fvd_at_4 = run_eval([*common, f"--real_dir={real}", f"--fake_dir={fake}", "--num_fake=4"], capsys)
    assert fvd_at_4["num_fake"] == 4 and fvd_at_4["fvd"] != pytest.approx(different["fvd"])


def test_inception_score_seams_and_skips_from_folders(tmp_path, detectors, capsys):
    i3d, c3d = detectors
    real, fake = str(tmp_path / "real"), str(tmp_path / "fake")
    write_folder(real, random_videos(2, 6, frames=20))
    write_folder(fake, random_videos(3, 10, frames=20))
    write_video(os.path.join(fake, "zz_short.avi"), random_videos(4, 1, frames=5)[0])
    with open(os.path.join(fake, "zz_broken.avi"), "wb") as handle:
        handle.write(b"not a video")
    result = run_eval(
        [f"--detector={i3d}", f"--c3d_detector={c3d}", f"--real_dir={real}", f"--fake_dir={fake}",
         "--num_frames=16", "--is_splits=2", "--patch_res=8,8,8", "--nocache_real_stats"],
        capsys,
    )
    assert result["skipped_fake"] == 2 and result["num_fake"] == 10
    assert 1.0 <= result["is"] <= 5.0 and result["is_std"] >= 0.0
    assert {"seam_t", "seam_h", "seam_w"} <= set(result)
    assert all(np.isfinite(result[k]) for k in ("seam_t", "seam_h", "seam_w"))


def test_missing_detector_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "real").mkdir()
    with pytest.raises(FileNotFoundError, match=r"i3d_torchscript\.pt.*FVD.*StyleGAN-V"):
        run_eval([f"--detector={tmp_path / 'i3d_torchscript.pt'}", f"--real_dir={tmp_path / 'real'}",
                  f"--fake_dir={tmp_path / 'real'}"], capsys)


def grid_videos(num, seed, shape=(16, 32, 32), patch=(8, 16, 16)):
    """Smooth videos with a bright line pasted on every last-level tile edge (50% overlap)."""
    videos = torch.from_numpy(np.stack(random_videos(seed, num, frames=shape[0], size=shape[1])))
    edges = metrics.video_tile_edges(shape, patch, "fhw")
    videos[:, :, edges["h"]] = 255
    videos[:, :, :, edges["w"]] = 255
    return videos


class StandInSampler:
    """``evaluation.WorkdirSampler``'s interface without a model: grid videos, calls and loads recorded."""

    loads, calls = [], []

    def __init__(self, workdir, **options):
        self.options = options
        StandInSampler.loads.append((workdir, options))
        self.num_classes = 2
        self.patch_res = (8, 16, 16)  # the model's last-level tile: the seam score's default grid

    def __call__(self, count, seed, labels, offset=0):
        StandInSampler.calls.append((count, seed, None if labels is None else labels.tolist(), offset))
        return grid_videos(count, seed % 1000)

    def source_record(self):
        return {"kind": "workdir", "workdir": "stand-in", "step": 7, "ema": self.options["use_ema"]}

    def record(self):
        return {"overlap": self.options["overlap"], "levels": []}


def test_workdir_mode_samples_with_data_labels_and_writes_json(tmp_path, detectors, capsys, monkeypatch):
    i3d, _ = detectors
    workdir = tmp_path / "run"
    workdir.mkdir()
    real = str(tmp_path / "real")
    write_folder(real, random_videos(5, 8, frames=16, size=32), classes=["A"] * 6 + ["B"] * 2)
    StandInSampler.loads, StandInSampler.calls = [], []
    # A stand-in sampler: this test pins the contract without loading a model or the sampler code.
    monkeypatch.setattr(evaluation_fakes, "WorkdirSampler", StandInSampler)
    result = run_eval(
        [f"--workdir={workdir}", f"--detector={i3d}", "--num_fake=10", f"--real_dir={real}",
         "--num_frames=16", "--sample_chunk=4", "--sample_batch_size=3", "--nocache_real_stats", "--overlap=thw"],
        capsys,
    )
    # One model load for every chunk, with the flags' settings.
    assert len(StandInSampler.loads) == 1
    workdir_arg, options = StandInSampler.loads[0]
    assert workdir_arg == str(workdir) and options["overlap"] == "fhw" and options["batch_size"] == 3
    assert options["total"] == 10 and options["use_ema"] is True and options["guidance_scale"] == 1.0
    calls = StandInSampler.calls
    assert [c[0] for c in calls] == [4, 4, 2] and [c[3] for c in calls] == [0, 4, 8]
    assert len({c[1] for c in calls}) == 3  # a seed per chunk: no repeated videos
    labels = sum((c[2] for c in calls), [])
    assert len(labels) == 10 and set(labels) <= {0, 1}
    assert result["num_fake"] == 10 and result["fvd"] > 0
    assert result["seam_h"] > 1.5 and result["seam_w"] > 1.5 and result["seam_t"] == pytest.approx(1.0, abs=0.3)
    assert result["protocol"]["fake_source"]["labels"]["drawn"] == "with the real videos' class frequencies"
    with open(workdir / "eval_f16_n10.json") as handle:
        assert json.load(handle) == result


def test_real_videos_from_a_data_config_are_cached_by_config(tmp_path, detectors, capsys):
    i3d, _ = detectors
    fake = str(tmp_path / "fake")
    write_folder(fake, random_videos(8, 6, frames=8))
    data_gin = tmp_path / "synthetic.gin"
    data_gin.write_text("SyntheticVideos.seed = 3\n")
    argv = [f"--detector={i3d}", f"--fake_dir={fake}", f"--gin_file={data_gin}", "--num_real=5",
            "--num_frames=8", f"--stats_cache_dir={tmp_path / 'cache'}"]
    try:
        gin.clear_config()  # the binary parses once per process; these are two "processes"
        first = run_eval(argv, capsys)
        gin.clear_config()
        second = run_eval(argv, capsys)
    finally:
        gin.clear_config()
    assert first["num_real"] == 5 and first["fvd"] > 0 and not first["real_stats_cached"]
    assert second["real_stats_cached"] and second["fvd"] == pytest.approx(first["fvd"], rel=1e-12)


def test_overlap_choice_is_the_samplers_spelling():
    assert evaluation.normalise_overlap("hw") == "hw" and evaluation.normalise_overlap("WH") == "hw"
    assert evaluation.normalise_overlap("thw") == evaluation.normalise_overlap("fhw") == "fhw"
    assert evaluation.normalise_overlap("") == evaluation.normalise_overlap(None) == ""
    with pytest.raises(evaluation.SettingsError, match="subset"):
        evaluation.normalise_overlap("xy")


def test_draw_labels_follows_class_frequencies(tmp_path):
    real = str(tmp_path / "real")
    write_folder(real, random_videos(6, 4, frames=2), classes=["Archery", "Archery", "Archery", "Bowling"])
    labels = evaluation.draw_labels(4000, 0, 2, real)
    assert abs((labels == 0).mean() - 0.75) < 0.03
    assert evaluation.draw_labels(5, 0, None, real) is None
    uniform = evaluation.draw_labels(4000, 0, 3, real)  # class count mismatch: uniform labels
    assert set(np.unique(uniform)) == {0, 1, 2}


@pytest.mark.slow
def test_console_entry_point_prints_json_last(tmp_path, detectors):
    i3d, _ = detectors
    real = str(tmp_path / "real")
    write_folder(real, random_videos(7, 3, frames=4))
    completed = subprocess.run(
        [sys.executable, "-m", "hpdm.cli.evaluate", f"--detector={i3d}", f"--real_dir={real}",
         f"--fake_dir={real}", "--num_frames=4", "--nocache_real_stats"],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "features of 3/3 videos" in completed.stderr  # progress lines
    assert json.loads(completed.stdout.strip().splitlines()[-1])["fvd"] == pytest.approx(0.0, abs=1e-9)


# --------------------------------------------------------------------------- the library, flags


@pytest.mark.slow
def test_the_library_call_gives_the_binarys_result(tmp_path, detectors, capsys):
    """``evaluation.evaluate`` with keyword arguments is what ``hpdm-eval`` runs: the same numbers."""
    i3d, c3d = detectors
    real, fake = str(tmp_path / "real"), str(tmp_path / "fake")
    write_folder(real, random_videos(11, 5, frames=16))
    write_folder(fake, random_videos(12, 6, frames=16, tint=(0, 20, -20)))
    settings = evaluation.resolve_settings(chosen={"num_frames": 16})
    result = evaluation.evaluate(
        detector=i3d, c3d_detector=c3d, real=evaluation.open_reals(settings, real_dir=real),
        fake=evaluation.FolderFakes(fake), settings=settings, is_splits=2, patch_res=(8, 8, 8),
        cache_real_stats=False, device="cpu",
    )
    binary = run_eval(
        [f"--detector={i3d}", f"--c3d_detector={c3d}", f"--real_dir={real}", f"--fake_dir={fake}",
         "--is_splits=2", "--patch_res=8,8,8", "--nocache_real_stats"],
        capsys,
    )
    binary.pop("run_record")
    assert result == binary
    assert {"fvd", "num_fake", "num_real", "is", "is_std", "seam_t", "seam_h", "seam_w", "protocol"} <= set(result)


def test_settings_record_only_what_departs_from_the_protocol():
    plain = evaluation.resolve_settings(chosen={"overlap": "THW", "resolution": ["8", "8"]})
    assert plain.protocol is None and plain.overrides == {} and plain.sampler_bindings == ()
    assert (plain.overlap, plain.resolution, plain.num_frames) == ("fhw", (8, 8), evaluation.DEFAULTS["num_frames"])
    steps = "SamplingSteps.num_steps = [3, 2, 2]"
    paper = evaluation.resolve_settings("paper", {"overlap": "hw", "num_fake": 8}, sampler_param=[steps])
    assert paper.overrides == {"num_fake": 8, "sampler_param": [steps]}
    assert paper.sampler_bindings == metrics.protocols.PAPER_SCHEDULE + (steps,)
    with pytest.raises(evaluation.SettingsError, match="unknown protocol"):
        evaluation.resolve_settings("nope")
    with pytest.raises(evaluation.SettingsError, match="seed: not evaluation settings"):
        evaluation.resolve_settings(chosen={"seed": 1})
    with pytest.raises(evaluation.SettingsError, match=r"resolution must be \(H, W\)"):
        evaluation.resolve_settings(chosen={"resolution": (8, 8, 8)})


@pytest.mark.slow
def test_a_flag_two_binaries_define_differently_is_refused():
    from hpdm.cli import sample
    from hpdm.cli.common import define_flag

    with own_registry():
        define_flag(flags.DEFINE_integer, "hpdm_test_flag", 3, "a flag")
        define_flag(flags.DEFINE_integer, "hpdm_test_flag", 3, "the same flag in other words")
        with pytest.raises(ValueError, match=r"--hpdm_test_flag is defined twice.*\(default 3\).*\(default 4\)"):
            define_flag(flags.DEFINE_integer, "hpdm_test_flag", 4, "another default")
        with pytest.raises(ValueError, match="--hpdm_test_flag is defined twice"):
            define_flag(flags.DEFINE_string, "hpdm_test_flag", "3", "another type")
        # hpdm-eval's --overlap defaults to 'hw' (the paper's metric setting), hpdm-sample's to the config's.
        evaluate.define_flags()
        with pytest.raises(ValueError, match="--overlap is defined twice"):
            sample.define_flags()


# --------------------------------------------------------------------------- folders of videos


def test_list_samples_groups_one_video_per_name_and_prefers_the_npy(tmp_path):
    rng = np.random.default_rng(11)
    exact = rng.integers(0, 255, (5, 8, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "video_0000.npy", exact)
    write_video(tmp_path / "video_0000.avi", np.zeros((5, 8, 8, 3), np.uint8))
    (tmp_path / "video_0000.png").write_bytes(b"a frame grid, not a video")
    write_video(tmp_path / "video_0001.avi", exact)
    np.save(tmp_path / "video_0002.npy", np.zeros((3, 8, 8), np.float32))  # not a video array
    write_video(tmp_path / "video_0002.avi", exact)
    samples = evaluation.list_samples(str(tmp_path))
    assert [s.name for s in samples] == ["video_0000", "video_0001", "video_0002"]
    assert samples[0].files == ("video_0000.npy", "video_0000.avi")
    video, path = evaluation.read_sample(str(tmp_path), samples[0], max_frames=4)
    np.testing.assert_array_equal(video, exact[:4])
    assert path.endswith(".npy")
    video, path = evaluation.read_sample(str(tmp_path), samples[2])  # a bad array falls back to the container
    assert path.endswith(".avi") and video.shape == (5, 8, 8, 3)
    with pytest.raises(FileNotFoundError, match="video folder"):
        evaluation.list_samples(str(tmp_path / "missing"))


def test_iterate_folder_counts_skips_and_classes(tmp_path):
    rng = np.random.default_rng(10)
    write_video(tmp_path / "ClassA" / "a.avi", rng.integers(0, 255, (6, 16, 16, 3), dtype=np.uint8))
    write_video(tmp_path / "ClassB" / "b.avi", rng.integers(0, 255, (2, 16, 16, 3), dtype=np.uint8))
    (tmp_path / "ClassB" / "c.avi").write_bytes(b"garbage")
    skips = SkipReport("videos", str(tmp_path))
    items = list(evaluation.iterate_folder(str(tmp_path), 4, 4, skips))
    assert [(v.shape, c) for v, c in items] == [((4, 16, 16, 3), "ClassA")]
    assert skips.count == 2 and "unreadable" in skips.summary() and "shorter than 4" in skips.summary()
