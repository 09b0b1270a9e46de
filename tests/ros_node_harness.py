"""Running the cross4d nodes in-process next to a test node, over real DDS on localhost."""
from __future__ import annotations

import itertools
import threading

_names = itertools.count()


class NodeHarness:
    """Spins ``node`` and a helper node in a background executor; collects messages.

    Use as a context manager; ``harness.received[topic]`` lists messages in arrival order.
    """

    def __init__(self, rclpy, node):
        from rclpy.executors import SingleThreadedExecutor

        self.rclpy = rclpy
        self.node = node
        self.helper = rclpy.create_node(f"test_helper_{next(_names)}")
        self.received: dict[str, list] = {}
        self._lock = threading.Lock()
        self.executor = SingleThreadedExecutor()  # as run_node: see the note there
        self.executor.add_node(self.node)
        self.executor.add_node(self.helper)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)

    def subscribe(self, msg_type, topic: str, depth: int = 100) -> list:
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        box = self.received.setdefault(topic, [])

        def keep(msg):
            with self._lock:
                box.append(msg)

        self.helper.create_subscription(msg_type, topic, keep,
                                        QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE))
        return box

    def wait_for(self, predicate, timeout: float = 20.0) -> bool:
        from cross4d_ros.replay import wait_until

        return wait_until(predicate, timeout)

    def __enter__(self) -> "NodeHarness":
        if hasattr(self.node, "start"):
            self.node.start()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if hasattr(self.node, "stop"):
            self.node.stop()
        self.executor.shutdown(timeout_sec=5.0)
        self._thread.join(timeout=5.0)
        self.node.destroy_node()
        self.helper.destroy_node()


# --------------------------------------------------------------------------- a tiny trained recognizer

#: Synthetic-world actions the tiny recognizer tells apart, and the clip geometry it sees.
ACTIONS = (5, 1, 6)  # squat, wave_right, jump
WINDOW, POINTS, VIDEO_FRAMES = 4, 128, 12


def synthetic_frames(action: int, repetition: int, frames: int = VIDEO_FRAMES):
    """``(points [F, POINTS, 3] float32, stamps [F], video)`` of a small synthetic video; every
    frame is subsampled to exactly POINTS points (so the node feeds them to the model as is)."""
    import numpy as np

    from cross4d_core.data.synthetic import SyntheticConfig, synthetic_video

    video = synthetic_video(0, 0, action, repetition, frames=frames,
                            config=SyntheticConfig(width=80, height=60, focal=71.0))
    rng = np.random.default_rng(repetition)
    points = np.stack([p[np.sort(rng.choice(len(p), POINTS, replace=False))] for p in video.points])
    return points.astype(np.float32), video.stamps, video


def train_tiny_recognizer(directory, steps: int = 100) -> list[str]:
    """Fit a tiny POINT4D + linear head on sliding windows of two repetitions per action and
    save it as a recognizer checkpoint; returns the label names. Asserts it fits its data."""
    import numpy as np
    import torch

    from cross4d_core.data.synthetic import ACTION_NAMES
    from cross4d_core.models import Point4DConfig, Point4DEncoder
    from cross4d_core.training.checkpoint import save_classifier, save_encoder

    torch.manual_seed(0)
    windows, labels = [], []
    for label, action in enumerate(ACTIONS):
        for repetition in (0, 1):
            points, _, _ = synthetic_frames(action, repetition)
            for start in range(VIDEO_FRAMES - WINDOW + 1):
                windows.append(points[start:start + WINDOW])
                labels.append(label)
    x, y = torch.from_numpy(np.stack(windows)), torch.tensor(labels)
    config = Point4DConfig.tiny(num_frames=WINDOW, num_points=POINTS, sa1_centroids=32, sa1_radius=0.3,
                                sa2_centroids=8, sa2_radius=0.6)
    encoder, head = Point4DEncoder(config), torch.nn.Linear(config.hidden_size, len(ACTIONS))
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=3e-3)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(head(encoder(x).clip_feature), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    encoder.eval()
    with torch.no_grad():
        accuracy = (head(encoder(x).clip_feature).argmax(1) == y).float().mean().item()
    assert accuracy >= 0.95, f"tiny recognizer did not fit the synthetic windows (accuracy {accuracy:.2f})"
    names = [ACTION_NAMES[a] for a in ACTIONS]
    save_encoder(directory, encoder, model_id="tiny-synthetic-test")
    save_classifier(directory, head, names)
    return names
