"""Real DDS on localhost: one rclpy node publishes PointCloud2 / Image /
ActionRecognition / PointEmbeddings built by cross4d_ros.messages, another node
receives them and they decode equal to what was sent."""
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

DISCOVERY_TIMEOUT_S = 10.0


def test_messages_survive_dds_round_trip(rclpy_context):
    rclpy = rclpy_context
    from cross4d.msg import ActionRecognition, PointEmbeddings
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, PointCloud2

    from cross4d_core.msgconv import (
        image_to_numpy,
        pointcloud2_to_structured,
        pointcloud2_to_xyz,
        stamp_to_ns,
        unpack_rgb,
    )
    from cross4d_ros.messages import (
        make_action_recognition,
        make_header,
        make_image,
        make_point_embeddings,
        make_pointcloud2,
    )

    rng = np.random.default_rng(0)
    points = rng.standard_normal((2048, 3)).astype(np.float32)
    points[5] = np.nan
    rgb = rng.integers(0, 256, (2048, 3), dtype=np.uint8)
    pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    emb_points = rng.standard_normal((256, 3)).astype(np.float32)
    embedding = rng.standard_normal((256, 16)).astype(np.float32)
    emb_rgb = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    header = make_header(1_700_000_000_125_000_000, "lidar")
    sent = {
        "cloud": (PointCloud2, make_pointcloud2(header, points, rgb=rgb)),
        "image": (Image, make_image(make_header(1_700_000_000_125_000_000, "camera"), pixels, "rgb8")),
        "action": (ActionRecognition, make_action_recognition(header, 1_699_999_999_500_000_000, header.stamp, 24,
                                                              ["wave", "walk"], np.array([0.75, 0.25]), "test")),
        "embeddings": (PointEmbeddings, make_point_embeddings(header, 1_699_999_999_500_000_000, 24, emb_points,
                                                              embedding, "test", rgb=emb_rgb)),
    }
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    talker = rclpy.create_node("cross4d_test_talker")
    listener = rclpy.create_node("cross4d_test_listener")
    received = {}
    publishers = {}
    for topic, (msg_type, _) in sent.items():
        publishers[topic] = talker.create_publisher(msg_type, f"/cross4d_test/{topic}", qos)
        listener.create_subscription(msg_type, f"/cross4d_test/{topic}",
                                     lambda msg, topic=topic: received.setdefault(topic, msg), qos)
    executor = SingleThreadedExecutor()
    executor.add_node(talker)
    executor.add_node(listener)
    try:
        deadline = time.monotonic() + DISCOVERY_TIMEOUT_S
        while len(received) < len(sent) and time.monotonic() < deadline:
            for topic, (_, msg) in sent.items():
                if topic not in received:  # keep publishing until discovery has matched the pair
                    publishers[topic].publish(msg)
            end_spin = time.monotonic() + 0.1
            while time.monotonic() < end_spin and len(received) < len(sent):
                executor.spin_once(timeout_sec=0.02)
    finally:
        executor.shutdown()
        talker.destroy_node()
        listener.destroy_node()
    assert sorted(received) == sorted(sent), f"not received within {DISCOVERY_TIMEOUT_S} s: " \
                                             f"{sorted(set(sent) - set(received))}"

    cloud = received["cloud"]
    assert (cloud.header.stamp.sec, cloud.header.stamp.nanosec, cloud.header.frame_id) == (1700000000, 125_000_000,
                                                                                           "lidar")
    np.testing.assert_array_equal(pointcloud2_to_xyz(cloud, remove_nans=False), points)
    np.testing.assert_array_equal(pointcloud2_to_xyz(cloud), np.delete(points, 5, axis=0))
    np.testing.assert_array_equal(unpack_rgb(pointcloud2_to_structured(cloud)["rgb"]), rgb)

    image = received["image"]
    assert (image.encoding, image.header.frame_id) == ("rgb8", "camera")
    np.testing.assert_array_equal(image_to_numpy(image), pixels)

    action = received["action"]
    assert (action.label, list(action.labels), action.num_frames, action.model_id) == ("wave", ["wave", "walk"], 24,
                                                                                        "test")
    np.testing.assert_array_equal(np.asarray(action.scores), np.array([0.75, 0.25], dtype=np.float32))
    assert action.score == 0.75
    assert stamp_to_ns(action.window_start) == 1_699_999_999_500_000_000
    assert (action.window_end.sec, action.window_end.nanosec) == (1700000000, 125_000_000)

    emb = received["embeddings"]
    assert (emb.dim, emb.num_frames, emb.model_id, emb.cloud.width) == (16, 24, "test", 256)
    decoded = pointcloud2_to_structured(emb.cloud)
    np.testing.assert_array_equal(pointcloud2_to_xyz(emb.cloud), emb_points)
    np.testing.assert_array_equal(decoded["embedding"], embedding)
    np.testing.assert_array_equal(unpack_rgb(decoded["rgb"]), emb_rgb)
