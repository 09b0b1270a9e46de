"""PointCloud2 -> [N, 3] xyz: cross4d_core.msgconv vs a naive per-point struct.unpack loop.

The cloud mimics a spinning LiDAR driver: 65,536 points, point_step 32 with padding:
x, y, z FLOAT32 @0/4/8, 4 pad bytes, intensity FLOAT32 @16, ring UINT16 @20, 2 pad
bytes, time FLOAT32 @24, 4 pad bytes. ``sensor_msgs_py.read_points_numpy`` (the natural
yardstick) is not on PyPI, so it cannot be installed here and is not compared.
"""
from __future__ import annotations

import struct

import numpy as np
from rosbags.typesys import Stores, get_typestore

from benchmarks.common import Report
from cross4d_core.msgconv import pointcloud2_to_structured, pointcloud2_to_xyz
from cross4d_core.msgconv.pointcloud2 import FLOAT32, UINT16

NUM_POINTS = 65_536
POINT_STEP = 32
FIELDS = (("x", 0, FLOAT32), ("y", 4, FLOAT32), ("z", 8, FLOAT32), ("intensity", 16, FLOAT32),
          ("ring", 20, UINT16), ("time", 24, FLOAT32))


def lidar_cloud(num_points: int = NUM_POINTS, seed: int = 0):
    """A rosbags PointCloud2 (numpy ``data``, as read from a bag) with ~1% NaN returns."""
    types = get_typestore(Stores.ROS2_KILTED).types
    rng = np.random.default_rng(seed)
    layout = np.dtype({"names": [n for n, _, _ in FIELDS], "offsets": [o for _, o, _ in FIELDS],
                       "formats": ["<f4", "<f4", "<f4", "<f4", "<u2", "<f4"], "itemsize": POINT_STEP})
    points = np.zeros(num_points, dtype=layout)
    for axis in "xyz":
        points[axis] = rng.uniform(-50, 50, num_points)
    points["x"][rng.random(num_points) < 0.01] = np.nan
    points["intensity"] = rng.uniform(0, 255, num_points)
    points["ring"] = np.arange(num_points) % 128
    points["time"] = np.linspace(0, 0.1, num_points)
    return types["sensor_msgs/msg/PointCloud2"](
        header=types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=0, nanosec=0),
                                            frame_id="lidar"),
        height=1, width=num_points, is_bigendian=False, point_step=POINT_STEP, row_step=POINT_STEP * num_points,
        fields=[types["sensor_msgs/msg/PointField"](name=n, offset=o, datatype=d, count=1) for n, o, d in FIELDS],
        data=np.frombuffer(points.tobytes(), dtype=np.uint8), is_dense=False,
    )


def naive_xyz(msg) -> np.ndarray:
    """The per-point loop a first attempt would write."""
    data, step = bytes(msg.data), msg.point_step
    unpack = struct.Struct("<fff").unpack_from
    rows = []
    for i in range(msg.width * msg.height):
        x, y, z = unpack(data, i * step)
        if x == x and y == y and z == z:
            rows.append((x, y, z))
    return np.array(rows, dtype=np.float32)


def run(report: Report) -> None:
    msg = lidar_cloud()
    ours = pointcloud2_to_xyz(msg)
    assert np.array_equal(ours, naive_xyz(msg)), "decoders disagree"
    report.time("structured view (zero-copy), 65536 pts, point_step 32", lambda: pointcloud2_to_structured(msg),
                repeats=50, items=NUM_POINTS, item_unit="points")
    report.time("msgconv xyz, remove_nans=False", lambda: pointcloud2_to_xyz(msg, remove_nans=False),
                repeats=30, items=NUM_POINTS, item_unit="points")
    fast = report.time("msgconv xyz, remove_nans=True", lambda: pointcloud2_to_xyz(msg), repeats=30,
                       items=NUM_POINTS, item_unit="points")
    slow = report.time("naive struct.unpack loop xyz", lambda: naive_xyz(msg), repeats=5, warmup=1,
                       items=NUM_POINTS, item_unit="points")
    report.value("msgconv speed-up over naive loop", slow["median_ms"] / fast["median_ms"], "x")


if __name__ == "__main__":
    run(Report(bench="msgconv"))
