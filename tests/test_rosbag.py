"""rosbag2 reader / writer: bags written with ``rosbags`` (sqlite3 and MCAP) read back into
exactly the windows the WindowBuffer logic produces on the same frames."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from cross4d_core.data.format import Dataset4D
from cross4d_core.data.rosbag import (
    BagFormatError,
    BagStats,
    StaticTransforms,
    convert_bag,
    iter_bag_frames,
    iter_bag_windows,
    write_synthetic_bag,
)
from cross4d_core.data.rosbag.tf import matrix_to_quaternion, quaternion_to_matrix
from cross4d_core.windowing import Frame, WindowBuffer

TS = get_typestore(Stores.ROS2_HUMBLE)
M = TS.types
STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
K = np.array([[50.0, 0, 8], [0, 52.0, 6], [0, 0, 1]])
TOL = 0.02

# Static chain: base_link -> lidar (yaw 90 deg, offset), base_link -> cam_link (offset),
# cam_link -> cam_optical (the REP 103 optical rotation).
S = np.sqrt(0.5)
TF_EDGES = [
    ("base_link", "lidar", (0.2, 0.0, 1.0), (0.0, 0.0, S, S)),
    ("base_link", "cam_link", (0.1, -0.05, 0.9), (0.0, 0.0, 0.0, 1.0)),
    ("cam_link", "cam_optical", (0.0, 0.0, 0.0), (-0.5, 0.5, -0.5, 0.5)),
]


def rigid(R, t):
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


T_BASE_LIDAR = rigid([[0, -1, 0], [1, 0, 0], [0, 0, 1]], [0.2, 0.0, 1.0])
T_BASE_CAMLINK = rigid(np.eye(3), [0.1, -0.05, 0.9])
T_CAMLINK_OPTICAL = rigid([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], [0, 0, 0])
T_OPTICAL_FROM_LIDAR = np.linalg.inv(T_BASE_CAMLINK @ T_CAMLINK_OPTICAL) @ T_BASE_LIDAR


def ns(stamp: float) -> int:
    return int(round(stamp * 1e9))


def header(stamp: float, frame_id: str):
    ns = int(round(stamp * 1e9))
    return M["std_msgs/msg/Header"](stamp=M["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9),
                                    frame_id=frame_id)


def cloud_msg(stamp, points, frame_id="lidar", data_cut=0):
    fields = [M["sensor_msgs/msg/PointField"](name=n, offset=4 * i, datatype=7, count=1) for i, n in enumerate("xyz")]
    data = np.ascontiguousarray(points, dtype="<f4").view(np.uint8).reshape(-1)
    return M["sensor_msgs/msg/PointCloud2"](
        header=header(stamp, frame_id), height=1, width=len(points), fields=fields, is_bigendian=False,
        point_step=12, row_step=12 * len(points), data=data[: len(data) - data_cut], is_dense=True)


def image_msg(stamp, rgb):
    h, w, _ = rgb.shape
    return M["sensor_msgs/msg/Image"](header=header(stamp, "cam_optical"), height=h, width=w, encoding="rgb8",
                                      is_bigendian=0, step=3 * w, data=rgb.reshape(-1).copy())


def info_msg(stamp, fx=50.0):
    k = K.copy()
    k[0, 0] = fx
    roi = M["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return M["sensor_msgs/msg/CameraInfo"](
        header=header(stamp, "cam_optical"), height=12, width=16, distortion_model="plumb_bob", d=np.zeros(5),
        k=k.reshape(-1), r=np.eye(3).reshape(-1), p=np.hstack([k, np.zeros((3, 1))]).reshape(-1),
        binning_x=0, binning_y=0, roi=roi)


def tf_msg():
    transforms = [M["geometry_msgs/msg/TransformStamped"](
        header=header(0.0, parent), child_frame_id=child,
        transform=M["geometry_msgs/msg/Transform"](translation=M["geometry_msgs/msg/Vector3"](x=t[0], y=t[1], z=t[2]),
                                                   rotation=M["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2],
                                                                                              w=q[3])))
        for parent, child, t, q in TF_EDGES]
    return M["tf2_msgs/msg/TFMessage"](transforms=transforms)


def write_bag(path, storage, messages, tf=True):
    """``messages``: (topic, record time s, msg); topics typed by message."""
    with Writer(path, version=9, storage_plugin=STORAGES[storage]) as writer:
        conns = {}
        if tf:
            conn = writer.add_connection("/tf_static", "tf2_msgs/msg/TFMessage", typestore=TS)
            writer.write(conn, 0, TS.serialize_cdr(tf_msg(), "tf2_msgs/msg/TFMessage"))
        for topic, record, msg in sorted(messages, key=lambda m: m[1]):
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msg.__msgtype__, typestore=TS)
            writer.write(conns[topic], int(round(record * 1e9)), TS.serialize_cdr(msg, msg.__msgtype__))


def make_stream(rng, passes, period=0.1, skip_image=(), image_delay=0.004, record_latency=0.03):
    """Clouds, images and camera infos of one or more passes (each pass restarts at the
    same stamps, like a looping player). Returns (messages, expected frames)."""
    messages, expected = [], []
    last_camera = None
    for p, n in enumerate(passes):
        for i in range(n):
            stamp = 1.0 + i * period
            points = rng.normal(size=(int(rng.integers(5, 30)), 3)).astype(np.float32)
            messages.append(("/lidar/points", stamp + 0.001, cloud_msg(stamp, points)))
            image = camera = None
            if i not in skip_image:
                image = rng.integers(0, 255, size=(12, 16, 3), dtype=np.uint8)
                fx = 50.0 + p * 10 + i
                # the image is stamped 4 ms after the cloud and recorded after it
                messages.append(("/cam/image", stamp + record_latency, image_msg(stamp + image_delay, image)))
                messages.append(("/cam/info", stamp + record_latency, info_msg(stamp + image_delay, fx)))
                camera = fx
                last_camera = fx
            # an unrelated image far from any cloud (outside the tolerance)
            messages.append(("/cam/image", stamp + 0.05 + 0.001,
                             image_msg(stamp + 0.05, np.zeros((12, 16, 3), np.uint8))))
            messages.append(("/cam/info", stamp + 0.05 + 0.001, info_msg(stamp + 0.05, 1.0)))
            expected.append((ns(stamp), points, image, camera if camera is not None else last_camera))
    return messages, expected


def expected_windows(expected, length, stride):
    buffer = WindowBuffer(length, stride)
    windows = []
    for stamp, points, image, fx in expected:
        w = buffer.push(Frame(stamp_ns=stamp, points=points, frame_id="lidar", image=image, camera=fx))
        if w is not None:
            windows.append(w)
    return windows, buffer


def assert_same_windows(got, want):
    assert [(w.index, w.sequence) for w in got] == [(w.index, w.sequence) for w in want]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.stamps_ns, w.stamps_ns)
        for gf, wf in zip(g.frames, w.frames):
            np.testing.assert_array_equal(gf.points, wf.points)
            assert gf.frame_id == "lidar"
            if wf.image is None:
                assert gf.image is None
            else:
                np.testing.assert_array_equal(gf.image, wf.image)
            assert gf.camera.fx == wf.camera  # the camera info paired with (or last before) this cloud
            np.testing.assert_allclose(gf.camera.T_cam_from_points, T_OPTICAL_FROM_LIDAR, atol=1e-12)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_windows_match_the_window_buffer(tmp_path, storage):
    rng = np.random.default_rng(0)
    messages, expected = make_stream(rng, [11], skip_image={5})
    write_bag(tmp_path / "bag", storage, messages)
    stats = BagStats()
    got = list(iter_bag_windows(tmp_path / "bag", window_length=4, stride=2, sync_tolerance=TOL, stats=stats))
    want, _ = expected_windows(expected, 4, 2)
    assert len(want) == 4
    assert_same_windows(got, want)
    assert (stats.clouds, stats.frames, stats.paired_frames, stats.windows, stats.resets) == (11, 11, 10, 4, 0)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_time_jump_backwards_resets_windows(tmp_path, storage):
    rng = np.random.default_rng(1)
    messages, expected = make_stream(rng, [7, 6])
    # the second pass is recorded after the first (record time keeps going forward)
    messages = [(t, rec + (2.0 if i >= 7 * 5 else 0.0), m) for i, (t, rec, m) in enumerate(messages)]
    write_bag(tmp_path / "bag", storage, messages)
    stats = BagStats()
    got = list(iter_bag_windows(tmp_path / "bag", window_length=3, stride=1, sync_tolerance=TOL, stats=stats))
    want, buffer = expected_windows(expected, 3, 1)
    assert buffer.resets == 1 and {w.sequence for w in want} == {0, 1}
    assert_same_windows(got, want)
    assert stats.resets == 1 and stats.paired_frames == 13


def test_bare_mcap_file_and_explicit_extrinsic(tmp_path):
    rng = np.random.default_rng(2)
    messages, expected = make_stream(rng, [3])
    write_bag(tmp_path / "bag", "mcap", messages, tf=False)
    mcap = tmp_path / "bag" / "bag.mcap"
    extrinsic = rigid(np.eye(3), [1.0, 2.0, 3.0])
    frames = list(iter_bag_frames(mcap, sync_tolerance=TOL, extrinsic=extrinsic))
    assert [f.stamp_ns for f in frames] == [e[0] for e in expected]
    for f in frames:
        np.testing.assert_array_equal(f.camera.T_cam_from_points, extrinsic)
    with pytest.raises(BagFormatError, match="no static transform chain from 'lidar' to 'cam_optical'"):
        list(iter_bag_frames(mcap, sync_tolerance=TOL))
    cloud_only = list(iter_bag_frames(mcap, image_topic=None, camera_info_topic=None))
    assert all(f.image is None and f.camera is None for f in cloud_only) and len(cloud_only) == 3


def test_static_transform_chain():
    tree = StaticTransforms()
    tree.add_message(tf_msg())
    np.testing.assert_allclose(tree.lookup("cam_optical", "lidar"), T_OPTICAL_FROM_LIDAR, atol=1e-12)
    np.testing.assert_allclose(tree.lookup("lidar", "/cam_optical"), np.linalg.inv(T_OPTICAL_FROM_LIDAR), atol=1e-12)
    p = np.array([1.0, 2.0, 3.0, 1.0])  # a point in front of the lidar lands where the chain says
    np.testing.assert_allclose(tree.lookup("base_link", "lidar") @ p, T_BASE_LIDAR @ p, atol=1e-12)


def test_ambiguous_topic_and_malformed_cloud(tmp_path):
    pts = np.ones((4, 3), np.float32)
    messages = [("/a/points", 1.0, cloud_msg(1.0, pts)), ("/b/points", 1.0, cloud_msg(1.0, pts))]
    write_bag(tmp_path / "two", "sqlite3", messages, tf=False)
    with pytest.raises(BagFormatError, match=r"two: 2 sensor_msgs/msg/PointCloud2 topics \['/a/points', '/b/points'\]"):
        list(iter_bag_frames(tmp_path / "two"))
    messages = [("/p", 1.0, cloud_msg(1.0, pts)), ("/p", 1.1, cloud_msg(1.1, pts, data_cut=12)),
                ("/p", 1.2, cloud_msg(1.2, pts)), ("/p", 1.3, cloud_msg(1.2, pts))]  # last: duplicate stamp
    write_bag(tmp_path / "bad", "mcap", messages, tf=False)
    stats = BagStats()
    windows = list(iter_bag_windows(tmp_path / "bad", window_length=1, stats=stats))
    assert [w.end_ns for w in windows] == [ns(1.0), ns(1.2)]
    assert stats.rejected["cloud"] == 2 and stats.clouds == 4


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_truncated_bag_names_the_file(tmp_path, storage):
    rng = np.random.default_rng(3)
    messages, _ = make_stream(rng, [4])
    write_bag(tmp_path / "bag", storage, messages)
    (storage_file,) = [p for p in (tmp_path / "bag").iterdir() if p.suffix in (".mcap", ".db3")]
    storage_file.write_bytes(storage_file.read_bytes()[: storage_file.stat().st_size // 3])
    with pytest.raises(BagFormatError, match=str(storage_file.parent if storage == "sqlite3" else storage_file)):
        list(iter_bag_frames(storage_file if storage == "mcap" else tmp_path / "bag"))


def test_synthetic_bag_round_trip_and_convert(tmp_path):
    from cross4d_core.data.synthetic import SyntheticConfig, synthetic_video

    cfg = SyntheticConfig(width=40, height=30, focal=35.0)
    videos = [synthetic_video(0, 0, a, 0, frames=5, config=cfg) for a in (0, 3)]
    summary = write_synthetic_bag(videos, tmp_path / "synth", storage="mcap", start_time=50.0, gap=1.0)
    assert summary["frames"] == 10 and summary["messages"] == 1 + 3 * 10
    frames = list(iter_bag_frames(tmp_path / "synth", sync_tolerance=0.001))
    want = [(v, t) for v in videos for t in range(5)]
    assert len(frames) == 10
    for f, (v, t) in zip(frames, want):
        T = f.camera.T_cam_from_points  # composed from /tf_static: camera_link -> optical frame
        back = f.points.astype(np.float64) @ T[:3, :3].T + T[:3, 3]
        np.testing.assert_allclose(back, v.points[t], atol=1e-5)
        np.testing.assert_array_equal(f.image, v.images[t])
        np.testing.assert_allclose(f.camera.K, v.cameras[t].K)
        assert f.camera.distortion_model == "plumb_bob" and not f.camera.D.any()  # an ideal pinhole, as drivers say
        assert f.frame_id == "camera_link"
    stamps = np.array([f.stamp_ns for f in frames])
    np.testing.assert_array_equal(stamps[:5], ns(50.0) + videos[0].stamps_ns - videos[0].stamps_ns[0])
    assert stamps[5] == stamps[4] + ns(1.0)  # integer nanoseconds: the gap is exact
    assert [(r["start_ns"], r["end_ns"]) for r in summary["recorded"]] == [(stamps[0], stamps[4]),
                                                                           (stamps[5], stamps[9])]

    out = tmp_path / "ds"
    result = convert_bag(tmp_path / "synth", out, window_length=4, stride=3, label=-1, progress=False,
                         sync_tolerance=0.001)
    assert (result["written"], result["windows"], result["frames"]) == (3, 3, 10)
    ds = Dataset4D.open(out)
    rec = ds.video(1)
    assert rec.num_frames == 4 and rec.images is not None
    np.testing.assert_array_equal(rec.images[0], frames[3].image)
    np.testing.assert_array_equal(rec.frame(0), frames[3].points)
    np.testing.assert_allclose(rec.cameras()[0].T_cam_from_points, frames[3].camera.T_cam_from_points)
    again = convert_bag(tmp_path / "synth", out, window_length=4, stride=3, progress=False, sync_tolerance=0.001)
    assert (again["written"], again["skipped_existing"]) == (0, 3)


def float64_cloud_msg(stamp, points, frame_id="utm"):
    """A PointCloud2 with FLOAT64 x, y, z (datatype 8, little-endian), e.g. a georeferenced map cloud."""
    fields = [M["sensor_msgs/msg/PointField"](name=n, offset=8 * i, datatype=8, count=1) for i, n in enumerate("xyz")]
    data = np.ascontiguousarray(points, dtype="<f8").view(np.uint8).reshape(-1)
    return M["sensor_msgs/msg/PointCloud2"](
        header=header(stamp, frame_id), height=1, width=len(points), fields=fields, is_bigendian=False,
        point_step=24, row_step=24 * len(points), data=data, is_dense=True)


def test_utm_scale_float64_clouds_keep_millimetres_in_the_dataset(tmp_path):
    rng = np.random.default_rng(9)
    origin = np.array([512345.678, 5412345.678, 410.0])
    clouds = [origin + rng.uniform(-20, 20, size=(50, 3)) for _ in range(4)]
    overflow = clouds[0].copy()
    overflow[7, 2] = 1e39  # finite in FLOAT64, beyond float32: a rejected cloud
    # the camera 2 m above the first cloud, looking down (T_cam_from_utm)
    extrinsic = rigid([[1, 0, 0], [0, -1, 0], [0, 0, -1]], [0, 0, 0]) @ rigid(np.eye(3), -(origin + [0, 0, 2]))
    messages = []
    for i, points in enumerate(clouds):
        stamp = 1.0 + 0.1 * i
        messages += [("/map/points", stamp, float64_cloud_msg(stamp, points)),
                     ("/cam/image", stamp, image_msg(stamp, np.zeros((12, 16, 3), np.uint8))),
                     ("/cam/info", stamp, info_msg(stamp))]
    messages.append(("/map/points", 1.05, float64_cloud_msg(1.05, overflow)))
    write_bag(tmp_path / "utm", "mcap", messages, tf=False)
    frames = list(iter_bag_frames(tmp_path / "utm", extrinsic=extrinsic, sync_tolerance=0.001))
    assert frames[0].points.dtype == np.float64
    np.testing.assert_array_equal(frames[0].points, clouds[0])
    result = convert_bag(tmp_path / "utm", tmp_path / "ds", window_length=4, progress=False, extrinsic=extrinsic,
                         sync_tolerance=0.001)
    assert result["written"] == 1 and result["rejected"] == {"cloud": 1}
    rec = Dataset4D.open(tmp_path / "ds").video(0)
    stored_origin = np.array(rec.meta["meta"]["origin"])
    np.testing.assert_array_equal(stored_origin, np.round(clouds[0].mean(axis=0)))
    for t, points in enumerate(clouds):
        stored = np.asarray(rec.frame(t), dtype=np.float64)
        assert np.abs(stored).max() < 100  # local metres, not UTM
        np.testing.assert_allclose(stored + stored_origin, points, rtol=0, atol=1e-5)  # < 0.01 mm
        T = rec.cameras()[t].T_cam_from_points
        np.testing.assert_allclose(stored @ T[:3, :3].T + T[:3, 3], points @ extrinsic[:3, :3].T + extrinsic[:3, 3],
                                   rtol=0, atol=1e-5)
    assert np.abs(clouds[0].astype(np.float32) - clouds[0]).max() > 0.05  # what a float32 cast would lose


def test_small_coordinates_are_stored_without_an_origin(tmp_path):
    rng = np.random.default_rng(10)
    clouds = [rng.normal(size=(20, 3)) * 50 for _ in range(2)]
    write_bag(tmp_path / "near", "mcap", [("/p", 1.0 + i, float64_cloud_msg(1.0 + i, c, "lidar"))
                                          for i, c in enumerate(clouds)], tf=False)
    convert_bag(tmp_path / "near", tmp_path / "ds", window_length=2, progress=False, image_topic=None,
                camera_info_topic=None)
    rec = Dataset4D.open(tmp_path / "ds").video(0)
    assert rec.meta["meta"]["origin"] is None
    np.testing.assert_allclose(rec.frame(1), clouds[1], rtol=1e-7)


def test_frame_gaps_restart_windows_and_foreign_frames_are_rejected(tmp_path):
    """The bag reader cuts windows as the nodes do: a silence longer than max_frame_gap starts a
    new window, a cloud in another frame than the stream's is rejected (counted)."""
    pts = np.ones((4, 3), np.float32)
    stamps = [1.0, 1.1, 1.2, 5.0, 5.1, 5.2]
    messages = [("/p", t, cloud_msg(t, pts)) for t in stamps] + [("/p", 5.15, cloud_msg(5.15, pts, frame_id="map"))]
    write_bag(tmp_path / "gap", "mcap", messages, tf=False)
    stats = BagStats()
    windows = list(iter_bag_windows(tmp_path / "gap", window_length=2, max_frame_gap=1.0, stats=stats))
    assert [(w.start_ns, w.end_ns) for w in windows] == [(ns(1.0), ns(1.1)), (ns(1.1), ns(1.2)),
                                                         (ns(5.0), ns(5.1)), (ns(5.1), ns(5.2))]
    assert [w.sequence for w in windows] == [0, 0, 1, 1]
    assert (stats.gaps, stats.resets, stats.rejected["cloud"], stats.windows) == (1, 0, 1, 4)
    unlimited = list(iter_bag_windows(tmp_path / "gap", window_length=2, max_frame_gap=0.0))
    assert len(unlimited) == 5 and unlimited[2].start_ns == ns(1.2)  # the window across the silence


def test_replay_reads_bags_through_the_one_reader(tmp_path):
    pytest.importorskip("rclpy", reason="rclpy not installed: run `make setup`")
    from cross4d_testing.replay import read_bag_messages

    pts = np.ones((4, 3), np.float32)
    write_bag(tmp_path / "bag", "sqlite3", [("/p", 1.0, cloud_msg(1.25, pts)), ("/q", 1.1, cloud_msg(1.5, pts))],
              tf=False)
    got = list(read_bag_messages(tmp_path / "bag", {"/p": "cloud"}))
    assert [(kind, stamp) for kind, stamp, _ in got] == [("cloud", ns(1.25))]
    assert got[0][2] == TS.serialize_cdr(cloud_msg(1.25, pts), "sensor_msgs/msg/PointCloud2")
    with pytest.raises(BagFormatError, match=r"bag: topic '/image' not in the bag"):
        list(read_bag_messages(tmp_path / "bag", {"/p": "cloud", "/image": "image"}))
    with pytest.raises(BagFormatError, match="topic '/q' has type sensor_msgs/msg/PointCloud2, expected "
                                             "sensor_msgs/msg/Image"):
        list(read_bag_messages(tmp_path / "bag", {"/q": "image"}))


@given(q=st.lists(st.floats(-1.0, 1.0), min_size=4, max_size=4)
       .filter(lambda q: np.linalg.norm(q) > 1e-3 and abs(q[3]) > 1e-2 * np.linalg.norm(q)))
def test_quaternion_conversions_match_scipy(q):
    """quaternion_to_matrix / matrix_to_quaternion against an independent reference (scipy's
    scalar-last Rotation), both signs of q being the same rotation."""
    from scipy.spatial.transform import Rotation

    R = quaternion_to_matrix(*q)
    np.testing.assert_allclose(R, Rotation.from_quat(q).as_matrix(), atol=1e-12)
    back = np.array(matrix_to_quaternion(R))
    unit = np.asarray(q) / np.linalg.norm(q)
    assert back[3] >= 0
    np.testing.assert_allclose(back, unit if unit[3] >= 0 else -unit, atol=1e-6)
