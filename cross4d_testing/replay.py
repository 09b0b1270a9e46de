"""Play point-cloud sequences into ROS topics: synthetic frames or a rosbag2 (MCAP / sqlite3).

What ``ros2 bag play --clock`` does, without ros2cli (not installable from PyPI): messages
go out with their original header stamps, and ``/clock`` follows the bag's time so nodes
running with ``use_sim_time`` see the recorded time. Bag messages are published as the
serialized CDR bytes stored in the bag, so they are bit-identical to the recording.
Used by the tests, ``benchmarks/bench_ros.py`` and the demo (not part of the product).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from cross4d_core.data.rosbag import BagReader
from cross4d_core.geometry.camera import PinholeCamera
from cross4d_core.msgconv import stamp_to_ns
from cross4d_ros.messages import make_camera_info, make_header, make_image, make_pointcloud2, stamp_msg
from cross4d_ros.params import qos_profile


def wait_until(predicate: Callable[[], bool], timeout: float, poll: float = 0.02) -> bool:
    """Poll ``predicate`` every ``poll`` s for up to ``timeout`` s; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return bool(predicate())


class SequencePublisher:
    """Publishers for one sensor set (cloud, optional image + camera info) and ``/clock``.

    Args:
        node: the node that owns the publishers.
        cloud_topic / image_topic / camera_info_topic: output topics ("" = not published).
        reliability: ``best_effort`` (sensor data) or ``reliable``.
        depth: history depth.
        clock: also publish ``/clock`` with every frame's stamp.
    """

    def __init__(self, node: Node, cloud_topic: str, image_topic: str = "", camera_info_topic: str = "",
                 reliability: str = "best_effort", depth: int = 10, clock: bool = False) -> None:
        qos = qos_profile(reliability, depth)
        self.cloud = node.create_publisher(PointCloud2, cloud_topic, qos)
        self.image = node.create_publisher(Image, image_topic, qos) if image_topic else None
        self.camera_info = node.create_publisher(CameraInfo, camera_info_topic, qos) if camera_info_topic else None
        self.clock = node.create_publisher(Clock, "/clock", 10) if clock else None
        self._node = node

    def publishers(self) -> list:
        return [p for p in (self.cloud, self.image, self.camera_info) if p is not None]

    def wait_for_subscribers(self, timeout: float = 10.0) -> bool:
        """Block until every data publisher has a matched subscriber (DDS discovery)."""
        return wait_until(lambda: all(p.get_subscription_count() > 0 for p in self.publishers()), timeout)

    def publish_clock(self, stamp_ns: int) -> None:
        """``/clock`` at ``stamp_ns`` (integer nanoseconds)."""
        if self.clock is not None:
            self.clock.publish(Clock(clock=stamp_msg(stamp_ns)))

    def publish_frame(self, stamp_ns: int, points: np.ndarray, frame_id: str = "camera",
                      image: np.ndarray | None = None, camera: PinholeCamera | None = None) -> PointCloud2:
        """Publish ``/clock`` (if enabled), then image and camera info, then the cloud (the key)."""
        header = make_header(stamp_ns, frame_id)
        self.publish_clock(stamp_ns)
        if image is not None and self.image is not None:
            self.image.publish(make_image(header, image, "rgb8"))
        if camera is not None and self.camera_info is not None:
            self.camera_info.publish(make_camera_info(header, camera))
        cloud = make_pointcloud2(header, points)
        self.cloud.publish(cloud)
        return cloud


#: Message type of each kind :func:`read_bag_messages` replays.
KIND_TYPES = {"cloud": "sensor_msgs/msg/PointCloud2", "image": "sensor_msgs/msg/Image",
              "camera_info": "sensor_msgs/msg/CameraInfo"}


def read_bag_messages(bag: str | Path, topics: dict[str, str]) -> Iterator[tuple[str, int, bytes]]:
    """``(kind, header stamp in integer ns, serialized CDR)`` of a rosbag2 in recording order,
    read by :class:`cross4d_core.data.rosbag.BagReader` (errors: ``BagFormatError`` naming the bag).

    Args:
        bag: rosbag2 directory or bare ``.mcap`` / ``.db3`` file.
        topics: ``{bag topic: kind}`` with kind in ``cloud``, ``image``, ``camera_info``.
    """
    with BagReader(bag) as reader:
        for topic, kind in topics.items():
            reader.pick_topic(topic, KIND_TYPES[kind], required=True)
        for topic, msgtype, raw in reader.messages(topics):
            yield topics[topic], stamp_to_ns(reader.deserialize(raw, msgtype).header.stamp), bytes(raw)


class BagPlayer:
    """Publishes a bag's messages (serialized, original stamps) with ``/clock``, like ``ros2 bag play --clock``.

    Args:
        publisher: the :class:`SequencePublisher` to publish with.
        messages: ``(kind, stamp ns, cdr)`` from :func:`read_bag_messages` (materialised once,
            so a loop replays exactly the same data).
    """

    def __init__(self, publisher: SequencePublisher, messages: list[tuple[str, int, bytes]]) -> None:
        self.publisher = publisher
        self.messages = messages
        self._by_kind = {"cloud": publisher.cloud, "image": publisher.image, "camera_info": publisher.camera_info}

    def play(self, rate_hz: float | None = None, on_cloud: Callable[[int], None] | None = None) -> int:
        """Publish every message once, a cloud every ``1 / rate_hz`` s (None = the bag's own timing);
        ``on_cloud(stamp_ns)`` runs just before each cloud goes out (e.g. to time the node's answer).
        Returns the number of clouds published."""
        clouds = 0
        start_wall, start_stamp = time.monotonic(), None
        for kind, stamp_ns, raw in self.messages:
            pub = self._by_kind.get(kind)
            if pub is None:
                continue
            if kind == "cloud":
                start_stamp = stamp_ns if start_stamp is None else start_stamp
                due = start_wall + (clouds / rate_hz if rate_hz else (stamp_ns - start_stamp) * 1e-9)
                time.sleep(max(0.0, due - time.monotonic()))
                clouds += 1
            self.publisher.publish_clock(stamp_ns)
            if kind == "cloud" and on_cloud is not None:
                on_cloud(stamp_ns)
            pub.publish(raw)
        return clouds
