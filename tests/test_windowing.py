"""The stream contract (cross4d_core.windowing): WindowBuffer windows are the last T frames,
emitted every stride frames; time going backwards or a frame gap restarts them; repeated
stamps and foreign frame ids are refused; FramePairer pairs each cloud with the nearest image
whatever order the streams arrive in (property tests against brute-force references)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cross4d_core.errors import FrameRejected
from cross4d_core.windowing import Frame, FramePairer, NearestStampQueue, WindowBuffer

MS = 1_000_000  # ns


def _frame(stamp_ns: int, frame_id: str = "lidar") -> Frame:
    return Frame(stamp_ns=stamp_ns, points=np.full((2, 3), stamp_ns, dtype=np.float32), frame_id=frame_id)


def _push_all(buffer: WindowBuffer, stamps):
    """Windows of ``stamps`` and the number of refused frames."""
    windows, refused = [], 0
    for s in stamps:
        try:
            window = buffer.push(_frame(s))
        except FrameRejected:
            refused += 1
            continue
        if window is not None:
            windows.append(window)
    return windows, refused


def _reference_windows(stamps: list[int], length: int, stride: int, max_gap: int) -> list[list[int]]:
    """Brute force: split into runs (backwards or a gap > max_gap starts one; duplicates
    dropped), a window every stride frames of a run."""
    out, run = [], []
    for s in stamps:
        if run and s == run[-1]:
            continue
        if run and (s < run[-1] or (max_gap and s - run[-1] > max_gap)):
            run = []
        run.append(s)
        if len(run) >= length and (len(run) - length) % stride == 0:
            out.append(run[-length:])
    return out


@given(length=st.integers(1, 6), stride=st.integers(1, 4), n=st.integers(0, 40))
def test_monotonic_stream_emits_last_length_frames_every_stride(length, stride, n):
    windows, refused = _push_all(buffer := WindowBuffer(length, stride), [100 * MS * i for i in range(n)])
    expected_count = 0 if n < length else 1 + (n - length) // stride
    assert len(windows) == expected_count and refused == 0
    for k, w in enumerate(windows):
        end_index = length - 1 + k * stride
        np.testing.assert_array_equal(w.stamps_ns, 100 * MS * np.arange(end_index - length + 1, end_index + 1))
        assert w.stamps_ns.dtype == np.int64
        assert w.index == k and w.start_ns == w.frames[0].stamp_ns and w.end_ns == w.frames[-1].stamp_ns
        assert len(w.frames) == length and w.sequence == 0
    assert buffer.resets == 0 and buffer.gaps == 0


@given(
    stamps=st.lists(st.integers(0, 12).map(lambda i: i * 500 * MS), max_size=60),
    length=st.integers(1, 5),
    stride=st.integers(1, 3),
    max_gap=st.sampled_from([0, 500 * MS, 1500 * MS]),
)
def test_arbitrary_stream_matches_reference(stamps, length, stride, max_gap):
    buffer = WindowBuffer(length, stride, max_gap)
    got, refused = _push_all(buffer, stamps)
    assert [w.stamps_ns.tolist() for w in got] == _reference_windows(stamps, length, stride, max_gap)
    for w in got:  # never a window that mixes two runs
        assert np.all(np.diff(w.stamps_ns) > 0) and (not max_gap or np.all(np.diff(w.stamps_ns) <= max_gap))
    backwards = sum(1 for a, b in zip(stamps, stamps[1:]) if b < a)
    gaps = sum(1 for a, b in zip(stamps, stamps[1:]) if max_gap and b - a > max_gap)
    assert (buffer.resets, buffer.gaps) == (backwards, gaps)
    assert refused == sum(1 for a, b in zip(stamps, stamps[1:]) if b == a)
    assert [w.index for w in got] == list(range(len(got)))


def test_backwards_time_restarts_and_starts_new_sequence():
    buffer = WindowBuffer(3, 1)
    out, _ = _push_all(buffer, [1000, 2000, 3000, 4000])
    assert [w.end_ns for w in out] == [3000, 4000]
    assert buffer.push(_frame(500)) is None  # bag loops: old frames must not join
    assert len(buffer) == 1 and buffer.resets == 1
    assert buffer.push(_frame(1500)) is None
    w = buffer.push(_frame(2500))
    assert w.stamps_ns.tolist() == [500, 1500, 2500] and w.sequence == 1 and w.index == 2


def test_a_forward_jump_beyond_the_maximum_gap_restarts_the_window():
    """One cloud stamped 0, then clouds from t = 1000 s: not one window spanning 1000 s."""
    buffer = WindowBuffer(3, 1, max_gap_ns=1000 * MS)
    assert buffer.push(_frame(0)) is None
    out, _ = _push_all(buffer, [1_000_000 * MS + 100 * MS * i for i in range(4)])
    assert buffer.gaps == 1 and buffer.resets == 0 and buffer.sequence == 1
    assert [w.start_ns for w in out] == [1_000_000 * MS, 1_000_100 * MS]
    assert all(w.sequence == 1 for w in out)
    assert buffer.push(_frame(1_000_300 * MS + 1000 * MS)).start_ns == 1_000_200 * MS  # exactly the maximum gap
    assert buffer.gaps == 1
    unbounded = WindowBuffer(2, 1)  # max_gap_ns 0: no limit
    assert unbounded.push(_frame(0)) is None and unbounded.push(_frame(10**15)).start_ns == 0


def test_repeated_stamps_and_foreign_frames_are_refused_with_the_reason():
    buffer = WindowBuffer(2, 1)
    buffer.push(_frame(1000, "/lidar"))
    with pytest.raises(FrameRejected, match="stamp 1000 ns repeats the previous frame's"):
        buffer.push(_frame(1000))
    with pytest.raises(FrameRejected, match="frame_id 'camera' is not the stream's 'lidar'"):
        buffer.push(_frame(1500, "camera"))
    assert len(buffer) == 1 and buffer.frame_id == "lidar"
    assert buffer.push(_frame(2000, "lidar")).stamps_ns.tolist() == [1000, 2000]  # '/lidar' is 'lidar'
    buffer.push(_frame(0))  # a restart keeps the stream's frame
    with pytest.raises(FrameRejected, match="not the stream's 'lidar'"):
        buffer.push(_frame(5000, "map"))


@pytest.mark.parametrize("length,stride,gap", [(0, 1, 0), (2, 0, 0), (-1, 1, 0), (2, 1, -1)])
def test_invalid_sizes_name_the_field(length, stride, gap):
    with pytest.raises(ValueError, match="WindowBuffer"):
        WindowBuffer(length, stride, gap)


@given(
    item_stamps=st.lists(st.integers(0, 100), max_size=30, unique=True),
    query=st.integers(-5, 105),
    tolerance=st.integers(0, 10),
)
def test_pop_nearest_matches_brute_force(item_stamps, query, tolerance):
    queue = NearestStampQueue(maxlen=100, tolerance_ns=tolerance)
    for s in item_stamps:
        queue.push(s, ("item", s))
    got = queue.pop_nearest(query)
    if item_stamps:
        best = min(abs(s - query) for s in item_stamps)
    if not item_stamps or best > tolerance:
        assert got is None
        assert len(queue) == len(item_stamps)
    else:
        assert got is not None and abs(got[1] - query) == best
        # the match and everything older are consumed
        assert len(queue) == sum(1 for s in item_stamps if s > got[1])


def test_queue_is_bounded_drop_oldest_and_counts():
    queue = NearestStampQueue(maxlen=3, tolerance_ns=10)
    for s in range(5):
        queue.push(1000 * s, s)
    assert len(queue) == 3 and queue.dropped == 2
    assert queue.pop_nearest(0) is None  # dropped
    assert queue.pop_nearest(2000) == 2 and len(queue) == 2
    with pytest.raises(ValueError, match="maxlen"):
        NearestStampQueue(0, 1)
    with pytest.raises(ValueError, match="tolerance"):
        NearestStampQueue(2, -1)


def _reference_pairing(clouds: list[int], images: list[int], tolerance: int) -> list[int | None]:
    """The nearest image within tolerance among those no earlier cloud consumed (a match
    consumes itself and every older image); the earlier one on a tie."""
    out, consumed = [], -1
    for c in clouds:
        candidates = [s for s in images if s > consumed]
        best = min(candidates, key=lambda s: (abs(s - c), s)) if candidates else None
        if best is not None and abs(best - c) <= tolerance:
            out.append(best)
            consumed = best
        else:
            out.append(None)
    return out


@given(
    clouds=st.lists(st.integers(0, 2000), min_size=1, max_size=25, unique=True).map(sorted),
    images=st.lists(st.integers(0, 2000), max_size=25, unique=True).map(sorted),
    order=st.lists(st.booleans(), min_size=50, max_size=50),
    tolerance=st.integers(0, 300),
)
def test_pairing_is_the_nearest_image_whatever_the_arrival_order(clouds, images, order, tolerance):
    pairer = FramePairer(tolerance, queue_depth=100, images=True)
    pending_clouds, pending_images, frames = list(clouds), list(images), []
    for cloud_first in order + [True] * len(clouds) + [False] * len(images):
        if cloud_first and pending_clouds:
            pairer.add_cloud(pending_clouds.pop(0), "lidar", np.zeros((1, 3)))
        elif pending_images:
            stamp = pending_images.pop(0)
            pairer.add_image(stamp, stamp)  # the image is its own stamp
        frames += pairer.pop_ready()
    frames += pairer.pop_ready(flush=True)
    assert [f.stamp_ns for f in frames] == clouds
    assert [f.image for f in frames] == _reference_pairing(clouds, images, tolerance)


def test_a_cloud_waits_for_its_image_until_the_stream_passes_it_or_the_deadline():
    pairer = FramePairer(20 * MS, queue_depth=10, images=True, camera_infos=True)
    pairer.add_camera_info(0, "K0")
    pairer.add_image(95 * MS, "early")
    pairer.add_cloud(100 * MS, "lidar", np.zeros((1, 3)), deadline=5.0)
    assert pairer.pop_ready(now=1.0) == []  # an image after 100 ms may still be nearer
    pairer.add_image(101 * MS, "near")  # recorded after the cloud, nearer than the early one
    assert pairer.pop_ready(now=1.0) == []  # the camera info stream has not passed 100 ms yet
    pairer.add_camera_info(101 * MS, "K1")
    (frame,) = pairer.pop_ready(now=1.0)
    assert (frame.image, frame.camera) == ("near", "K1")
    pairer.add_cloud(200 * MS, "lidar", np.zeros((1, 3)), deadline=5.0)
    assert pairer.pop_ready(now=4.9) == [] and len(pairer) == 1
    (frame,) = pairer.pop_ready(now=5.0)  # the camera died: goes on without, with the last camera info
    assert (frame.image, frame.camera) == (None, "K1")


def test_each_pass_pairs_within_itself_and_the_last_cloud_of_a_pass_is_not_lost():
    pairer = FramePairer(5 * MS, queue_depth=10, images=True)
    for t in (0, 100, 200):  # pass 1, the image of the last cloud not yet there
        pairer.add_cloud(t * MS, "lidar", np.zeros((1, 3)))
        if t < 200:
            pairer.add_image(t * MS, f"p1@{t}")
    assert [f.image for f in pairer.pop_ready()] == ["p1@0", "p1@100"]
    pairer.add_image(1 * MS, "p2@1")  # the bag loops: the image stream starts pass 2
    (last,) = pairer.pop_ready()  # pass 1's image stream is over: its last cloud goes, unpaired
    assert (last.stamp_ns, last.image) == (200 * MS, None)
    pairer.add_cloud(0, "lidar", np.zeros((1, 3)))
    (first,) = pairer.pop_ready()
    assert first.image == "p2@1"  # never pass 1's image at 0 ms


def test_waiting_clouds_are_bounded_and_flushed():
    pairer = FramePairer(MS, queue_depth=2, images=True)
    for t in range(3):
        pairer.add_cloud(t * MS, "lidar", np.zeros((1, 3)))
    assert [f.stamp_ns for f in pairer.pop_ready()] == [0]  # beyond queue_depth the oldest goes on
    assert [f.stamp_ns for f in pairer.pop_ready(flush=True)] == [MS, 2 * MS]
    assert pairer.queue_sizes() == {"pending_clouds": 0, "images": 0, "camera_infos": 0}
    cloud_only = FramePairer(MS, queue_depth=2)
    cloud_only.add_cloud(7, "lidar", np.zeros((1, 3)))
    assert [f.stamp_ns for f in cloud_only.pop_ready()] == [7]  # nothing to wait for
