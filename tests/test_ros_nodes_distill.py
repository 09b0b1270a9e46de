"""distill_node over real DDS: online correspondence + frozen (tiny, random) DINOv2 teacher,
published per-point targets equal to the offline computation, and recorded shards that
resume after a restart and read back as a TargetCache."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cross4d_testing.nodes import NodeHarness, malformed_messages, node_command, stop_while_streaming

pytestmark = pytest.mark.ros

FRAMES, T, N, D_P = 8, 4, 96, 16


@pytest.fixture(scope="module")
def tiny_dinov2(tmp_path_factory):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                          patch_size=14, image_size=126)
    path = tmp_path_factory.mktemp("dinov2")
    Dinov2Model(config).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def video():
    from cross4d_core.data.synthetic import SyntheticConfig, synthetic_video

    return synthetic_video(0, 0, 3, 0, frames=FRAMES, config=SyntheticConfig(width=80, height=60, focal=71.0))


def _distill_node(rclpy, ns, teacher, record_dir, mode="render", **overrides):
    from rclpy.parameter import Parameter

    from cross4d_ros.distill_node import DistillNode

    params = {"cloud_topic": "points", "teacher_model": teacher, "window_length": T, "stride": 1,
              "num_points": N, "d_p": D_P, "record_dir": record_dir, "record_every": 2, "shard_windows": 2,
              "correspondence": mode, "diagnostics_period": 0.2}
    if mode == "camera":
        params.update(image_topic="image", camera_info_topic="camera_info", sync_wait=2.0)
    params.update(overrides)
    return DistillNode(namespace=ns, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


def _offline_targets(points, teacher_path, mode, video=None):
    """The reference: correspondence + teacher + projection of the window, computed directly."""
    from cross4d_core.correspondence import camera_correspondence, render_correspondence
    from cross4d_core.targets import FeatureProjection
    from cross4d_core.teachers import load_teacher

    teacher = load_teacher("dinov2", teacher_path)
    if mode == "render":
        images, corr = render_correspondence(points, 126, 14, 1, transform=teacher.image_transform(126, 126))
    else:
        images = torch.from_numpy(video.images[-T:])
        corr = camera_correspondence(points, video.images[-T:], video.cameras[-T:],
                                     teacher.image_transform(*video.images.shape[1:3]))
    feats, _ = teacher.grid_features(images)
    grids = FeatureProjection.random(teacher.feature_dim, D_P, 0)(feats).reshape(feats.shape[0], -1, D_P)
    visible = corr.visible[-1]
    return grids[corr.slot[-1], corr.patch[-1].clamp_min(0)][visible].numpy(), visible.numpy()


def _publish(harness, video, camera_mode, stamps):
    from cross4d_testing.replay import SequencePublisher

    pub = SequencePublisher(harness.helper, f"{harness.node.get_namespace()}/points",
                            f"{harness.node.get_namespace()}/image" if camera_mode else "",
                            f"{harness.node.get_namespace()}/camera_info" if camera_mode else "")
    assert pub.wait_for_subscribers(), "distill_node did not subscribe"
    for i, stamp in enumerate(stamps):
        pub.publish_frame(int(stamp), video.points[i], "camera_optical",
                          image=video.images[i] if camera_mode else None,
                          camera=video.cameras[i] if camera_mode else None)
        assert harness.wait_for(lambda: harness.node.stats.frames > i, timeout=10.0), harness.node.stats


@pytest.mark.parametrize("mode", ["render", "camera"])
def test_distill_publishes_offline_targets_and_records_resumable_shards(
        rclpy_context, tiny_dinov2, video, tmp_path, mode):
    from sensor_msgs.msg import Image, PointCloud2

    from cross4d_core.msgconv import image_to_rgb, pointcloud2_field, pointcloud2_to_xyz
    from cross4d_core.preprocess import FramePreprocessor, frame_rng
    from cross4d_core.targets import TargetCache

    cache = str(tmp_path / "cache")
    stamps = 100 * 10**9 + video.stamps_ns
    node = _distill_node(rclpy_context, f"/distill_{mode}", tiny_dinov2, cache, mode)
    with NodeHarness(rclpy_context, node) as h:
        targets = h.subscribe(PointCloud2, f"/distill_{mode}/distill_node/targets")
        overlays = h.subscribe(Image, f"/distill_{mode}/distill_node/overlay")
        _publish(h, video, mode == "camera", stamps)
        assert h.wait_for(lambda: len(targets) == len(overlays) == node.stats.windows == FRAMES - T + 1), \
            (len(targets), len(overlays), node.stats)
        assert node.stats.paired_frames == (FRAMES if mode == "camera" else 0)
        assert node.stats.windows == FRAMES - T + 1 and sum(node.stats.rejected.values()) == 0

    prep = FramePreprocessor(N, np.eye(4))
    inputs = [prep(video.points[i], frame_rng(int(s))) for i, s in enumerate(stamps)]
    window_points = np.stack([m.points for m in inputs[-T:]])
    expected, visible = _offline_targets(window_points, tiny_dinov2, mode, video)
    last = targets[-1]
    assert visible.any(), "reference window has no visible point"
    assert [f.name for f in last.fields] == ["x", "y", "z", "rgb", "target"]
    index = inputs[-1].index[visible]
    _, first = np.unique(index, return_index=True)
    np.testing.assert_allclose(pointcloud2_to_xyz(last), video.points[-1][index[np.sort(first)]])
    np.testing.assert_allclose(pointcloud2_field(last, "target"), expected[np.sort(first)], rtol=1e-4, atol=1e-5)
    assert (last.header.stamp.sec, last.header.stamp.nanosec) == (100, 466666667)
    overlay = image_to_rgb(overlays[-1])
    assert overlay.shape == ((126, 126, 3) if mode == "render" else video.images.shape[1:])

    # windows 0, 2, 4 recorded -> shard 0 (2 windows) written, window 4 flushed at stop into shard 1
    recorded = TargetCache(cache)
    assert len(recorded) == 3 and recorded.manifest["source"] == mode
    item = recorded[2]
    np.testing.assert_array_equal(item.points.numpy(), window_points)
    assert item.features.dtype == torch.float16 and item.features.shape[-1] == D_P
    assert item.target_index.shape == (T, N) and item.label == -1
    np.testing.assert_array_equal(item.target_index[-1].numpy() >= 0, visible)  # the published targets, in fp16
    np.testing.assert_allclose(item.features.float()[item.target_index[-1][visible]].numpy(), expected,
                               rtol=2e-3, atol=2e-3)

    # Restart: recording resumes after the last shard, nothing is overwritten.
    node = _distill_node(rclpy_context, f"/distill_{mode}", tiny_dinov2, cache, mode)
    assert node.recorder.next_shard == 2
    with NodeHarness(rclpy_context, node) as h:
        _publish(h, video, mode == "camera", stamps + 50 * 10**9)
        assert h.wait_for(lambda: node.stats.windows == FRAMES - T + 1)
    again = TargetCache(cache)
    assert len(again) == 6
    np.testing.assert_array_equal(again[2].points.numpy(), window_points)
    if mode == "render":  # the recorded shards are pretraining data for `cross4d pretrain`
        _pretrain_on(cache, tmp_path / "pretrain")


def _pretrain_on(cache, out):
    import json

    from cross4d_core.cli import main as cross4d

    assert cross4d(["pretrain", "--config", "pretrain_tiny.yaml", "--set", f"data.path={cache}",
                    "--set", f"out_dir={out}", "--set", "tensorboard=false"]) == 0
    results = json.loads((out / "pretrain_results.json").read_text())
    assert results["steps"] > 0 and np.isfinite(results["final_loss"]), results
    assert (out / "encoder.safetensors").exists()


def test_malformed_images_and_camera_infos_are_counted_and_the_node_keeps_serving(rclpy_context, tiny_dinov2,
                                                                                   video):
    from sensor_msgs.msg import PointCloud2

    from cross4d_ros.messages import make_camera_info, make_header, make_image, make_pointcloud2
    from cross4d_testing.replay import SequencePublisher

    node = _distill_node(rclpy_context, "/distill_fuzz", tiny_dinov2, "", "camera", qos_input_reliability="reliable",
                         qos_input_depth=1000, queue_depth=1000, warn_throttle=1.0)
    header = make_header(10**9, "camera_optical")
    good = (make_pointcloud2(header, video.points[0]), make_image(header, video.images[0], "rgb8"),
            make_camera_info(header, video.cameras[0]))
    rng = np.random.default_rng(1)
    with NodeHarness(rclpy_context, node) as h:
        targets = h.subscribe(PointCloud2, "/distill_fuzz/distill_node/targets")
        pub = SequencePublisher(h.helper, "/distill_fuzz/points", "/distill_fuzz/image", "/distill_fuzz/camera_info",
                                reliability="reliable", depth=1000)
        assert pub.wait_for_subscribers()
        sent = {"cloud": 0, "image": 0, "camera_info": 0}
        for _ in range(10):
            for kind, msg in malformed_messages(rng, *good):
                if kind != "cloud":
                    {"image": pub.image, "camera_info": pub.camera_info}[kind].publish(msg)
                    sent[kind] += 1
        assert h.wait_for(lambda: node.stats.rejected == sent, 30.0), (node.stats.rejected, sent)
        for i, stamp in enumerate((20 * 10**9 + video.stamps_ns).tolist()):  # still serving valid input
            pub.publish_frame(stamp, video.points[i], "camera_optical", image=video.images[i],
                              camera=video.cameras[i])
        assert h.wait_for(lambda: node.stats.windows + node.stats.skipped_windows == FRAMES - T + 1
                          and len(targets) == node.stats.windows, 20.0), node.stats
    assert node.stats.paired_frames == FRAMES and node.stats.failed_windows == 0


def test_the_last_window_before_a_bag_loop_is_not_lost(rclpy_context, tiny_dinov2, video):
    """`ros2 bag play --loop --clock`: /clock jumps back while the pass's last cloud still waits
    for its image. The cloud still gets its image and its window; the next pass starts afresh."""
    from sensor_msgs.msg import PointCloud2

    from cross4d_core.msgconv import stamp_to_ns
    from cross4d_ros.messages import make_camera_info, make_header, make_image
    from cross4d_testing.replay import SequencePublisher

    node = _distill_node(rclpy_context, "/distill_loop", tiny_dinov2, "", "camera", use_sim_time=True,
                         sync_wait=5.0, skip_stale_windows=False, qos_input_reliability="reliable",
                         qos_input_depth=50, queue_depth=50)
    stamps = (100 * 10**9 + video.stamps_ns).tolist()
    with NodeHarness(rclpy_context, node) as h:
        targets = h.subscribe(PointCloud2, "/distill_loop/distill_node/targets")
        pub = SequencePublisher(h.helper, "/distill_loop/points", "/distill_loop/image", "/distill_loop/camera_info",
                                reliability="reliable", depth=50, clock=True)
        assert pub.wait_for_subscribers()
        for i, stamp in enumerate(stamps[:-1]):
            pub.publish_frame(stamp, video.points[i], "camera_optical", image=video.images[i], camera=video.cameras[i])
            assert h.wait_for(lambda: node.stats.frames == i + 1), node.stats
        last = FRAMES - 1
        pub.publish_frame(stamps[last], video.points[last], "camera_optical")  # its image is recorded after it
        assert h.wait_for(lambda: node.queue_sizes()["pending_clouds"] == 1 and node.stats.frames == last)
        pub.publish_clock(stamps[0])  # the loop starts over before the image came through
        assert h.wait_for(lambda: node.get_clock().now().nanoseconds == stamps[0])
        header = make_header(stamps[last], "camera_optical")
        pub.image.publish(make_image(header, video.images[last], "rgb8"))
        pub.camera_info.publish(make_camera_info(header, video.cameras[last]))
        for i, stamp in enumerate(stamps):  # the second pass
            pub.publish_frame(stamp, video.points[i], "camera_optical", image=video.images[i], camera=video.cameras[i])
        assert h.wait_for(lambda: len(targets) == 2 * (FRAMES - T + 1), 30.0), (len(targets), node.stats)
    ends = [stamp_to_ns(m.header.stamp) for m in targets]
    assert ends == stamps[T - 1:] + stamps[T - 1:]
    assert node.stats.time_jumps == 1 and node.stats.paired_frames == 2 * FRAMES and node.stats.failed_windows == 0


def test_stopping_distill_node_while_clouds_arrive_is_clean_and_records_every_window(rclpy_context, tiny_dinov2,
                                                                                      video, tmp_path):
    """SIGINT mid-stream: no `RCLError ... context is invalid`; the window in flight is published
    and recorded, and the recording is flushed."""
    from sensor_msgs.msg import PointCloud2

    from cross4d_core.targets import TargetCache

    cache = tmp_path / "cache"
    command = node_command("distill_node", {
        "cloud_topic": "points", "teacher_model": tiny_dinov2, "window_length": T, "num_points": N, "d_p": D_P,
        "record_dir": cache, "record_every": 1, "shard_windows": 1000, "qos_input_reliability": "reliable",
        "skip_stale_windows": False, "queue_depth": 100, "qos_input_depth": 100}, namespace="/distill_stop")
    points = np.stack([p[:N] for p in video.points])
    code, log, received = stop_while_streaming(rclpy_context, command, "/distill_stop", points, video.stamps_ns,
                                               {"/distill_stop/distill_node/targets": PointCloud2})
    assert code == 0, log[-3000:]
    for bad in ("RCLError", "context is invalid", "Traceback", "failed"):
        assert bad not in log, log[-3000:]
    recorded = len(TargetCache(cache))
    assert recorded >= len(received["/distill_stop/distill_node/targets"]) >= 1  # none lost in flight
