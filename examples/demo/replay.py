"""The demo's ROS step: ``perception_node`` (its executable, started as ``ros2 run cross4d
perception_node`` would start it) recognises actions in a replayed rosbag2, over DDS on localhost.

The bag is played like ``ros2 bag play --clock --rate``: the recorded CDR bytes with their
original header stamps, and ``/clock`` following them, into a node running with
``use_sim_time``. Each ``ActionRecognition`` is scored against the video its window came
from (windows that straddle two videos are counted, not scored), and the end-to-end latency
is the wall time from publishing a window's newest cloud to receiving its result.
"""
from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

import numpy as np


def _truth_of(recorded: list[dict], start_ns: int, end_ns: int) -> dict | None:
    """The recorded video whose stamps contain the whole window, or None (window straddles two)."""
    for video in recorded:
        if video["start_ns"] <= start_ns and end_ns <= video["end_ns"]:
            return video
    return None


def replay_bag_through_node(bag: Path, recorded: list[dict], checkpoint: Path, work: Path, *, window_length: int,
                            stride: int, num_points: int, points_transform: np.ndarray, rate_hz: float = 30.0,
                            label_names: list[str] | None = None, startup_timeout: float = 120.0) -> dict:
    """Play ``bag`` into a freshly started perception_node and score what comes back.

    Args:
        bag: rosbag2 directory written by :func:`cross4d_core.data.rosbag.write_synthetic_bag`.
        recorded: its ``recorded`` list (per-video id, label, stamp range in ns): the ground truth.
        checkpoint: recognizer directory (``cross4d probe``'s ``<out>/recognizer``).
        work: where the node's log goes.
        window_length / stride / num_points: the node's windowing (T and N are checked against the recognizer's).
        points_transform: ``[4, 4]`` transform from the bag's cloud frame to the training frame.
        rate_hz: clouds per second of wall time.

    Returns:
        ``{"windows", "scored", "correct", "straddling", "latencies_ms", "latency_ms_median",
        "latency_ms_p95", "per_video": [...], "node_log"}``.
    """
    import rclpy
    from cross4d.msg import ActionRecognition
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from cross4d_core.msgconv import stamp_to_ns
    from cross4d_testing.nodes import NodeProcess, node_command
    from cross4d_testing.replay import BagPlayer, SequencePublisher, read_bag_messages

    cloud_topic = "/camera/depth/points"
    work.mkdir(parents=True, exist_ok=True)
    log_path = work / "perception_node.log"
    command = node_command("perception_node", {
        "checkpoint": checkpoint, "cloud_topic": cloud_topic, "window_length": window_length, "stride": stride,
        "num_points": num_points, "points_transform": np.asarray(points_transform, dtype=np.float64).ravel(),
        "use_sim_time": True, "publish_embeddings": False, "skip_stale_windows": False, "queue_depth": 64,
        "qos_input_depth": 64})
    messages = list(read_bag_messages(bag, {cloud_topic: "cloud"}))
    published: dict[int, float] = {}
    results: list[tuple[int, int, str, float, float]] = []
    lock = threading.Lock()

    def on_cloud(stamp_ns: int) -> None:
        with lock:
            published[stamp_ns] = time.monotonic()

    def on_action(msg) -> None:
        received = time.monotonic()
        with lock:
            sent = published.get(stamp_to_ns(msg.header.stamp))
            results.append((stamp_to_ns(msg.window_start), stamp_to_ns(msg.window_end), msg.label,
                            msg.score, (received - sent) * 1e3 if sent is not None else float("nan")))

    context = rclpy.Context()  # its own, so the caller's rclpy (if any) is left alone
    rclpy.init(context=context)
    node = rclpy.create_node("cross4d_demo_player", context=context)
    executor = SingleThreadedExecutor(context=context)
    try:
        with NodeProcess(command, log_path) as perception:
            publisher = SequencePublisher(node, cloud_topic, reliability="reliable", depth=64, clock=True)
            node.create_subscription(ActionRecognition, "/perception_node/actions", on_action,
                                     QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
            executor.add_node(node)
            threading.Thread(target=executor.spin, daemon=True).start()
            perception.wait_for_subscribers(publisher, startup_timeout)
            time.sleep(0.5)  # let the node's action publisher match our subscription too
            BagPlayer(publisher, messages).play(rate_hz, on_cloud=on_cloud)
            # Done when no result has arrived for `quiet` seconds (the node works through its queue).
            quiet, last_count, last_change = 3.0, -1, time.monotonic()
            while time.monotonic() - last_change < quiet:
                with lock:
                    count = len(results)
                if count != last_count:
                    last_count, last_change = count, time.monotonic()
                time.sleep(0.1)
    finally:
        executor.shutdown(timeout_sec=5.0)
        node.destroy_node()
        context.shutdown()

    per_video: dict[str, dict] = {}
    scored = correct = straddling = 0
    for window_start, window_end, label, _score, _ in results:
        video = _truth_of(recorded, window_start, window_end)
        if video is None:
            straddling += 1
            continue
        truth = label_names[video["label"]] if label_names else str(video["label"])
        entry = per_video.setdefault(video["id"], {"id": video["id"], "truth": truth, "predictions": []})
        entry["predictions"].append(label)
        scored += 1
        correct += int(label == truth)
    latencies = [r[4] for r in results if np.isfinite(r[4])]
    return {
        "windows": len(results), "scored": scored, "correct": correct, "straddling": straddling,
        "latencies_ms": latencies,
        "latency_ms_median": statistics.median(latencies) if latencies else float("nan"),
        "latency_ms_p95": float(np.percentile(latencies, 95)) if latencies else float("nan"),
        "per_video": list(per_video.values()), "node_log": str(log_path), "rate_hz": rate_hz,
    }
