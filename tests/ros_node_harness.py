"""Running the cross4d nodes in-process next to a test node, or as their executables, over real DDS on
localhost; malformed input; a tiny trained recognizer."""
from __future__ import annotations

import itertools
import threading
import time

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


def malformed_messages(rng, good_cloud, good_image, good_info):
    """Hundreds of broken PointCloud2 / Image / CameraInfo (each one a different defect)."""
    import copy

    import numpy as np
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


def stop_while_streaming(rclpy, command, ns, points, stamps, outputs):
    """Start a node executable, stream clouds at it as fast as it takes them, SIGINT it in the
    middle of the stream, and return ``(exit code, its log, {output topic: messages received})``."""
    import os
    import signal
    import subprocess

    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from cross4d_ros.replay import SequencePublisher

    process = subprocess.Popen(command + ["--ros-args", "-r", f"__ns:={ns}"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    helper = rclpy.create_node(f"stop_helper{ns.replace('/', '_')}")
    received = {topic: [] for topic in outputs}
    for topic, msg_type in outputs.items():
        helper.create_subscription(msg_type, topic, received[topic].append,
                                   QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
    executor = SingleThreadedExecutor()
    executor.add_node(helper)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        pub = SequencePublisher(helper, f"{ns}/points", reliability="reliable", depth=100)
        assert pub.wait_for_subscribers(120.0), process.communicate(timeout=30)[0][-3000:]
        deadline = time.monotonic() + 60.0
        i = 0
        while not all(received.values()) and time.monotonic() < deadline:  # until the node is busy
            pub.publish_frame(int(stamps[0]) + i * 10**8, points[i % len(points)], "camera_optical")
            i += 1
            time.sleep(0.01)
        assert all(received.values()), "the node published nothing"
        for k in range(40):  # SIGINT while clouds still arrive and a window is in flight
            if k == 10:
                process.send_signal(signal.SIGINT)
            pub.publish_frame(int(stamps[0]) + (i + k) * 10**8, points[(i + k) % len(points)], "camera_optical")
            time.sleep(0.005)
        log = process.communicate(timeout=60)[0]
    finally:
        if process.poll() is None:
            process.kill()
        executor.shutdown(timeout_sec=5.0)
        helper.destroy_node()
    return process.returncode, log, received


# --------------------------------------------------------------------------- a tiny trained recognizer

#: Synthetic-world actions the tiny recognizer tells apart, and the clip geometry it sees.
ACTIONS = (5, 1, 6)  # squat, wave_right, jump
WINDOW, POINTS, VIDEO_FRAMES = 4, 128, 12


def synthetic_frames(action: int, repetition: int, frames: int = VIDEO_FRAMES):
    """``(points [F, POINTS, 3] float32, stamps_ns [F] int64, video)`` of a small synthetic video;
    every frame is subsampled to exactly POINTS points (stored in raster order, as a sensor
    would send them)."""
    import numpy as np

    from cross4d_core.data.synthetic import SyntheticConfig, synthetic_video
    from cross4d_core.preprocess import sample_point_indices

    video = synthetic_video(0, 0, action, repetition, frames=frames,
                            config=SyntheticConfig(width=80, height=60, focal=71.0))
    rng = np.random.default_rng(repetition)
    points = np.stack([p[np.sort(sample_point_indices(len(p), POINTS, rng))] for p in video.points])
    return points.astype(np.float32), video.stamps_ns, video


def model_input(points, stamps_ns):
    """What the nodes feed the model for these frames (identity transform, no crop): each frame
    sampled by :func:`cross4d_core.preprocess.sample_point_indices` from its stamp."""
    import numpy as np

    from cross4d_core.preprocess import FramePreprocessor, frame_rng

    prep = FramePreprocessor(points.shape[1], np.eye(4))
    return np.stack([prep(p, frame_rng(int(s))).points for p, s in zip(points, stamps_ns)])


def train_tiny_recognizer(directory, steps: int = 100) -> list[str]:
    """Fit a tiny POINT4D + linear head on the sliding-window clips (``ClipDataset``, a new epoch of
    point samples every step) of two repetitions per action and save it as a recognizer
    (WINDOW x POINTS windows); returns the label names. Asserts it fits its data."""
    import tempfile

    import torch

    from cross4d_core.data import ClipDataset, DatasetWriter
    from cross4d_core.data.synthetic import ACTION_NAMES
    from cross4d_core.models import Point4DConfig, Point4DEncoder, Recognizer, RecognizerConfig

    torch.manual_seed(0)
    names = [ACTION_NAMES[a] for a in ACTIONS]
    with tempfile.TemporaryDirectory() as data:
        with DatasetWriter(data, source="unit", label_names=names) as writer:
            for label, action in enumerate(ACTIONS):
                for repetition in (0, 1):
                    points, stamps_ns, _ = synthetic_frames(action, repetition)
                    writer.add_video(f"a{action}_r{repetition}", points, label=label, split="train",
                                     stamps_ns=stamps_ns)
        clips = ClipDataset(data, frames=WINDOW, num_points=POINTS)

        def batch(epoch: int):
            clips.set_epoch(epoch)
            items = [clips[i] for i in range(len(clips))]
            return torch.stack([i["points"] for i in items]), torch.stack([i["label"] for i in items])

        config = Point4DConfig.tiny(num_frames=WINDOW, num_points=POINTS, sa1_centroids=32, sa1_radius=0.3,
                                    sa2_centroids=8, sa2_radius=0.6)
        encoder, head = Point4DEncoder(config), torch.nn.Linear(config.hidden_size, len(ACTIONS))
        optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=3e-3)
        for step in range(steps):
            x, y = batch(step)
            loss = torch.nn.functional.cross_entropy(head(encoder(x).clip_feature), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        encoder.eval()
        x, y = batch(steps)
        with torch.no_grad():
            accuracy = (head(encoder(x).clip_feature).argmax(1) == y).float().mean().item()
    assert accuracy >= 0.95, f"tiny recognizer did not fit the synthetic windows (accuracy {accuracy:.2f})"
    config = RecognizerConfig(model_config=config, label_names=names, num_frames=WINDOW, num_points=POINTS,
                              model_id="tiny-synthetic-test")
    Recognizer(config, encoder, head.eval()).save_pretrained(directory)
    return names
