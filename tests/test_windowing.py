"""WindowBuffer / NearestStampQueue: windows are the last T frames, emitted every stride
frames, time going backwards clears, duplicates are rejected (property tests against a
brute-force reference)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cross4d_core.windowing import Frame, NearestStampQueue, WindowBuffer


def _frame(stamp: float) -> Frame:
    return Frame(stamp=stamp, points=np.full((2, 3), stamp, dtype=np.float32), frame_id="lidar")


def _reference_windows(stamps: list[float], length: int, stride: int) -> list[list[float]]:
    """Brute force: split into monotonic runs (duplicates dropped), window every stride frames."""
    out, run = [], []
    for s in stamps:
        if run and s == run[-1]:
            continue
        if run and s < run[-1]:
            run = []
        run.append(s)
        if len(run) >= length and (len(run) - length) % stride == 0:
            out.append(run[-length:])
    return out


@given(
    length=st.integers(1, 6),
    stride=st.integers(1, 4),
    n=st.integers(0, 40),
)
def test_monotonic_stream_emits_last_length_frames_every_stride(length, stride, n):
    buffer = WindowBuffer(length, stride)
    windows = [w for w in (buffer.push(_frame(0.1 * i)) for i in range(n)) if w is not None]
    expected_count = 0 if n < length else 1 + (n - length) // stride
    assert len(windows) == expected_count
    for k, w in enumerate(windows):
        end_index = length - 1 + k * stride
        np.testing.assert_allclose(w.stamps, 0.1 * np.arange(end_index - length + 1, end_index + 1))
        assert w.index == k and w.start == w.frames[0].stamp and w.end == w.frames[-1].stamp
        assert len(w.frames) == length
    assert buffer.resets == 0 and buffer.rejected == 0


@given(
    stamps=st.lists(st.integers(0, 12).map(lambda i: i * 0.5), max_size=60),
    length=st.integers(1, 5),
    stride=st.integers(1, 3),
)
def test_arbitrary_stream_matches_reference(stamps, length, stride):
    buffer = WindowBuffer(length, stride)
    got = [w for w in (buffer.push(_frame(s)) for s in stamps) if w is not None]
    assert [list(w.stamps) for w in got] == _reference_windows(stamps, length, stride)
    for w in got:  # never a window that mixes two monotonic runs
        assert np.all(np.diff(w.stamps) > 0)
    backwards = sum(1 for a, b in zip(stamps, stamps[1:]) if b < a)
    duplicates = sum(1 for a, b in zip(stamps, stamps[1:]) if b == a)
    assert buffer.resets == backwards
    assert buffer.rejected == duplicates
    assert [w.index for w in got] == list(range(len(got)))


def test_backwards_time_clears_and_starts_new_sequence():
    buffer = WindowBuffer(3, 1)
    out = [buffer.push(_frame(s)) for s in (1.0, 2.0, 3.0, 4.0)]
    assert [w.end for w in out if w] == [3.0, 4.0]
    assert buffer.push(_frame(0.5)) is None  # bag loops: old frames must not join
    assert len(buffer) == 1 and buffer.resets == 1
    assert buffer.push(_frame(1.5)) is None
    w = buffer.push(_frame(2.5))
    assert list(w.stamps) == [0.5, 1.5, 2.5] and w.sequence == 1 and w.index == 2


def test_duplicate_and_nonfinite_stamps_are_rejected():
    buffer = WindowBuffer(2, 1)
    buffer.push(_frame(1.0))
    assert buffer.push(_frame(1.0)) is None
    assert buffer.push(_frame(float("nan"))) is None
    assert buffer.rejected == 2 and len(buffer) == 1
    assert list(buffer.push(_frame(2.0)).stamps) == [1.0, 2.0]


def test_clear_requires_a_full_window_again():
    buffer = WindowBuffer(2, 1)
    buffer.push(_frame(1.0))
    buffer.push(_frame(2.0))
    buffer.clear()
    assert buffer.push(_frame(3.0)) is None
    assert buffer.push(_frame(4.0)).start == 3.0


@pytest.mark.parametrize("length,stride", [(0, 1), (2, 0), (-1, 1)])
def test_invalid_sizes_name_the_field(length, stride):
    with pytest.raises(ValueError, match="WindowBuffer"):
        WindowBuffer(length, stride)


@given(
    item_stamps=st.lists(st.floats(0, 100, allow_nan=False), max_size=30, unique=True),
    query=st.floats(-5, 105, allow_nan=False),
    tolerance=st.floats(0, 10),
)
def test_pop_nearest_matches_brute_force(item_stamps, query, tolerance):
    queue = NearestStampQueue(maxlen=100, tolerance=tolerance)
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
    queue = NearestStampQueue(maxlen=3, tolerance=0.01)
    for s in range(5):
        queue.push(float(s), s)
    assert len(queue) == 3 and queue.dropped == 2
    assert queue.pop_nearest(0.0) is None  # dropped
    assert queue.peek_nearest(3.005) == 3 and len(queue) == 3
    assert queue.pop_nearest(2.0) == 2 and len(queue) == 2
    queue.clear()
    assert len(queue) == 0 and queue.pop_nearest(3.0) is None


def test_queue_rejects_bad_parameters_and_stamps():
    with pytest.raises(ValueError, match="maxlen"):
        NearestStampQueue(0, 0.1)
    with pytest.raises(ValueError, match="tolerance"):
        NearestStampQueue(2, -1.0)
    with pytest.raises(ValueError, match="stamp"):
        NearestStampQueue(2, 0.1).push(float("inf"), 1)
