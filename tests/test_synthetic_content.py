"""The synthetic content probe reads real synthetic videos perfectly and rejects broken ones."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpdm.data.synthetic import CLASS_NAMES, SHAPES
from hpdm.diagnostics.synthetic_content import (
    class_attributes,
    colour_index_map,
    content_report,
    read_video,
    real_videos,
    shape_scores,
)


def _ideal_mask(shape: str, radius: float, cy: float, cx: float, size: int = 64) -> np.ndarray:
    """Pixel-centre rasterisation of the source's shapes (written out independently of ``shape_sdf``)."""
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    dy, dx = ys - cy, xs - cx
    if shape == "disc":
        return dx * dx + dy * dy <= radius * radius
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= radius
    return np.abs(dx) + np.abs(dy) <= 1.25 * radius


@settings(max_examples=60, deadline=None)
@given(
    shape=st.sampled_from(SHAPES),
    radius=st.floats(4.0, 14.0),
    cy=st.floats(20.0, 44.0),
    cx=st.floats(20.0, 44.0),
)
def test_shape_scores_pick_the_drawn_shape(shape, radius, cy, cx):
    scores = shape_scores(_ideal_mask(shape, radius, cy, cx))
    assert max(scores, key=scores.get) == shape
    assert scores[shape] > 0.85
    assert all(0.0 <= v <= 1.0 for v in scores.values())


def test_shape_scores_tolerate_stray_edge_pixels():
    # A square of side 20 with one stray pixel beside each edge: its bounding-box fill drops to
    # 404 / 484 ~ 0.83 (a disc's is pi/4 ~ 0.785), but the template match stays square.
    mask = _ideal_mask("square", 10.0, 32.0, 32.0)
    assert mask.sum() == 400
    mask[32, 21] = mask[32, 42] = mask[21, 32] = mask[42, 32] = True
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
    assert mask.sum() / box < 0.84
    scores = shape_scores(mask)
    assert max(scores, key=scores.get) == "square"
    with pytest.raises(ValueError, match="non-empty"):
        shape_scores(np.zeros((8, 8), dtype=bool))


def test_class_attributes_match_class_names():
    for label, name in enumerate(CLASS_NAMES):
        assert " ".join(class_attributes(label)) == name


@pytest.mark.parametrize("res", [(16, 64, 64), (8, 48, 80)])
def test_real_videos_read_perfectly(res):
    labels = list(range(len(CLASS_NAMES))) * 2
    videos = real_videos(labels, res, first_index=500)
    report = content_report(videos, labels)
    assert report["colour_accuracy"] == 1.0
    assert report["shape_accuracy"] == 1.0
    assert report["single_object_frames"] == 1.0
    assert report["shape_consistency"] == 1.0
    # Constant velocity: centroids sit on a line up to pixel quantisation of the mask.
    assert report["track_rms"] < 0.01
    # Constant size: the area varies only by rasterisation at pixel centres.
    assert 1.0 <= report["size_ratio"] < 1.1 and max(r["size_ratio"] for r in report["readings"]) < 1.25


def test_backgrounds_are_never_object_pixels():
    from hpdm.data.synthetic import SyntheticVideos

    source = SyntheticVideos(radius=(0.01, 0.01))  # object too small to cover a pixel centre
    for index in range(12):
        video, _, _ = source.render(index, (2, 32, 32))
        frames = ((video + 1) * 127.5).round().byte().permute(1, 2, 3, 0).numpy()
        assert (colour_index_map(frames) < 0).mean() > 0.99


def test_broken_videos_score_low():
    labels = [0, 4, 8, 2]
    videos = real_videos(labels, (8, 64, 64), first_index=0)
    # Two objects per frame: the left half of each frame mirrored onto the right half.
    doubled = [np.concatenate([v[:, :, :32], v[:, :, :32]], axis=2) for v in videos]
    rng = np.random.default_rng(0)
    # Each frame a different video: the object jumps around instead of moving on a line.
    shuffled = [np.stack([videos[rng.integers(4)][t] for t in range(8)]) for _ in range(4)]
    noise = [rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8) for _ in range(4)]
    assert content_report(noise, labels)["single_object_frames"] == 0.0
    assert content_report(noise, labels)["shape_accuracy"] == 0.0
    assert content_report(doubled)["single_object_frames"] < 1.0
    assert content_report(shuffled)["track_rms"] > 0.05


def test_swapped_labels_lower_accuracy():
    labels = [0, 1, 2, 3, 4, 5]
    videos = real_videos(labels, (4, 64, 64))
    wrong = [(l + 1) % 3 + 3 * (l // 3) for l in labels]  # same shape, other colour
    report = content_report(videos, wrong)
    assert report["colour_accuracy"] == 0.0
    assert report["shape_accuracy"] == 1.0


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="uint8 RGB video"):
        read_video(np.zeros((4, 8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="labels"):
        content_report([np.zeros((2, 8, 8, 3), dtype=np.uint8)], [0, 1])
    with pytest.raises(ValueError, match="at least one"):
        content_report([])


def test_empty_video_reads_as_nothing():
    reading = read_video(np.zeros((3, 16, 16, 3), dtype=np.uint8))
    assert reading.colour is None and reading.shape is None
    assert reading.single_object_frames == 0.0 and np.isnan(reading.track_rms)


def _diagnose(*args, timeout=300, **env):
    """``python -m hpdm.cli.diagnose ARGS`` from the repository root: the completed process."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run(
        [sys.executable, "-m", "hpdm.cli.diagnose", *args],
        cwd=root, capture_output=True, text=True, timeout=timeout, env=dict(os.environ, **env),
    )


def _probe_shipped_model(tmp_path, *flags):
    """Run the probe CLI on the shipped model (one video per class); ``(process, report dict)``."""
    import json

    report = tmp_path / "probe.json"
    out = _diagnose(
        "content", "--model=pretrained/quickstart", "--videos_per_class=1", "--batch_size=9",
        f"--output={report}", *flags, timeout=600, OMP_NUM_THREADS="2",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out, json.loads(report.read_text())


@pytest.mark.slow
def test_cli_on_the_shipped_quickstart_model(tmp_path):
    """The CLI samples one video per class and writes a report whose real-video row is perfect."""
    out, data = _probe_shipped_model(tmp_path, "--save_videos", "--gin_param=SamplingSteps.num_steps=[16, 1, 1]")
    assert data["labels"] == list(range(len(CLASS_NAMES)))
    assert data["real"]["colour_accuracy"] == 1.0 and data["real"]["shape_accuracy"] == 1.0
    assert data["samples"]["num_videos"] == len(CLASS_NAMES)
    assert np.load(tmp_path / "probe_videos.npy").shape == (len(CLASS_NAMES), 16, 64, 64, 3)
    assert "samples" in out.stdout and "colour_accuracy=" in out.stdout


@pytest.mark.slow
def test_cli_rejects_an_unconditional_model(tmp_path):
    from model_utils import write_export

    write_export(tmp_path, target_res=(2, 16, 16), patch_res=(2, 8, 8), token_size=(1, 4, 4), token_dim=16,
                 latent_dim=16, num_latents=4, num_blocks=2, latent_layers_per_block=1, head_dim=8)
    out = _diagnose("content", f"--model={tmp_path}")
    assert out.returncode != 0
    assert "needs a class-conditional model" in out.stderr


@pytest.mark.slow
def test_cli_conditions_on_real_coarse_levels(tmp_path):
    """--real_levels=2 generates only the finest level, from real levels 0 and 1: the colour follows."""
    _, data = _probe_shipped_model(
        tmp_path, "--real_levels=2", "--gin_param=SamplingSteps.num_steps=[1, 1, 1]",
        "--gin_param=OverlapSampler.overlap=''",
    )
    assert data["real_levels"] == 2
    assert data["samples"]["colour_accuracy"] == 1.0
    assert data["samples"]["single_object_frames"] > 0.9


def _moving_disc(step_px: float, frames: int = 16, size: int = 64, radius: float = 7.0) -> np.ndarray:
    video = np.zeros((frames, size, size, 3), dtype=np.uint8)
    for f in range(frames):
        mask = _ideal_mask("disc", radius, 32.0, 12.0 + step_px * f, size)
        video[f][mask] = (230, 30, 30)
    return video


@settings(max_examples=25, deadline=None)
@given(step_px=st.floats(0.0, 2.5))
def test_travel_is_the_distance_moved_over_the_clip(step_px):
    reading = read_video(_moving_disc(step_px))
    assert reading.single_object_frames == 1.0 and reading.track_rms < 0.005
    assert abs(reading.travel - step_px * 16 / 64) < 0.005


def test_real_videos_travel_at_their_rendered_speed():
    from hpdm.data.synthetic import SyntheticVideos

    source = SyntheticVideos()
    res = (16, 64, 64)
    for index in range(8):
        video, _, _ = source.render(index, res)
        frames = ((video + 1) * 127.5).round().byte().permute(1, 2, 3, 0).numpy()
        obj = source.attributes(index)["objects"][0]
        r = obj["radius"] * 64
        # The renderer slows an object whose path would leave the frame down to the room it has.
        v = [min(abs(c) * 64, 64 - 2 * r) for c in obj["velocity"]]
        assert abs(read_video(frames).travel - np.hypot(*v) / 64) < 0.02, index
    still = np.repeat(frames[:1], 16, axis=0)
    assert read_video(still).travel < 1e-9 and content_report([still])["travel"] < 1e-9


@pytest.mark.parametrize("grow", [1.0, 1.5, 2.0])
def test_size_ratio_is_the_area_ratio_of_a_swelling_object(grow):
    frames, size = 8, 64
    video = np.zeros((frames, size, size, 3), dtype=np.uint8)
    for f in range(frames):
        radius = 8.0 * (1 + (grow - 1) * f / (frames - 1))  # the radius grows linearly to grow x
        video[f][_ideal_mask("disc", radius, 32.0, 32.0, size)] = (230, 30, 30)
    reading = read_video(video)
    assert reading.single_object_frames == 1.0 and reading.travel < 0.01
    assert reading.size_ratio == pytest.approx(grow**2, rel=0.05)


# The hpdm-diagnose binary (hpdm.cli.diagnose), whose first command is this probe.


@pytest.mark.slow
def test_diagnose_lists_its_commands_and_a_command_its_flags():
    listing = _diagnose("--help")
    assert listing.returncode == 0, listing.stderr[-2000:]
    for command in ("content", "motion", "labels", "denoising", "level0-ablation"):
        assert f"  {command} " in listing.stdout
    content = _diagnose("content", "--help")  # absl's --help, which exits 1
    assert "--videos_per_class" in content.stdout and "--guide_model" in content.stdout
    assert "--train_videos" not in content.stdout  # another command's flag
    for args in ((), ("contents", "--model=pretrained/quickstart")):
        out = _diagnose(*args)
        assert out.returncode == 2 and "usage: hpdm-diagnose COMMAND" in out.stderr


def test_diagnose_flags_are_defined_once_and_never_with_another_default():
    from absl import flags

    from binaries import own_registry
    from hpdm.cli import diagnose

    with own_registry():
        diagnose.define_flags("denoising")
        diagnose.define_flags("denoising")  # the same flags again: kept as they are
        assert flags.FLAGS["num_videos"].default == 16
        assert flags.FLAGS["sigmas"].default == ["0.01", "0.05", "0.2", "1.0"]
        with pytest.raises(ValueError, match=r"--num_videos .*\b16\b.*\b48\b"):
            diagnose.define_flags("labels")
        with pytest.raises(ValueError, match="unknown command 'probe'"):
            diagnose.define_flags("probe")
