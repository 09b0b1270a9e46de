"""Soak (slow, not in CI): perception_node fed 30 Hz clouds for 10 minutes
(CROSS4D_SOAK_SECONDS overrides); resident memory and every queue stay flat.

Run: ``python -m pytest tests/test_ros_nodes_soak.py -m slow``.
"""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from cross4d_testing.nodes import ACTIONS, POINTS, WINDOW, NodeHarness, synthetic_frames, train_tiny_recognizer

pytestmark = [pytest.mark.ros, pytest.mark.slow]

RATE_HZ = 30.0
QUEUE_DEPTH = 10


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_soak_memory_and_queues_stay_flat(rclpy_context, tmp_path):
    from cross4d.msg import ActionRecognition
    from rclpy.parameter import Parameter

    from cross4d_ros.perception_node import PerceptionNode
    from cross4d_testing.replay import SequencePublisher

    duration = float(os.environ.get("CROSS4D_SOAK_SECONDS", 600))
    train_tiny_recognizer(tmp_path)
    params = {"cloud_topic": "points", "checkpoint": str(tmp_path), "window_length": WINDOW, "num_points": POINTS,
              "queue_depth": QUEUE_DEPTH, "diagnostics_period": 1.0}
    node = PerceptionNode(namespace="/soak", parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    points, _, _ = synthetic_frames(ACTIONS[0], 0)
    samples = []  # (elapsed s, RSS MiB, queue sizes, windows so far)
    with NodeHarness(rclpy_context, node) as h:
        actions = h.subscribe(ActionRecognition, "/soak/perception_node/actions", depth=10)
        pub = SequencePublisher(h.helper, "/soak/points")
        assert pub.wait_for_subscribers()
        start = time.monotonic()
        k = 0
        while (elapsed := time.monotonic() - start) < duration:
            time.sleep(max(0.0, start + k / RATE_HZ - time.monotonic()))
            i = k % len(points)
            pub.publish_frame(1000 * 10**9 + k * round(1e9 / RATE_HZ), points[i])
            if k % int(RATE_HZ * 5) == 0:
                samples.append((elapsed, _rss_mib(), node.queue_sizes(), node.stats.windows))
                actions.clear()  # the test's own buffer must not grow either
            k += 1
        assert h.wait_for(lambda: len(actions) > 0, 10.0), "no output at the end of the soak"
    warm = [s for s in samples if s[0] >= min(60.0, duration / 4)]
    rss = np.array([s[1] for s in warm])
    assert rss.max() - rss[0] < 30.0, f"RSS grew from {rss[0]:.1f} to {rss.max():.1f} MiB"
    for _, _, queues, _ in samples:
        assert queues["cloud"] <= QUEUE_DEPTH and queues["pending_clouds"] == 0, queues
        assert queues["window"] <= WINDOW, queues
    assert len(node.cache) <= WINDOW + 1
    assert node.stats.time_jumps == 0 and node.stats.failed_windows == 0
    # still working at the end, and every cloud that reached the node is accounted for
    # (DDS itself may drop best-effort messages on a starved CPU; that is not the node's doing)
    assert samples[-1][3] > samples[-2][3], samples[-2:]
    s = node.stats
    assert s.received["cloud"] == s.frames + s.dropped["cloud"] + s.rejected["cloud"] + len(node.pairer) \
        + node.queue_sizes()["cloud"], s
