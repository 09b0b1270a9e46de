"""Clip sampler semantics: frame step, clip stride, N subset / repeat-pad, short and empty frames."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from cross4d_core.data import ClipDataset, DatasetWriter
from cross4d_core.data.clips import nearest_nonempty
from cross4d_core.geometry.camera import PinholeCamera
from cross4d_core.preprocess import frame_rng, sample_point_indices


def _coded_frames(video: int, counts):
    """Point j of frame t of video v is (v, t, j): every sample can be decoded."""
    return [np.stack([np.full(n, video), np.full(n, t), np.arange(n)], 1).astype(np.float32)
            for t, n in enumerate(counts)]


@pytest.fixture()
def root(tmp_path):
    videos = {
        "long": [50] * 10,                  # 10 frames, plenty of points
        "few": [3, 5, 4, 6, 2, 3, 4, 5],    # 8 frames, fewer points than N
        "short": [20, 20, 20],              # shorter than the clip span
        "gaps": [0, 9, 0, 0, 9, 9, 0],      # empty frames
        "void": [0, 0, 0, 0, 0, 0, 0, 0],   # no points at all
    }
    with DatasetWriter(tmp_path, source="unit", label_names=["x", "y"]) as w:
        for v, (vid, counts) in enumerate(sorted(videos.items())):
            frames = _coded_frames(v, counts)
            w.add_video(vid, frames, label=v % 2, split="test" if vid == "long" else "train",
                        part=[f[:, 2].astype(int) % 4 for f in frames], track=[f[:, 2].astype(int) + 1000 * t
                                                                               for t, f in enumerate(frames)],
                        images=np.full((len(counts), 2, 3, 3), v, np.uint8),
                        cameras=PinholeCamera.from_focal(2.0, 3, 2))
    return tmp_path


def _ids(clips):
    return [e["id"] for e in clips.dataset.entries]


def test_clip_index_frame_step_and_stride(root):
    clips = ClipDataset(root, split="test", frames=3, frame_step=2, clip_stride=3, num_points=16)
    assert clips.span == 5 and clips.num_videos == 1
    assert clips.clip_starts.tolist() == [0, 3]  # starts 0, 3 (6 + 5 > 10)
    for i, start in enumerate([0, 3]):
        item = clips[i]
        assert item["points"].shape == (3, 16, 3) and item["points"].dtype == torch.float32
        assert item["start"].item() == start and item["label"].item() == _ids(clips).index("long") % 2
        assert item["video"].item() == _ids(clips).index("long")
        frames = item["points"][:, :, 1]
        assert (frames == torch.tensor([start, start + 2, start + 4])[:, None]).all()
        for t in range(3):  # a subset without replacement
            assert len(torch.unique(item["points"][t, :, 2])) == 16


def test_repeat_pad_uses_every_point_evenly_and_never_zeros(root):
    clips = ClipDataset(root, split="train", frames=4, num_points=11, short_video="report")
    few = [i for i in range(len(clips)) if clips.clip_videos[i] == _ids(clips).index("few")]
    assert len(few) == 5
    counts = [3, 5, 4, 6, 2, 3, 4, 5]
    for i in few:
        pts = clips[i]["points"].numpy()
        for t in range(4):
            frame = int(pts[t, 0, 1])
            n = counts[frame]
            j = pts[t, :, 2].astype(int)
            hist = np.bincount(j, minlength=n)
            assert len(hist) == n and hist.min() == 11 // n and hist.max() <= 11 // n + 1
            assert (pts[t, :, 1] == frame).all()


def test_short_video_pad_repeats_last_frame_and_report_lists_it(root):
    pad = ClipDataset(root, split="train", frames=5, frame_step=1, num_points=4, short_video="pad")
    report = ClipDataset(root, split="train", frames=5, frame_step=1, num_points=4, short_video="report")
    short = _ids(pad).index("short")
    assert pad.short_videos == [{"id": "short", "num_frames": 3, "policy": "pad"}]
    assert report.short_videos == [{"id": "short", "num_frames": 3, "policy": "report"}]
    assert short in pad.clip_videos and short not in report.clip_videos
    assert len(pad) == len(report) + 1
    i = int(np.nonzero(pad.clip_videos == short)[0][0])
    frames = pad[i]["points"][:, 0, 1].tolist()
    assert frames == [0, 1, 2, 2, 2]
    assert pad.empty_videos == ["void"] == report.empty_videos


def test_empty_frames_are_replaced_by_nearest_nonempty_and_counted(root):
    clips = ClipDataset(root, split="train", frames=7, num_points=5)
    assert clips.empty_frames == 4  # "gaps" (the all-empty video is listed separately)
    i = int(np.nonzero(clips.clip_videos == _ids(clips).index("gaps"))[0][0])
    frames = clips[i]["points"][:, 0, 1].tolist()
    assert frames == [1, 1, 1, 4, 4, 5, 5]
    clip = clips.get_clip(i)
    assert (clip.points[:, :, 1] == np.array(frames)[:, None]).all()


def test_deterministic_per_seed_and_epoch(root):
    a = ClipDataset(root, frames=2, num_points=20, seed=5)
    b = ClipDataset(root, frames=2, num_points=20, seed=5)
    c = ClipDataset(root, frames=2, num_points=20, seed=6)
    for i in (0, len(a) - 1):
        assert torch.equal(a[i]["points"], b[i]["points"])
    assert not torch.equal(a[0]["points"], c[0]["points"])
    before = a[0]["points"].clone()
    a.set_epoch(1)
    assert not torch.equal(a[0]["points"], before)
    assert torch.equal(a[len(a) - 1]["points"], a[len(a) - 1]["points"])


def test_get_clip_carries_images_cameras_part_track(root):
    clips = ClipDataset(root, split="test", frames=3, num_points=8, with_images=True)
    item, clip = clips[1], clips.get_clip(1)
    np.testing.assert_array_equal(clip.points, item["points"].numpy())
    j = clip.points[:, :, 2].astype(int)
    t = clip.points[:, :, 1].astype(int)
    np.testing.assert_array_equal(clip.part, j % 4)
    np.testing.assert_array_equal(clip.track, j + 1000 * t)
    assert clip.part.dtype == np.int64 and clip.label == _ids(clips).index("long") % 2
    np.testing.assert_array_equal(clip.stamps_ns, [1_000_000_000, 2_000_000_000, 3_000_000_000])
    assert clip.images.shape == (3, 2, 3, 3) and len(clip.cameras) == 3 and clip.cameras[0].fx == 2.0
    assert item["images"].shape == (3, 2, 3, 3) and item["K"].shape == (3, 3, 3)
    batch = next(iter(torch.utils.data.DataLoader(clips, batch_size=2, num_workers=1)))
    assert batch["points"].shape == (2, 3, 8, 3) and torch.equal(batch["points"][1], item["points"])


def test_bad_arguments(root):
    with pytest.raises(ValueError, match="short_video"):
        ClipDataset(root, short_video="drop")
    with pytest.raises(ValueError, match="frame_step"):
        ClipDataset(root, frame_step=0)
    with pytest.raises(ValueError, match=r"split\(s\) \['val'\]"):
        ClipDataset(root, split="val")
    with pytest.raises(IndexError):
        ClipDataset(root)[10_000]


@given(n=st.integers(1, 300), num_points=st.integers(1, 300), seed=st.integers(0, 2**32 - 1))
def test_sample_point_indices_properties(n, num_points, seed):
    idx = sample_point_indices(n, num_points, np.random.default_rng(seed))
    assert idx.shape == (num_points,) and idx.dtype == np.int64 and idx.min() >= 0 and idx.max() < n
    hist = np.bincount(idx, minlength=n)
    if n >= num_points:
        assert hist.max() == 1
    else:
        assert hist.min() == num_points // n and hist.max() <= num_points // n + 1
    distinct = min(n, num_points)
    assert len(np.unique(idx[:distinct])) == distinct  # a distinct prefix, then repeats
    np.testing.assert_array_equal(idx, sample_point_indices(n, num_points, np.random.default_rng(seed)))


def test_sample_order_is_random_not_the_sensor_order():
    """Farthest-point sampling starts at the first point: the first sampled point must not
    be the sensor's first point, and frames must not come out in sensor order."""
    firsts = [sample_point_indices(100, 100, frame_rng(t))[0] for t in range(200)]
    assert len(set(firsts)) > 50  # spread over the cloud, not always index 0
    assert not any(np.array_equal(sample_point_indices(100, n, frame_rng(7)), np.arange(n)) for n in (10, 100, 250))
    with pytest.raises(ValueError, match="at least one point"):
        sample_point_indices(0, 4, frame_rng(0))


def test_a_frame_is_sampled_alike_in_every_clip_that_holds_it(root):
    clips = ClipDataset(root, split="test", frames=3, num_points=16)  # "long": clips start at 0, 1, 2, ...
    a, b = clips[0]["points"], clips[1]["points"]  # frames 0-2 and 1-3
    assert torch.equal(a[1:], b[:2])
    clips.set_epoch(1)
    assert not torch.equal(clips[0]["points"][1], a[1])  # another epoch, other points


@given(st.lists(st.integers(0, 3), min_size=1, max_size=40).filter(any))
def test_nearest_nonempty_matches_brute_force(counts):
    counts = np.array(counts)
    full = [t for t in range(len(counts)) if counts[t] > 0]
    want = [min(full, key=lambda f: (abs(f - t), f)) for t in range(len(counts))]
    assert nearest_nonempty(counts).tolist() == want
