"""Frames and video files (hpdm/video): exact conversions, seeking clip reads, the one GIF encoder."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import torch

from hpdm.video import files, frames
from hpdm.video.skips import SkipReport
from data_fixtures import write_video


_OPENCV_CAPTURE = cv2.VideoCapture


def _sequential(path: str) -> np.ndarray:
    """Every frame of a video, decoded in order: what a clip read must reproduce."""
    capture = _OPENCV_CAPTURE(path)
    out = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return np.stack(out)


def _float_videos(*shape) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    video = torch.rand(*shape, generator=gen) * 2.4 - 1.2  # some values outside [-1, 1]
    flat = video.view(-1)
    flat[:256] = torch.arange(256) / 127.5 - 1.0  # exact uint8 levels
    flat[256:511] = (torch.arange(255) + 0.5) / 127.5 - 1.0  # halfway between two levels
    return video


# ------------------------------------------------------------------ to_uint8 / to_float


def test_to_uint8_of_one_video_is_the_loaders_old_formula():
    video = _float_videos(3, 4, 16, 20)
    old = ((video.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).contiguous()
    new = frames.to_uint8(video)
    assert new.shape == (4, 16, 20, 3) and new.dtype == torch.uint8 and new.is_contiguous()
    assert torch.equal(new, old)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_to_uint8_of_a_batch_is_the_samplers_old_formula(dtype):
    videos = _float_videos(2, 3, 4, 16, 20).to(dtype)
    old = ((videos.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).cpu()
    new = frames.to_uint8(videos)
    assert new.shape == (2, 4, 16, 20, 3) and new.device.type == "cpu"
    assert torch.equal(new, old)


def test_to_uint8_rejects_other_shapes():
    with pytest.raises(ValueError, match=r"\[C, T, H, W\]"):
        frames.to_uint8(torch.zeros(3, 8, 8))


def test_to_float_is_the_old_formula_and_inverts_to_uint8():
    clip = np.random.default_rng(0).integers(0, 256, (5, 12, 14, 3), dtype=np.uint8)
    clip[0, 0, :3] = [[0, 127, 255]] * 3
    old = np.ascontiguousarray(clip.transpose(3, 0, 1, 2), dtype=np.float32)
    old *= np.float32(1.0 / 127.5)
    old -= np.float32(1.0)
    new = frames.to_float(clip)
    assert new.dtype == torch.float32 and new.shape == (3, 5, 12, 14)
    assert torch.equal(new, torch.from_numpy(old))
    assert torch.equal(frames.to_uint8(new), torch.from_numpy(clip))


def test_resize_crop_covers_then_crops():
    clip = np.random.default_rng(1).integers(0, 256, (2, 30, 60, 3), dtype=np.uint8)
    centre = frames.resize_crop(clip, (20, 20), random=False, gen=None)
    assert centre.shape == (2, 20, 20, 3)
    expected = np.stack([cv2.resize(f, (40, 20), interpolation=cv2.INTER_AREA) for f in clip])[:, :, 10:30]
    assert np.array_equal(centre, expected)
    a = frames.resize_crop(clip, (20, 20), random=True, gen=torch.Generator().manual_seed(3))
    b = frames.resize_crop(clip, (20, 20), random=True, gen=torch.Generator().manual_seed(3))
    assert np.array_equal(a, b)


# ------------------------------------------------------------------ encode_gif / write_video


def _old_sampler_gif(frames_: np.ndarray, fps: float) -> bytes:
    anim = cv2.Animation()
    anim.frames = [np.ascontiguousarray(f[..., ::-1]) if f.shape[-1] == 3 else np.repeat(f, 3, axis=-1) for f in frames_]
    anim.durations = [max(1, int(round(1000.0 / fps)))] * len(frames_)
    anim.loop_count = 0
    ok, buf = cv2.imencodeanimation(".gif", anim)
    assert ok
    return buf.tobytes()


def _old_tensorboard_gif(video: np.ndarray, fps: float) -> bytes:
    anim = cv2.Animation()
    if video.shape[-1] == 1:
        video = np.repeat(video, 3, axis=-1)
    anim.frames = [np.ascontiguousarray(f[..., ::-1]) for f in video]
    anim.durations = [max(1, int(round(1000.0 / fps)))] * len(video)
    anim.loop_count = 0
    ok, buf = cv2.imencodeanimation(".gif", anim)
    assert ok
    return bytes(np.asarray(buf).tobytes())


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("fps", [8.0, 3.0])
def test_encode_gif_is_byte_identical_to_both_old_encoders(channels, fps):
    video = np.random.default_rng(channels).integers(0, 256, (4, 18, 22, channels), dtype=np.uint8)
    gif = files.encode_gif(video, fps)
    assert gif[:6] == b"GIF89a"
    assert gif == _old_sampler_gif(video, fps) == _old_tensorboard_gif(video, fps)
    assert files.encode_gif(torch.from_numpy(video), fps) == gif


def test_encode_gif_rejects_non_videos():
    with pytest.raises(ValueError, match="uint8"):
        files.encode_gif(np.zeros((4, 8, 8, 3), np.float32))


def test_write_video_by_extension(tmp_path):
    video = np.random.default_rng(2).integers(0, 256, (5, 16, 24, 3), dtype=np.uint8)
    paths = {kind: files.write_video(video, str(tmp_path / f"v.{kind}"), fps=8.0) for kind in files.OUTPUT_KINDS}
    assert np.array_equal(np.load(paths["npy"]), video)
    with open(paths["gif"], "rb") as f:
        assert f.read() == _old_sampler_gif(video, 8.0)
    grid = cv2.cvtColor(cv2.imread(paths["png"]), cv2.COLOR_BGR2RGB)
    assert grid.shape == (2 * 16, 3 * 24, 3) and np.array_equal(grid[:16, 24:48], video[1])
    # The old MP4 writer, frame for frame: same codec, same BGR frames, so the same decoded frames.
    old = str(tmp_path / "old.mp4")
    writer = cv2.VideoWriter(old, cv2.VideoWriter_fourcc(*"mp4v"), 8.0, (24, 16), isColor=True)
    for frame in video:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    assert np.array_equal(_sequential(paths["mp4"]), _sequential(old))
    with pytest.raises(ValueError, match="cannot tell a format"):
        files.write_video(video, str(tmp_path / "v.avi"))


# ------------------------------------------------------------------ reading clips


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """A 40-frame mp4v MP4 and MJPG AVI (the fixtures' moving gradient; mp4v has inter frames)."""
    root = tmp_path_factory.mktemp("videos")
    paths = {}
    for ext in (".mp4", ".avi"):
        paths[ext] = str(root / f"clip{ext}")
        write_video(paths[ext], frames=40, size=(24, 32), seed=4)
    return paths


@pytest.mark.parametrize("ext", [".mp4", ".avi"])
@pytest.mark.parametrize("start,count,stride", [(0, 8, 1), (1, 5, 1), (13, 8, 1), (25, 15, 1), (3, 6, 3), (17, 4, 7), (39, 1, 1)])
def test_read_frames_equals_the_sequential_decode(videos, ext, start, count, stride):
    path = videos[ext]
    expected = _sequential(path)[start : start + (count - 1) * stride + 1 : stride]
    clip = files.read_frames(path, start, count, stride)
    assert clip.shape == (count, 24, 32, 3) and clip.dtype == np.uint8
    assert np.array_equal(clip, expected)


class _Capture:
    """Wraps OpenCV's capture (a Python subclass of it crashes at exit): counts decoded frames and,
    when ``miss`` is set, seeks ``miss`` frames short of the frame asked for."""

    miss = 0
    opened = reads = grabs = 0

    def __init__(self, *args):
        self.capture = _OPENCV_CAPTURE(*args)
        type(self).opened += 1

    def set(self, prop, value):
        return self.capture.set(prop, value - type(self).miss if prop == cv2.CAP_PROP_POS_FRAMES else value)

    def read(self, *args):
        type(self).reads += 1
        return self.capture.read(*args)

    def grab(self):
        type(self).grabs += 1
        return self.capture.grab()

    def __getattr__(self, name):  # get, isOpened, release
        return getattr(self.capture, name)


@pytest.fixture
def capture(monkeypatch):
    class Counting(_Capture):
        pass

    monkeypatch.setattr(files.cv2, "VideoCapture", Counting)
    return Counting


@pytest.mark.parametrize("ext", [".mp4", ".avi"])
def test_a_missed_seek_reads_forward_to_the_same_frames(videos, capture, ext):
    capture.miss = 3
    clip = files.read_frames(videos[ext], 20, 6, 2)
    assert capture.opened == 2  # the seek landed 3 short, so the file was read again from its start
    assert np.array_equal(clip, _sequential(videos[ext])[20:31:2])


@pytest.mark.parametrize("ext", [".mp4", ".avi"])
def test_a_clip_converts_only_the_frames_it_keeps(videos, capture, ext):
    files.read_frames(videos[ext], 10, 4, 5)
    assert (capture.opened, capture.reads, capture.grabs) == (1, 4, 3 * 4)


def test_too_short_and_unreadable_files(videos, tmp_path):
    with pytest.raises(files.UnreadableMedia, match="decoded 2 of 4 frames"):
        files.read_frames(videos[".avi"], 38, 4, 1)
    with pytest.raises(files.UnreadableMedia, match="ended after 2 of 3 frames"):
        files.read_frames(videos[".mp4"], 30, 3, 9)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 8)
    with pytest.raises(files.UnreadableMedia):
        files.read_frames(str(broken), 0, 2, 1)
    with pytest.raises(files.UnreadableMedia):
        files.read_video(str(broken))
    assert issubclass(files.UnreadableMedia, ValueError)


def test_read_video_takes_the_first_frames_and_arrays_read_as_rgb(videos, tmp_path):
    assert np.array_equal(files.read_video(videos[".mp4"], max_frames=7), _sequential(videos[".mp4"])[:7])
    assert files.read_video(videos[".avi"]).shape == (40, 24, 32, 3)
    grey = np.random.default_rng(0).integers(0, 256, (3, 4, 5, 1), dtype=np.uint8)
    np.save(tmp_path / "grey.npy", grey)
    assert np.array_equal(files.read_array_video(str(tmp_path / "grey.npy"), 2), np.repeat(grey[:2], 3, axis=-1))
    np.save(tmp_path / "floats.npy", grey.astype(np.float32))
    with pytest.raises(files.UnreadableMedia, match="uint8"):
        files.read_array_video(str(tmp_path / "floats.npy"))


# Codecs this OpenCV build writes for each container (".gif" goes through encode_gif).
_WRITERS = {
    ".avi": "MJPG", ".mp4": "mp4v", ".mkv": "mp4v", ".mov": "mp4v", ".webm": "VP80", ".mpg": "PIM1",
    ".mpeg": "PIM1", ".m4v": "mp4v", ".wmv": "WMV2", ".flv": "FLV1",
}


@pytest.mark.parametrize("ext", files.VIDEO_EXTENSIONS)
def test_opencv_reads_every_listed_container(tmp_path, ext):
    clip = np.random.default_rng(5).integers(0, 256, (6, 32, 48, 3), dtype=np.uint8)
    path = str(tmp_path / f"v{ext}")
    if ext == ".gif":
        files.write_video(clip, path)
    else:
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*_WRITERS[ext]), 25.0, (48, 32))
        if not writer.isOpened():
            pytest.skip(f"this OpenCV build cannot encode {ext}")
        for frame in clip:
            writer.write(frame)
        writer.release()
    video = files.read_video(path)
    assert video.shape == (6, 32, 48, 3)
    assert files.probe_video(path).height == 32
    assert np.array_equal(files.read_frames(path, 2, 3, 1), video[2:5])


def test_extension_lists_are_lower_case_and_disjoint():
    for extensions in (files.VIDEO_EXTENSIONS, files.IMAGE_EXTENSIONS):
        assert all(e == e.lower() and e.startswith(".") for e in extensions) and len(set(extensions)) == len(extensions)
    assert not set(files.VIDEO_EXTENSIONS) & set(files.IMAGE_EXTENSIONS)


# ------------------------------------------------------------------ skips


def test_skip_report_counts_by_reason_with_examples():
    report = SkipReport("videos", "/data")
    for path, reason in (("a.avi", "unreadable"), ("b.avi", "too short"), ("c.avi", "unreadable")):
        report.add(path, reason)
    assert report.count == 3 and report.by_reason == {"unreadable": 2, "too short": 1}
    assert report.summary() == "1 too short (e.g. 'b.avi'), 2 unreadable (e.g. 'a.avi')"
    assert report.message(10).startswith("Skipped 3 of 10 videos under /data (1 too short, 2 unreadable)")
    assert SkipReport().message() == "Skipped 0 files (); first: "
