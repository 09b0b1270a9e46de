"""perception_node over real DDS on localhost: recognised actions and point embeddings equal
the offline model's, diagnostics, malformed-input fuzzing, bag replay with use_sim_time,
parameter validation of the executable."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ros_node_harness import ACTIONS, POINTS, VIDEO_FRAMES, WINDOW, NodeHarness, synthetic_frames, \
    train_tiny_recognizer

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory):
    directory = tmp_path_factory.mktemp("recognizer")
    names = train_tiny_recognizer(directory)
    return str(directory), names


def _perception_node(ns, checkpoint, **overrides):
    from rclpy.parameter import Parameter

    from cross4d_ros.perception_node import PerceptionNode

    # Reliable input (as `ros2 bag play` publishes) so that exact message counts can be asserted;
    # the sensor-data (best-effort) default is exercised by the distill_node tests.
    params = {"cloud_topic": "points", "checkpoint": checkpoint, "window_length": WINDOW, "stride": 1,
              "num_points": POINTS, "top_k": 2, "diagnostics_period": 0.2, "qos_input_reliability": "reliable",
              "qos_input_depth": 50, **overrides}
    return PerceptionNode(namespace=ns, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


def _offline(checkpoint, window_points):
    """Reference: the checkpoint's encoder on the whole window (no cache) -> probabilities, newest-frame features."""
    from cross4d_core.training.checkpoint import load_recognizer

    encoder, head, _, _ = load_recognizer(checkpoint)
    with torch.no_grad():
        points = torch.from_numpy(window_points)[None]
        output = encoder(points)
        probs = torch.softmax(head(output.clip_feature), -1)[0]
        features = encoder.point_features(output, points)[0, -1]
    return probs.numpy(), features.numpy()


def test_actions_and_embeddings_match_the_offline_model(rclpy_context, recognizer):
    from diagnostic_msgs.msg import DiagnosticArray

    from cross4d.msg import ActionRecognition, PointEmbeddings
    from cross4d_core.msgconv import pointcloud2_field, pointcloud2_to_xyz
    from cross4d_ros.replay import SequencePublisher

    checkpoint, names = recognizer
    node = _perception_node("/perc", checkpoint)
    with NodeHarness(rclpy_context, node) as h:
        actions = h.subscribe(ActionRecognition, "/perc/perception_node/actions")
        embeddings = h.subscribe(PointEmbeddings, "/perc/perception_node/point_embeddings")
        diagnostics = h.subscribe(DiagnosticArray, "/diagnostics")
        pub = SequencePublisher(h.helper, "/perc/points", reliability="reliable")
        assert pub.wait_for_subscribers()
        published = []
        for k, action in enumerate(ACTIONS):
            points, stamps, _ = synthetic_frames(action, 0)
            stamps = 200.0 + 10 * k + stamps  # one stream, the actions one after the other
            for i in range(VIDEO_FRAMES):
                pub.publish_frame(stamps[i], points[i], "camera_optical")
                published.append((stamps[i], points[i], names[k]))
                assert h.wait_for(lambda: node.stats.frames == len(published), 10.0), node.stats
        windows = len(published) - WINDOW + 1
        assert h.wait_for(lambda: len(actions) == len(embeddings) == windows, 20.0), (len(actions), node.stats)
        assert h.wait_for(lambda: any(
            s.values and dict((kv.key, kv.value) for kv in s.values).get("windows") == str(windows)
            for d in diagnostics for s in d.status))

    # Every window that lies inside one action's video is recognised as that action, with the
    # probabilities of the uncached offline model on the same window.
    assert node.cache.hits == (windows - 1) * (WINDOW - 1) and node.cache.misses == len(published)
    for w, (msg, emb) in enumerate(zip(actions, embeddings)):
        frames = published[w:w + WINDOW]
        window_points = np.stack([p for _, p, _ in frames])
        probs, features = _offline(checkpoint, window_points)
        order = np.argsort(-probs)[:2]
        assert msg.labels == [names[i] for i in order] and msg.label == msg.labels[0]
        np.testing.assert_allclose(np.array(msg.scores), probs[order], rtol=1e-4, atol=1e-5)
        if len({label for _, _, label in frames}) == 1:
            assert msg.label == frames[0][2], f"window {w} recognised as {msg.label}, expected {frames[0][2]}"
        assert msg.num_frames == WINDOW and msg.model_id == "tiny-synthetic-test"
        end_ns = round(frames[-1][0] * 1e9)
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == divmod(end_ns, 10**9)
        assert (msg.window_start.sec * 10**9 + msg.window_start.nanosec) == round(frames[0][0] * 1e9)
        assert msg.header.frame_id == emb.cloud.header.frame_id == "camera_optical"
        # The embedding cloud decodes to the newest published frame, with the offline per-point features.
        np.testing.assert_array_equal(pointcloud2_to_xyz(emb.cloud), frames[-1][1])
        np.testing.assert_allclose(pointcloud2_field(emb.cloud, "embedding"), features, rtol=1e-4, atol=1e-5)
        assert emb.dim == features.shape[1] and emb.num_frames == WINDOW
        assert [f.name for f in emb.cloud.fields] == ["x", "y", "z", "rgb", "embedding"]


def test_images_are_paired_and_cloud_only_frames_still_flow(rclpy_context, recognizer):
    from cross4d.msg import ActionRecognition
    from cross4d_ros.replay import SequencePublisher

    checkpoint, _ = recognizer
    node = _perception_node("/paired", checkpoint, image_topic="image", camera_info_topic="camera_info",
                            sync_tolerance=0.01, sync_wait=0.3, publish_embeddings=False)
    points, stamps, video = synthetic_frames(ACTIONS[0], 0)
    stamps = 50.0 + stamps
    with NodeHarness(rclpy_context, node) as h:
        actions = h.subscribe(ActionRecognition, "/paired/perception_node/actions")
        pub = SequencePublisher(h.helper, "/paired/points", "/paired/image", "/paired/camera_info",
                                reliability="reliable")
        assert pub.wait_for_subscribers()
        for i in range(VIDEO_FRAMES):  # every other frame without image: waits sync_wait, goes on
            with_image = i % 2 == 0
            pub.publish_frame(stamps[i], points[i], image=video.rgb[i] if with_image else None,
                              camera=video.camera if with_image else None)
            assert h.wait_for(lambda: node.stats.frames == i + 1, 10.0), node.stats
        assert h.wait_for(lambda: len(actions) == VIDEO_FRAMES - WINDOW + 1)
    assert node.stats.paired_frames == VIDEO_FRAMES // 2
    assert node.stats.received == {"cloud": VIDEO_FRAMES, "image": VIDEO_FRAMES // 2,
                                   "camera_info": VIDEO_FRAMES // 2}


def _malformed_messages(rng, good_cloud, good_image, good_info):
    """Hundreds of broken PointCloud2 / Image / CameraInfo (each one a different defect)."""
    import copy

    from sensor_msgs.msg import PointField

    def cloud(mutate):
        msg = copy.deepcopy(good_cloud)
        mutate(msg)
        return "cloud", msg

    def image(mutate):
        msg = copy.deepcopy(good_image)
        mutate(msg)
        return "image", msg

    def info(mutate):
        msg = copy.deepcopy(good_info)
        mutate(msg)
        return "camera_info", msg

    def truncate(m):
        m.data = m.data[: int(rng.integers(0, len(m.data)))]

    def nan_cloud(m):
        m.data = np.full(len(m.data) // 4, np.nan, np.float32).tobytes()

    mutations = [
        cloud(truncate),
        cloud(lambda m: setattr(m, "point_step", int(rng.integers(0, 12)))),
        cloud(lambda m, axis="xyz"[int(rng.integers(3))]:
              setattr(m, "fields", [f for f in m.fields if f.name != axis])),
        cloud(lambda m: setattr(m, "row_step", m.row_step + int(rng.integers(1, 1000)))),
        cloud(lambda m: setattr(m, "width", m.width + int(rng.integers(1, 100)))),
        cloud(lambda m: setattr(m, "height", int(rng.integers(2, 50)))),
        cloud(lambda m: m.fields.__setitem__(0, PointField(name="x", offset=int(rng.integers(13, 200)),
                                                          datatype=7, count=1))),
        cloud(lambda m: m.fields.__setitem__(1, PointField(name="y", offset=4, datatype=int(rng.integers(9, 200)),
                                                          count=1))),
        cloud(nan_cloud),
        image(truncate),
        image(lambda m: setattr(m, "encoding", ["yuv422x", "", "bayer_wat", "16UC9"][int(rng.integers(4))])),
        image(lambda m: setattr(m, "step", int(rng.integers(0, m.width * 3)))),
        image(lambda m: setattr(m, "height", m.height + int(rng.integers(1, 100)))),
        info(lambda m: setattr(m, "k", np.zeros(9))),
        info(lambda m: setattr(m, "k", np.array([np.nan] * 9))),
        info(lambda m: setattr(m, "width", 0)),
        info(lambda m: (setattr(m, "distortion_model", "plumb_bob"), setattr(m, "d", [0.1] * int(rng.integers(6, 9))))),
        info(lambda m: (setattr(m, "distortion_model", "fisheye_wat"), setattr(m, "d", [0.1] * 5))),
    ]
    return mutations


def test_fuzzed_malformed_input_is_counted_and_the_node_keeps_serving(rclpy_context, recognizer):
    from cross4d.msg import ActionRecognition
    from cross4d_ros.messages import make_camera_info, make_header, make_image, make_pointcloud2
    from cross4d_ros.replay import SequencePublisher

    checkpoint, names = recognizer
    node = _perception_node("/fuzz", checkpoint, image_topic="image", camera_info_topic="camera_info",
                            qos_input_reliability="reliable", qos_input_depth=1000, queue_depth=2000, sync_wait=0.0,
                            publish_embeddings=False, warn_throttle=1.0)
    points, stamps, video = synthetic_frames(ACTIONS[1], 0)
    header = make_header(1.0, "camera_optical")
    good = (make_pointcloud2(header, points[0]), make_image(header, video.rgb[0], "rgb8"),
            make_camera_info(header, video.camera))
    rng = np.random.default_rng(0)
    with NodeHarness(rclpy_context, node) as h:
        actions = h.subscribe(ActionRecognition, "/fuzz/perception_node/actions")
        pub = SequencePublisher(h.helper, "/fuzz/points", "/fuzz/image", "/fuzz/camera_info", reliability="reliable",
                                depth=2000)
        assert pub.wait_for_subscribers()
        sent = {"cloud": 0, "image": 0, "camera_info": 0}
        for _ in range(25):
            for kind, msg in _malformed_messages(rng, *good):
                {"cloud": pub.cloud, "image": pub.image, "camera_info": pub.camera_info}[kind].publish(msg)
                sent[kind] += 1
        assert sum(sent.values()) >= 400
        assert h.wait_for(lambda: node.stats.rejected == sent, 30.0), (node.stats.rejected, sent)
        # still serving valid input
        for i in range(VIDEO_FRAMES):
            pub.publish_frame(10.0 + stamps[i], points[i])
        # published in a burst: windows the worker fell behind on are skipped (counted), the newest is computed
        assert h.wait_for(lambda: len(actions) + node.stats.skipped_windows == VIDEO_FRAMES - WINDOW + 1
                          and len(actions) == node.stats.windows, 20.0), node.stats
    assert actions[-1].label == names[1]
    assert actions[-1].header.stamp.sec == 10 and actions[-1].header.stamp.nanosec == round(stamps[-1] * 1e9)
    assert node.stats.dropped == {"cloud": 0, "image": 0, "camera_info": 0}
    assert node.stats.failed_windows == 0


def test_frames_outside_the_range_crop_fail_their_windows_without_growing_state(rclpy_context, recognizer):
    from cross4d.msg import ActionRecognition
    from cross4d_ros.replay import SequencePublisher

    checkpoint, _ = recognizer
    node = _perception_node("/crop", checkpoint, range_max=10.0, skip_stale_windows=False, publish_embeddings=False)
    points, stamps, _ = synthetic_frames(ACTIONS[0], 0)  # 2.6 - 3.6 m from the sensor
    frames = 4 * VIDEO_FRAMES
    with NodeHarness(rclpy_context, node) as h:
        actions = h.subscribe(ActionRecognition, "/crop/perception_node/actions")
        pub = SequencePublisher(h.helper, "/crop/points", reliability="reliable")
        assert pub.wait_for_subscribers()
        for i in range(frames):  # every other frame lies 100 m away: cropped to nothing
            pub.publish_frame(30.0 + i / 15, points[i % VIDEO_FRAMES] + (100.0 if i % 2 else 0.0))
            assert h.wait_for(lambda: node.stats.windows + node.stats.failed_windows == max(0, i - WINDOW + 2), 10.0)
            assert len(node._frame_inputs) <= WINDOW, len(node._frame_inputs)  # pruned although every window failed
    assert node.stats.failed_windows == frames - WINDOW + 1 and node.stats.windows == 0 and not actions
    assert node.stats.frames == frames


@pytest.fixture(scope="module")
def synthetic_bag(tmp_path_factory):
    """An MCAP bag (rosbags) of two synthetic videos: clouds in ``camera_link``, images, camera infos."""
    from cross4d_core.data.rosbag import write_synthetic_bag
    from cross4d_core.types import Clip

    clips, labels = [], []
    for k in (0, 2):
        points, stamps, video = synthetic_frames(ACTIONS[k], 0)
        clips.append(Clip(points=points, stamps=stamps, images=video.rgb, cameras=[video.camera] * len(stamps)))
        labels.append(k)
    info = write_synthetic_bag(clips, tmp_path_factory.mktemp("bag") / "synthetic", storage="mcap", gap=0.5)
    return info, labels


def test_bag_replayed_twice_with_sim_time_gives_both_passes_and_no_mixed_window(
        rclpy_context, recognizer, synthetic_bag):
    from cross4d.msg import ActionRecognition
    from cross4d_core.data.rosbag import T_COLOR_FROM_OPTICAL, T_LINK_FROM_COLOR
    from cross4d_ros.replay import BagPlayer, SequencePublisher, read_bag_messages

    checkpoint, names = recognizer
    info, labels = synthetic_bag
    topics = info["topics"]
    messages = list(read_bag_messages(info["bag"], {topics["cloud"]: "cloud", topics["image"]: "image",
                                                    topics["camera_info"]: "camera_info"}))
    cloud_stamps = [stamp for kind, stamp, _ in messages if kind == "cloud"]
    assert len(cloud_stamps) == 2 * VIDEO_FRAMES
    # The model was trained in the optical frame; the bag's clouds are in camera_link.
    optical_from_link = np.linalg.inv(T_LINK_FROM_COLOR @ T_COLOR_FROM_OPTICAL)
    node = _perception_node("/bag", checkpoint, image_topic="image", camera_info_topic="camera_info",
                            use_sim_time=True, publish_embeddings=False, skip_stale_windows=False,
                            points_transform=optical_from_link.reshape(-1).tolist())
    with NodeHarness(rclpy_context, node) as h:
        actions = h.subscribe(ActionRecognition, "/bag/perception_node/actions")
        publisher = SequencePublisher(h.helper, "/bag/points", "/bag/image", "/bag/camera_info",
                                      reliability="reliable", depth=50, clock=True)
        assert publisher.wait_for_subscribers()
        player = BagPlayer(publisher, messages)
        per_pass = len(cloud_stamps) - WINDOW + 1
        for n in (1, 2):  # the second pass jumps back in time, like `ros2 bag play --loop --clock`
            assert player.play(rate_hz=30.0) == len(cloud_stamps)
            assert h.wait_for(lambda: len(actions) == n * per_pass, 30.0), (len(actions), node.stats)
        assert node.get_clock().now().nanoseconds == messages[-1][1]  # sim time followed /clock
    assert node.stats.time_jumps >= 1 and node.stats.paired_frames == 2 * len(cloud_stamps)
    expected = [(cloud_stamps[i], cloud_stamps[i + WINDOW - 1]) for i in range(per_pass)]
    got = [(m.window_start.sec * 10**9 + m.window_start.nanosec, m.header.stamp.sec * 10**9 + m.header.stamp.nanosec)
           for m in actions]
    assert got == expected + expected  # both passes, every window from one pass only
    for m, (start, end) in zip(actions, got):
        inside = [k for k in range(2) if cloud_stamps[k * VIDEO_FRAMES] <= start
                  and end <= cloud_stamps[(k + 1) * VIDEO_FRAMES - 1]]
        if inside:
            assert m.label == names[labels[inside[0]]]


def test_incompatible_qos_is_counted_and_reported_in_diagnostics(rclpy_context, recognizer):
    from diagnostic_msgs.msg import DiagnosticArray

    from cross4d_ros.replay import SequencePublisher

    node = _perception_node("/qos", recognizer[0])  # reliable subscription
    with NodeHarness(rclpy_context, node) as h:
        diagnostics = h.subscribe(DiagnosticArray, "/diagnostics")
        SequencePublisher(h.helper, "/qos/points", reliability="best_effort")  # never heard by it
        assert h.wait_for(lambda: node.stats.qos_incompatible >= 1, 10.0)
        assert h.wait_for(lambda: any(
            s.name.startswith("/qos/perception_node") and int(dict((kv.key, kv.value) for kv in s.values)
                                                              .get("qos_incompatible", 0)) >= 1
            for d in list(diagnostics) for s in d.status), 10.0)


def test_parameter_errors_stop_the_executable_with_a_clear_message(rclpy_context, recognizer):
    checkpoint, _ = recognizer
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "perception_node")
    base = [sys.executable, script, "--ros-args", "-r", "__ns:=/badparams"]
    cases = [
        ([], "parameter 'cloud_topic' is required"),
        (["-p", "cloud_topic:=points", "-p", f"checkpoint:={checkpoint}", "-p", "qos_input_reliability:=fast"],
         "'fast' is not one of"),
        (["-p", "cloud_topic:=points", "-p", "checkpoint:=/nonexistent/ckpt"], "/nonexistent/ckpt"),
        (["-p", "cloud_topic:=points", "-p", f"checkpoint:={checkpoint}", "-p", "stride:=0"], "stride"),
        (["-p", "cloud_topic:=points", "-p", f"checkpoint:={checkpoint}", "-p", "device:=gpu:x"],
         "parameter 'device' = 'gpu:x'"),
        (["-p", "cloud_topic:=points", "-p", f"checkpoint:={checkpoint}", "-p", "range_min:=3.0",
          "-p", "range_max:=1.0"], "range_min = 3.0 m is not below range_max = 1.0 m"),
    ]
    for extra, expected in cases:
        run = subprocess.run(base + extra, capture_output=True, text=True, timeout=60, env=dict(os.environ))
        assert run.returncode == 2, (extra, run.returncode, run.stderr[-2000:])
        assert expected in run.stderr + run.stdout, (extra, run.stderr[-2000:])
