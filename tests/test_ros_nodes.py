"""perception_node over real DDS on localhost: recognised actions and point embeddings equal
the offline model's, windows of the recognizer's T x N, diagnostics, malformed-input fuzzing,
bag replay with use_sim_time, parameter validation of the executable."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from cross4d_testing.nodes import (
    ACTIONS,
    POINTS,
    VIDEO_FRAMES,
    WINDOW,
    NodeHarness,
    malformed_messages,
    model_input,
    node_command,
    stop_while_streaming,
    synthetic_frames,
    train_tiny_recognizer,
)

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
    # the sensor-data (best-effort) default is exercised by the distill_node tests. T and N come
    # from the recognizer.
    params = {"cloud_topic": "points", "checkpoint": checkpoint, "stride": 1, "top_k": 2, "diagnostics_period": 0.2,
              "qos_input_reliability": "reliable", "qos_input_depth": 50, **overrides}
    return PerceptionNode(namespace=ns, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


def _offline(checkpoint, window_points):
    """Reference: the recognizer on the whole window (no cache) -> probabilities, newest-frame features."""
    from cross4d_core.models import Recognizer

    recognizer = Recognizer.from_pretrained(checkpoint)
    with torch.no_grad():
        points = torch.from_numpy(window_points)[None]
        output = recognizer(points)
        probs = torch.softmax(output.logits, -1)[0]
        features = recognizer.encoder.point_features(output.encoder_output, points)[0, -1]
    return probs.numpy(), features.numpy()


def _sample_index(points, stamp_ns):
    """The index of the node's model points into the raw frame (its sampler, keyed on the stamp)."""
    from cross4d_core.preprocess import frame_rng, sample_point_indices

    return sample_point_indices(len(points), POINTS, frame_rng(int(stamp_ns)))


def test_actions_and_embeddings_match_the_offline_model(rclpy_context, recognizer):
    from cross4d.msg import ActionRecognition, PointEmbeddings
    from diagnostic_msgs.msg import DiagnosticArray

    from cross4d_core.msgconv import pointcloud2_field, pointcloud2_to_xyz, stamp_to_ns
    from cross4d_testing.replay import SequencePublisher

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
            # one stream at 15 Hz (no gap), the actions one after the other
            stamps = 200_000_000_123 + k * VIDEO_FRAMES * 66_666_667 + stamps
            for i in range(VIDEO_FRAMES):
                pub.publish_frame(int(stamps[i]), points[i], "camera_optical")
                published.append((int(stamps[i]), points[i], names[k]))
                assert h.wait_for(lambda: node.stats.frames == len(published), 10.0), node.stats
        windows = len(published) - WINDOW + 1
        assert h.wait_for(lambda: len(actions) == len(embeddings) == windows, 20.0), (len(actions), node.stats)
        assert h.wait_for(lambda: any(
            s.values and dict((kv.key, kv.value) for kv in s.values).get("windows") == str(windows)
            for d in diagnostics for s in d.status))

    # Every window that lies inside one action's video is recognised as that action, with the
    # probabilities of the uncached offline model on the same window (sampled as the node samples).
    assert node.cache.hits == (windows - 1) * (WINDOW - 1) and node.cache.misses == len(published)
    for w, (msg, emb) in enumerate(zip(actions, embeddings)):
        frames = published[w:w + WINDOW]
        window_points = model_input(np.stack([p for _, p, _ in frames]), [s for s, _, _ in frames])
        probs, features = _offline(checkpoint, window_points)
        order = np.argsort(-probs)[:2]
        assert msg.labels == [names[i] for i in order] and msg.label == msg.labels[0]
        np.testing.assert_allclose(np.array(msg.scores), probs[order], rtol=1e-4, atol=1e-5)
        if len({label for _, _, label in frames}) == 1:
            assert msg.label == frames[0][2], f"window {w} recognised as {msg.label}, expected {frames[0][2]}"
        assert msg.num_frames == WINDOW and msg.model_id == "tiny-synthetic-test"
        # integer nanoseconds end to end: the output stamps are the input header stamps, exactly
        assert stamp_to_ns(msg.header.stamp) == stamp_to_ns(msg.window_end) == frames[-1][0]
        assert stamp_to_ns(msg.window_start) == stamp_to_ns(emb.window_start) == frames[0][0]
        assert msg.header.frame_id == emb.cloud.header.frame_id == "camera_optical"
        # The embedding cloud is the newest frame's points once each, in source order, with the
        # offline per-point features of the model points they were sampled as.
        np.testing.assert_array_equal(pointcloud2_to_xyz(emb.cloud), frames[-1][1])
        source_order = np.argsort(_sample_index(frames[-1][1], frames[-1][0]))
        np.testing.assert_allclose(pointcloud2_field(emb.cloud, "embedding"), features[source_order],
                                   rtol=1e-4, atol=1e-5)
        assert emb.dim == features.shape[1] and emb.num_frames == WINDOW
        assert [f.name for f in emb.cloud.fields] == ["x", "y", "z", "rgb", "embedding"]


@pytest.fixture(scope="module")
def tiny_recognizer(tmp_path_factory):
    """A random-weight recognizer of 4-frame windows of 64 points (not the trained one's 4 x 128)."""
    from cross4d_core.models import Point4DConfig, Recognizer, RecognizerConfig

    torch.manual_seed(0)
    config = RecognizerConfig(model_config=Point4DConfig.tiny(), label_names=["a", "b", "c"], num_frames=4,
                              num_points=64, model_id="tiny-4x64")
    return str(Recognizer(config).eval().save_pretrained(tmp_path_factory.mktemp("tiny") / "recognizer"))


def test_the_node_windows_the_recognizers_frames_and_points_without_parameters(rclpy_context, tiny_recognizer):
    """No window_length / num_points given: the node feeds the recognizer 4 x 64 windows (its
    config.json), not the parameters' old defaults (24 x 2048)."""
    from cross4d.msg import ActionRecognition, PointEmbeddings

    from cross4d_testing.replay import SequencePublisher

    node = _perception_node("/shape", tiny_recognizer, skip_stale_windows=False)
    assert (node.get_parameter("window_length").value, node.get_parameter("num_points").value) == (0, 0)
    assert (node.window_length, node.num_points) == (4, 64)
    inputs = []
    serve = node.model_input
    node.model_input = lambda window: inputs.append(serve(window)) or inputs[-1]
    points, stamps, _ = synthetic_frames(ACTIONS[0], 0)  # 128 points per cloud
    clouds = 6
    with NodeHarness(rclpy_context, node) as h:
        actions = h.subscribe(ActionRecognition, "/shape/perception_node/actions")
        embeddings = h.subscribe(PointEmbeddings, "/shape/perception_node/point_embeddings")
        pub = SequencePublisher(h.helper, "/shape/points", reliability="reliable")
        assert pub.wait_for_subscribers()
        for i in range(clouds):
            pub.publish_frame(int(stamps[i]), points[i])
        assert h.wait_for(lambda: len(actions) == len(embeddings) == clouds - 4 + 1, 20.0), node.stats
    assert [tuple(x.shape) for x in inputs] == [(4, 64, 3)] * (clouds - 4 + 1)
    assert all(m.num_frames == 4 and m.model_id == "tiny-4x64" and set(m.labels) <= {"a", "b", "c"} for m in actions)
    assert all(e.cloud.width * e.cloud.height == 64 and e.num_frames == 4 for e in embeddings)


def test_a_window_shape_parameter_that_differs_from_the_recognizer_is_refused(rclpy_context, tiny_recognizer):
    from cross4d_ros.params import ParameterError

    node = _perception_node("/same", tiny_recognizer, window_length=4, num_points=64)  # equal: accepted
    node.destroy_node()
    for name, value, message in (("window_length", 24, "parameter 'window_length' = 24 differs from the "
                                  "recognizer's num_frames = 4"),
                                 ("num_points", 2048, "parameter 'num_points' = 2048 differs from the "
                                  "recognizer's num_points = 64")):
        with pytest.raises(ParameterError) as refused:
            _perception_node(f"/refused_{name}", tiny_recognizer, **{name: value})
        assert str(refused.value).startswith(message) and tiny_recognizer in str(refused.value)
        assert "\n" not in str(refused.value)


def test_a_clip_dataset_item_equals_the_node_model_input_for_the_same_frames(rclpy_context, recognizer, tmp_path):
    """One frame contract: the same frames (points and stamps) give training (ClipDataset,
    seed 0, epoch 0) and serving (the node's preprocessing) the same model input, point for
    point and in the same order, also when a frame has more points than N or fewer."""
    from cross4d_core.data import ClipDataset, DatasetWriter
    from cross4d_core.data.synthetic import SyntheticConfig, synthetic_video
    from cross4d_testing.replay import SequencePublisher

    video = synthetic_video(0, 1, ACTIONS[0], 2, frames=8, config=SyntheticConfig(width=80, height=60, focal=71.0))
    frames = [p[: [400, 60, 300, 128, 90, 500, 128, 70][t]] for t, p in enumerate(video.points)]  # > N, < N, = N
    stamps = 1_700_000_000_000_000_000 + video.stamps_ns
    with DatasetWriter(tmp_path / "ds", source="unit", label_names=["x"]) as writer:
        writer.add_video("v", frames, label=0, split="train", stamps_ns=stamps)
    clips = ClipDataset(tmp_path / "ds", frames=WINDOW, num_points=POINTS)

    checkpoint, _ = recognizer
    node = _perception_node("/contract", checkpoint, publish_embeddings=False, skip_stale_windows=False)
    inputs = []
    serve = node.model_input
    node.model_input = lambda window: inputs.append(serve(window)) or inputs[-1]
    with NodeHarness(rclpy_context, node) as h:
        pub = SequencePublisher(h.helper, "/contract/points", reliability="reliable")
        assert pub.wait_for_subscribers()
        for stamp, points in zip(stamps.tolist(), frames):
            pub.publish_frame(stamp, points, "camera_optical")
        assert h.wait_for(lambda: node.stats.windows == len(clips) == 5), (node.stats, len(clips))
    for i, served in enumerate(inputs):
        assert torch.equal(served, clips[i]["points"]), f"window {i} differs from clip {i}"


def test_fuzzed_malformed_and_absurd_clouds_are_counted_and_the_node_keeps_serving(rclpy_context, recognizer):
    """Every broken cloud is counted as rejected; finite but absurd coordinates (|xyz| = 1e30,
    which overflow the model's distances into NaN scores) are refused before the model; no
    published score is NaN."""
    from cross4d.msg import ActionRecognition

    from cross4d_ros.messages import make_camera_info, make_header, make_image, make_pointcloud2
    from cross4d_testing.replay import SequencePublisher

    checkpoint, names = recognizer
    node = _perception_node("/fuzz", checkpoint, qos_input_reliability="reliable", qos_input_depth=1000,
                            queue_depth=2000, publish_embeddings=False, warn_throttle=1.0, skip_stale_windows=False)
    points, stamps, video = synthetic_frames(ACTIONS[1], 0)
    header = make_header(10**9, "camera_optical")
    good = (make_pointcloud2(header, points[0]), make_image(header, video.images[0], "rgb8"),
            make_camera_info(header, video.cameras[0]))
    rng = np.random.default_rng(0)
    with NodeHarness(rclpy_context, node) as h:
        actions = h.subscribe(ActionRecognition, "/fuzz/perception_node/actions")
        pub = SequencePublisher(h.helper, "/fuzz/points", reliability="reliable", depth=2000)
        assert pub.wait_for_subscribers()
        sent = 0
        for _ in range(25):
            for kind, msg in malformed_messages(rng, *good):
                if kind == "cloud":
                    pub.cloud.publish(msg)
                    sent += 1
        assert sent >= 200
        assert h.wait_for(lambda: node.stats.rejected["cloud"] == sent, 30.0), (node.stats.rejected, sent)
        # valid clouds, every third with an absurd point (finite float32) in it
        for i in range(VIDEO_FRAMES):
            cloud = points[i].copy()
            if i % 3 == 2:
                cloud[int(rng.integers(len(cloud)))] = [1e30, -1e30, 1e30]
            pub.publish_frame(10**10 + int(stamps[i]), cloud)
        absurd = VIDEO_FRAMES // 3
        assert h.wait_for(lambda: node.stats.frames == VIDEO_FRAMES - absurd
                          and node.stats.windows == VIDEO_FRAMES - absurd - WINDOW + 1, 20.0), node.stats
        assert h.wait_for(lambda: len(actions) == node.stats.windows)
    assert node.stats.rejected == {"cloud": sent + absurd, "image": 0, "camera_info": 0}
    assert all(np.isfinite(np.array(m.scores)).all() and np.isfinite(m.score) for m in actions)
    assert actions[-1].label == names[1]
    newest = max(i for i in range(VIDEO_FRAMES) if i % 3 != 2)
    assert (actions[-1].header.stamp.sec, actions[-1].header.stamp.nanosec) == divmod(10**10 + int(stamps[newest]),
                                                                                      10**9)
    assert node.stats.dropped == {"cloud": 0, "image": 0, "camera_info": 0}
    assert node.stats.failed_windows == 0


def test_a_model_with_non_finite_output_publishes_nothing_and_counts_it(rclpy_context, recognizer, tmp_path):
    import shutil

    from cross4d.msg import ActionRecognition
    from safetensors.torch import load_file, save_file

    from cross4d_testing.replay import SequencePublisher

    checkpoint = tmp_path / "nan_head"
    shutil.copytree(recognizer[0], checkpoint)
    tensors = load_file(checkpoint / "model.safetensors")
    tensors.update({k: torch.full_like(v, float("nan")) for k, v in tensors.items() if k.startswith("head.")})
    save_file(tensors, checkpoint / "model.safetensors")
    node = _perception_node("/nan", str(checkpoint), skip_stale_windows=False, warn_throttle=0.0)
    points, stamps, _ = synthetic_frames(ACTIONS[0], 0)
    with NodeHarness(rclpy_context, node) as h:
        actions = h.subscribe(ActionRecognition, "/nan/perception_node/actions")
        pub = SequencePublisher(h.helper, "/nan/points", reliability="reliable")
        assert pub.wait_for_subscribers()
        for i in range(WINDOW + 1):
            pub.publish_frame(int(stamps[i]), points[i])
        assert h.wait_for(lambda: node.stats.failed_windows == 2, 10.0), node.stats
    assert not actions and node.stats.windows == 0


def test_frames_outside_the_range_crop_are_rejected_and_never_join_a_window(rclpy_context, recognizer):
    from cross4d.msg import ActionRecognition

    from cross4d_core.msgconv import stamp_to_ns
    from cross4d_testing.replay import SequencePublisher

    checkpoint, _ = recognizer
    node = _perception_node("/crop", checkpoint, range_max=10.0, skip_stale_windows=False, publish_embeddings=False,
                            queue_depth=100, qos_input_depth=100)
    points, stamps, _ = synthetic_frames(ACTIONS[0], 0)  # 2.6 - 3.6 m from the sensor
    frames = 4 * VIDEO_FRAMES
    period = 66_666_667
    with NodeHarness(rclpy_context, node) as h:
        actions = h.subscribe(ActionRecognition, "/crop/perception_node/actions")
        pub = SequencePublisher(h.helper, "/crop/points", reliability="reliable")
        assert pub.wait_for_subscribers()
        for i in range(frames):  # every other frame lies 100 m away: cropped to nothing
            pub.publish_frame(30 * 10**9 + i * period, points[i % VIDEO_FRAMES] + (100.0 if i % 2 else 0.0))
        good = frames // 2
        assert h.wait_for(lambda: len(actions) == good - WINDOW + 1, 20.0), node.stats
    assert node.stats.rejected["cloud"] == frames - good and node.stats.frames == good
    assert node.stats.failed_windows == 0 and node.stats.windows == good - WINDOW + 1
    assert [stamp_to_ns(m.window_start) for m in actions] == [30 * 10**9 + 2 * k * period for k in range(len(actions))]


def test_a_forward_time_jump_beyond_max_frame_gap_restarts_the_window(rclpy_context, recognizer):
    """One cloud stamped 0, then clouds from t = 1000 s: the first window starts at 1000 s (it
    does not span 1000 s), and the gap is counted."""
    from cross4d.msg import ActionRecognition

    from cross4d_core.msgconv import stamp_to_ns
    from cross4d_testing.replay import SequencePublisher

    checkpoint, _ = recognizer
    node = _perception_node("/gap", checkpoint, max_frame_gap=0.5, skip_stale_windows=False, publish_embeddings=False)
    points, stamps, _ = synthetic_frames(ACTIONS[0], 0)
    later = 1000 * 10**9 + stamps
    with NodeHarness(rclpy_context, node) as h:
        actions = h.subscribe(ActionRecognition, "/gap/perception_node/actions")
        pub = SequencePublisher(h.helper, "/gap/points", reliability="reliable")
        assert pub.wait_for_subscribers()
        pub.publish_frame(0, points[0])
        for i in range(WINDOW):
            pub.publish_frame(int(later[i]), points[i])
        assert h.wait_for(lambda: len(actions) == 1 and node.stats.frames == WINDOW + 1, 10.0), node.stats
    assert stamp_to_ns(actions[0].window_start) == later[0] and actions[0].num_frames == WINDOW
    assert (node.stats.frame_gaps, node.stats.time_jumps, node.stats.windows) == (1, 0, 1)


def test_a_cloud_in_another_frame_than_the_stream_is_rejected_and_counted(rclpy_context, recognizer):
    from cross4d.msg import ActionRecognition

    from cross4d_core.msgconv import stamp_to_ns
    from cross4d_testing.replay import SequencePublisher

    checkpoint, _ = recognizer
    node = _perception_node("/frames", checkpoint, skip_stale_windows=False, publish_embeddings=False)
    points, stamps, _ = synthetic_frames(ACTIONS[0], 0)
    with NodeHarness(rclpy_context, node) as h:
        actions = h.subscribe(ActionRecognition, "/frames/perception_node/actions")
        pub = SequencePublisher(h.helper, "/frames/points", reliability="reliable")
        assert pub.wait_for_subscribers()
        for i in range(WINDOW + 1):  # the third cloud comes in the map frame: points_transform does not apply
            pub.publish_frame(int(stamps[i]), points[i], "map" if i == 2 else "/camera_optical")
        assert h.wait_for(lambda: len(actions) == 1 and node.stats.rejected["cloud"] == 1, 10.0), node.stats
        pub.publish_frame(int(stamps[WINDOW + 1]), points[WINDOW + 1], "camera_optical")  # tf2: the same frame
        assert h.wait_for(lambda: len(actions) == 2, 10.0), node.stats
    assert [stamp_to_ns(m.window_start) for m in actions] == [stamps[0], stamps[1]]
    assert all(m.header.frame_id.lstrip("/") == "camera_optical" for m in actions)
    assert node.stats.frames == WINDOW + 1


def test_perception_declares_and_subscribes_no_camera_topics(rclpy_context, recognizer):
    node = _perception_node("/nocam", recognizer[0])
    try:
        for name in ("image_topic", "camera_info_topic", "sync_tolerance", "sync_wait"):
            assert not node.has_parameter(name), name
        assert {s.topic_name for s in node.subscriptions} == {"/nocam/points"}
    finally:
        node.destroy_node()


@pytest.fixture(scope="module")
def synthetic_bag(tmp_path_factory):
    """An MCAP bag (rosbags) of two synthetic videos: clouds in ``camera_link``, images, camera infos."""
    from cross4d_core.data.rosbag import write_synthetic_bag
    from cross4d_core.types import Clip

    clips, labels = [], []
    for k in (0, 2):
        points, stamps, video = synthetic_frames(ACTIONS[k], 0)
        clips.append(Clip(points=points, stamps_ns=stamps, images=video.images, cameras=video.cameras))
        labels.append(k)
    info = write_synthetic_bag(clips, tmp_path_factory.mktemp("bag") / "synthetic", storage="mcap", gap=0.5)
    return info, labels


def test_bag_replayed_twice_with_sim_time_gives_both_passes_and_no_mixed_window(
        rclpy_context, recognizer, synthetic_bag):
    from cross4d.msg import ActionRecognition

    from cross4d_core.data.rosbag import T_COLOR_FROM_OPTICAL, T_LINK_FROM_COLOR
    from cross4d_testing.replay import BagPlayer, SequencePublisher, read_bag_messages

    checkpoint, names = recognizer
    info, labels = synthetic_bag
    topics = info["topics"]
    messages = list(read_bag_messages(info["bag"], {topics["cloud"]: "cloud"}))  # perception needs no camera
    cloud_stamps = [stamp for kind, stamp, _ in messages if kind == "cloud"]
    assert len(cloud_stamps) == 2 * VIDEO_FRAMES
    # The model was trained in the optical frame; the bag's clouds are in camera_link.
    optical_from_link = np.linalg.inv(T_LINK_FROM_COLOR @ T_COLOR_FROM_OPTICAL)
    node = _perception_node("/bag", checkpoint, use_sim_time=True, publish_embeddings=False,
                            skip_stale_windows=False, points_transform=optical_from_link.reshape(-1).tolist())
    with NodeHarness(rclpy_context, node) as h:
        actions = h.subscribe(ActionRecognition, "/bag/perception_node/actions")
        publisher = SequencePublisher(h.helper, "/bag/points", reliability="reliable", depth=50, clock=True)
        assert publisher.wait_for_subscribers()
        player = BagPlayer(publisher, messages)
        per_pass = len(cloud_stamps) - WINDOW + 1
        for n in (1, 2):  # the second pass jumps back in time, like `ros2 bag play --loop --clock`
            assert player.play(rate_hz=30.0) == len(cloud_stamps)
            assert h.wait_for(lambda: len(actions) == n * per_pass, 30.0), (len(actions), node.stats)
        assert node.get_clock().now().nanoseconds == messages[-1][1]  # sim time followed /clock
    assert node.stats.time_jumps == 1 and node.stats.frame_gaps == 0 and node.stats.paired_frames == 0
    expected = [(cloud_stamps[i], cloud_stamps[i + WINDOW - 1]) for i in range(per_pass)]
    got = [(m.window_start.sec * 10**9 + m.window_start.nanosec, m.header.stamp.sec * 10**9 + m.header.stamp.nanosec)
           for m in actions]
    assert got == expected + expected  # both passes, every window from one pass only
    for m, (start, end) in zip(actions, got):
        inside = [k for k in range(2) if cloud_stamps[k * VIDEO_FRAMES] <= start
                  and end <= cloud_stamps[(k + 1) * VIDEO_FRAMES - 1]]
        if inside:
            assert m.label == names[labels[inside[0]]]


def test_the_demo_replays_a_bag_through_the_node_executable_and_scores_what_comes_back(
        rclpy_context, recognizer, synthetic_bag, tmp_path):
    from cross4d_core.data.rosbag import T_COLOR_FROM_OPTICAL, T_LINK_FROM_COLOR
    from examples.demo.replay import replay_bag_through_node

    checkpoint, names = recognizer
    info, labels = synthetic_bag
    truth = [dict(video, id=f"video{k}", label=label)  # the ground truth: the bag's videos, labelled
             for k, (video, label) in enumerate(zip(info["recorded"], labels))]
    ros = replay_bag_through_node(info["bag"], truth, Path(checkpoint), tmp_path, window_length=WINDOW, stride=1,
                                  num_points=POINTS, label_names=names,
                                  points_transform=np.linalg.inv(T_LINK_FROM_COLOR @ T_COLOR_FROM_OPTICAL))
    per_video = 2 * (VIDEO_FRAMES - WINDOW + 1)
    assert ros["windows"] == ros["scored"] + ros["straddling"] == per_video + WINDOW - 1, ros
    assert ros["scored"] == per_video and len(ros["latencies_ms"]) == ros["windows"]
    assert [v["truth"] for v in ros["per_video"]] == [names[label] for label in labels]
    assert ros["correct"] == ros["scored"], ros["per_video"]
    assert "Traceback" not in Path(ros["node_log"]).read_text()


def test_incompatible_qos_is_counted_and_reported_in_diagnostics(rclpy_context, recognizer):
    from diagnostic_msgs.msg import DiagnosticArray

    from cross4d_testing.replay import SequencePublisher

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
    base = node_command("perception_node", namespace="/badparams")
    cases = [
        ([], "parameter 'cloud_topic' is required"),
        (["-p", "cloud_topic:=points", "-p", f"checkpoint:={checkpoint}", "-p", "qos_input_reliability:=fast"],
         "'fast' is not one of"),
        (["-p", "cloud_topic:=points", "-p", "checkpoint:=/nonexistent/ckpt"],
         "parameter 'checkpoint' = '/nonexistent/ckpt': /nonexistent/ckpt: no such recognizer directory"),
        (["-p", "cloud_topic:=points", "-p", f"checkpoint:={checkpoint}", "-p", f"window_length:={WINDOW + 1}"],
         f"parameter 'window_length' = {WINDOW + 1} differs from the recognizer's num_frames = {WINDOW}"),
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


@pytest.mark.parametrize("attempt", [0, 1])
def test_stopping_the_executable_while_clouds_arrive_is_clean(rclpy_context, recognizer, attempt):
    """SIGINT stops the worker before the context goes: no `RCLError ... publisher's context is
    invalid`, no traceback, exit code 0."""
    from cross4d.msg import ActionRecognition

    checkpoint, _ = recognizer
    points, stamps, _ = synthetic_frames(ACTIONS[0], 0)
    ns = f"/stop{attempt}"
    command = node_command("perception_node", {
        "cloud_topic": "points", "checkpoint": checkpoint, "window_length": WINDOW, "num_points": POINTS,
        "skip_stale_windows": False, "qos_input_reliability": "reliable", "qos_input_depth": 100,
        "queue_depth": 100}, namespace=ns)
    code, log, _ = stop_while_streaming(rclpy_context, command, ns, points, stamps,
                                        {f"{ns}/perception_node/actions": ActionRecognition})
    assert code == 0, log[-3000:]
    for bad in ("RCLError", "context is invalid", "Traceback", "failed"):
        assert bad not in log, log[-3000:]
