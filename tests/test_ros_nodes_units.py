"""ROS-free pieces of the nodes: preprocessing, PCA colours, parameter checks, transforms."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cross4d_core.preprocess import FramePreprocessor, frame_rng

pytest.importorskip("rclpy", reason="rclpy not installed: run `make setup`")


def _rigid(angle: float, t) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    m = np.eye(4)
    m[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    m[:3, 3] = t
    return m


@given(n=st.integers(1, 300), num_points=st.integers(1, 200), stamp=st.integers(-2**62, 2**62))
def test_preprocess_returns_exactly_n_points_from_the_cloud(n, num_points, stamp):
    rng = np.random.default_rng(abs(stamp) % 2**32)
    pts = rng.normal(size=(n, 3)).astype(np.float32)
    transform = _rigid(0.3, [1.0, -2.0, 0.5])
    out = FramePreprocessor(num_points, transform)(pts, frame_rng(stamp))
    assert out.points.shape == (num_points, 3) and out.points.dtype == np.float32 and out.index.shape == (num_points,)
    expected = pts[out.index].astype(np.float64) @ transform[:3, :3].T + transform[:3, 3]
    np.testing.assert_allclose(out.points, expected, atol=1e-5)
    unique = np.unique(out.index)
    assert len(unique) == min(n, num_points)  # a subset when too many, every point when too few
    assert len(np.unique(out.index[: len(unique)])) == len(unique)  # the distinct ones come first
    if n < num_points:  # repeat-pad cycles through a permutation of the cloud
        np.testing.assert_array_equal(out.index, np.resize(out.index[:n], num_points))


def test_preprocess_is_deterministic_per_stamp_and_crops_range():
    pts = np.array([[0.1, 0, 0], [1, 0, 0], [3, 0, 0], [np.nan, 0, 0], [0, 2, 0]], np.float32)
    prep = FramePreprocessor(4, np.eye(4), range_min=0.5, range_max=2.5)
    out = prep(pts, frame_rng(0))
    assert sorted(out.index[:2].tolist()) == [1, 4] and out.index[2:].tolist() == out.index[:2].tolist()
    big = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
    a = FramePreprocessor(10, np.eye(4))(big, frame_rng(1_250_000_000))
    b = FramePreprocessor(10, np.eye(4))(big, frame_rng(1_250_000_000))
    c = FramePreprocessor(10, np.eye(4))(big, frame_rng(1_250_000_001))
    np.testing.assert_array_equal(a.index, b.index)
    assert not np.array_equal(a.index, c.index)
    with pytest.raises(ValueError, match="no points within range"):
        prep(np.array([[10.0, 0, 0]], np.float32), frame_rng(0))
    with pytest.raises(ValueError, match="range_min = 2.0 m is not below range_max = 1.0 m"):
        FramePreprocessor(4, np.eye(4), range_min=2.0, range_max=1.0)
    with pytest.raises(ValueError, match="num_points"):
        FramePreprocessor(0, np.eye(4))


@given(value=st.floats(8192.5, 3e38), dtype=st.sampled_from([np.float32, np.float64]))
def test_absurd_coordinates_are_refused_unless_cropped(value, dtype):
    pts = np.array([[1.0, 2.0, 3.0], [value, -value, value], [0.5, 0.5, 0.5]], dtype)
    with pytest.raises(ValueError, match=r"beyond 8192 m .*set range_max"):
        FramePreprocessor(2, np.eye(4))(pts, frame_rng(0))
    kept = FramePreprocessor(2, np.eye(4), range_max=100.0)(pts, frame_rng(0))  # the crop removes it
    assert sorted(kept.index.tolist()) == [0, 2] and np.isfinite(kept.points).all()


def test_preprocess_keeps_float64_until_the_transform_into_a_local_frame():
    # A map-frame cloud in UTM coordinates (x ~ 5e5, y ~ 5.4e6 m), as FLOAT64 fields decode it,
    # and the transform local <- utm (a turn of 0.4 rad about z around the local origin).
    rng = np.random.default_rng(1)
    origin = np.array([512345.678, 5412345.678, 410.0])
    local = rng.uniform(-15, 15, size=(500, 3))
    local[0] = [19.9996, 0, 0]  # just inside range_max = 20 m
    local[1] = [20.0004, 0, 0]  # just outside
    local_from_utm = _rigid(0.4, [0, 0, 0]) @ _rigid(0.0, -origin)
    utm = (local - local_from_utm[:3, 3]) @ local_from_utm[:3, :3]  # inverse transform, float64
    prep = FramePreprocessor(600, local_from_utm, range_max=20.0)
    out = prep(utm, frame_rng(0))
    assert out.points.dtype == np.float32 and 0 in out.index and 1 not in out.index
    np.testing.assert_allclose(out.points, local[out.index], atol=1e-5)  # float32 of local metres: < 0.01 mm off
    cast_first = prep(utm.astype(np.float32), frame_rng(0))  # what a float32 decode did: centimetres off
    assert np.abs(cast_first.points - local[cast_first.index]).max() > 0.05
    with pytest.raises(ValueError, match="beyond 8192 m"):  # without the transform: UTM metres, refused
        FramePreprocessor(4, np.eye(4))(utm, frame_rng(0))


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "mps"])
def test_bad_device_parameter_is_a_value_error_naming_it(name):
    from cross4d_ros.torch_setup import resolve_torch_device

    with pytest.raises(ValueError, match=f"parameter 'device' = '{name}'"):
        resolve_torch_device(name)
    assert resolve_torch_device("cpu").type == "cpu"


def test_warnings_are_throttled_per_kind_and_survive_a_throttle_change(rclpy_context):
    from rclpy.parameter import Parameter

    from cross4d_ros.stream_node import StreamNode

    node = StreamNode("throttle_test", parameter_overrides=[Parameter("cloud_topic", value="points"),
                                                            Parameter("warn_throttle", value=60.0)])
    logged = []

    class Logger:
        def warning(self, text):
            logged.append(text)

        error = warning

    node.get_logger = Logger
    try:
        for _ in range(3):
            node.warn_throttled("a", "first a")
            node.warn_throttled("b", "first b")
        assert logged == ["first a", "first b"]  # one kind does not silence another
        assert node.set_parameters([Parameter("warn_throttle", value=0.0)])[0].successful
        node.warn_throttled("a", "second a")  # rclpy's own throttle raised ValueError here
        node.warn_throttled("a", "third a")
        assert logged[2:] == ["second a", "third a"]
    finally:
        node.destroy_node()


def test_param_checks_name_the_parameter():
    from cross4d_ros.params import Param

    assert Param("cloud_topic", "", "x", required=True).check("") == "parameter 'cloud_topic' is required (x)"
    assert "below its minimum 1" in Param("stride", 1, "x", min=1).check(0)
    assert "not one of" in Param("qos", "reliable", "x", choices=("reliable", "best_effort")).check("fast")
    assert "needs 16" in Param("points_transform", [0.0] * 16, "x", length=16).check([1.0])
    assert Param("top_k", 5, "x", min=1, max=10).check(5) is None
    d = Param("stride", 1, "frames", read_only=True, min=1, max=8).descriptor()
    assert d.read_only and d.integer_range[0].from_value == 1 and d.integer_range[0].to_value == 8


def test_invalid_parameters_are_a_config_error_of_the_one_hierarchy(rclpy_context):
    from rclpy.parameter import Parameter

    from cross4d_core.errors import ConfigError, Cross4DError
    from cross4d_ros.params import Param, ParameterError, declare_and_validate

    node = rclpy_context.create_node("param_errors", parameter_overrides=[Parameter("qos", value="fast")])
    try:
        with pytest.raises(ParameterError, match=r"param_errors: invalid parameters: parameter 'qos' = 'fast' is not "
                                                 r"one of \['reliable', 'best_effort'\]") as info:
            declare_and_validate(node, [Param("qos", "reliable", "x", choices=("reliable", "best_effort"))])
    finally:
        node.destroy_node()
    assert isinstance(info.value, ConfigError) and isinstance(info.value, Cross4DError)


def test_as_matrix_accepts_rigid_and_rejects_others():
    from cross4d_ros.stream_node import as_matrix

    m = _rigid(0.7, [1, 2, 3])
    np.testing.assert_allclose(as_matrix(m.reshape(-1).tolist(), "t"), m)
    with pytest.raises(ValueError, match="parameter 't' is not a rigid transform"):
        as_matrix((2 * np.eye(4)).reshape(-1).tolist(), "t")


def test_frame_cache_equals_full_window_forward_and_reuses_old_frames():
    import torch

    from cross4d_core.frame_cache import FrameEncodingCache
    from cross4d_core.models import Point4DConfig, Point4DEncoder

    torch.manual_seed(0)
    encoder = Point4DEncoder(Point4DConfig.tiny()).eval()
    frames = torch.randn(7, 64, 3)
    cache = FrameEncodingCache(encoder, capacity=5)
    T = 4
    for start in range(0, 4):
        keys = [float(t) for t in range(start, start + T)]
        got = cache.encode(keys, frames[start:start + T])
        with torch.no_grad():
            expected = encoder(frames[start:start + T][None])
        torch.testing.assert_close(got.clip_feature, expected.clip_feature, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got.token_features, expected.token_features, rtol=1e-5, atol=1e-6)
        assert torch.equal(got.token_point_index, expected.token_point_index)
    assert cache.misses == 7 and cache.hits == 3 * (T - 1) and len(cache) == 5
    cache.clear()
    cache.encode([3.0, 4.0, 5.0, 6.0], frames[3:7])
    assert cache.misses == 11


def _record(T=2, N=8, d=4, value=0.0):
    import torch

    from cross4d_core.targets import TargetRecord

    return TargetRecord(points=torch.full((T, N, 3), value), target=torch.zeros(T, N, dtype=torch.int64),
                        frame=torch.arange(T), features=torch.zeros(1, d, dtype=torch.float16),
                        cell=torch.zeros(1, dtype=torch.int64), clip_frames=torch.arange(T)[None],
                        clip_target=torch.zeros(1, d), start=torch.zeros(1, dtype=torch.int64),
                        clip=torch.zeros(1, dtype=torch.int64))


def test_target_recorder_writes_atomic_shards_resumes_and_bounds_disk_use(tmp_path):
    from cross4d_core.targets import FeatureProjection, TargetCache
    from cross4d_ros.distill_node import TargetRecorder

    config = {"teacher": {"name": "t"}, "source": "render", "d_p": 4}
    projection = FeatureProjection.random(6, 4, seed=0)
    recorder = TargetRecorder(str(tmp_path), config, projection, shard_windows=2, max_bytes=10**9)
    for i in range(5):
        recorder.add(_record(value=i))
    assert recorder.next_shard == 2 and len(TargetCache(tmp_path)) == 4  # 5th waits for its shard
    recorder.flush()
    assert len(TargetCache(tmp_path)) == 5
    np.testing.assert_array_equal(TargetCache(tmp_path)[4].points.numpy(), np.full((2, 8, 3), 4.0))
    assert recorder.bytes == sum(p.stat().st_size for p in (tmp_path / "shards").rglob("*.npy"))

    resumed = TargetRecorder(str(tmp_path), config, projection, shard_windows=2, max_bytes=recorder.bytes + 1)
    assert resumed.next_shard == 3 and not resumed.full
    resumed.add(_record())
    resumed.add(_record())  # shard written -> over the byte budget
    assert resumed.full and len(TargetCache(tmp_path)) == 7
    resumed.add(_record())
    resumed.flush()
    assert len(TargetCache(tmp_path)) == 7
    with pytest.raises(ValueError, match="projection"):
        TargetRecorder(str(tmp_path), config, FeatureProjection.random(6, 4, seed=1), 2, 10**9)
