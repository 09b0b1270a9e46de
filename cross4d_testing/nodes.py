"""Running the cross4d nodes in-process next to a test node, or as their executables, over real DDS on
localhost; malformed input; a tiny trained recognizer. Shared by the tests, ``benchmarks/bench_ros.py``
and the demo."""
from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

#: The node executables (``ros2 run cross4d <name>`` runs these, installed to lib/cross4d).
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

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
        from cross4d_testing.replay import wait_until

        return wait_until(predicate, timeout)

    def __enter__(self) -> NodeHarness:
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

    dropped_axis = "xyz"[int(rng.integers(3))]
    mutations = [
        cloud(truncate),
        cloud(lambda m: setattr(m, "point_step", int(rng.integers(0, 12)))),
        cloud(lambda m: setattr(m, "fields", [f for f in m.fields if f.name != dropped_axis])),
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


def ros_arg(value) -> str:
    """``value`` as ``--ros-args -p name:=VALUE`` reads it (YAML): ``true`` / ``false``, floats with
    their point (a double parameter), a flat sequence or 1-D array as ``[a,b,...]``."""
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        value = value.tolist()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(ros_arg(v) for v in value) + "]"
    return str(value)


def node_command(executable: str, params: dict | None = None, namespace: str = "",
                 log_level: str = "") -> list[str]:
    """``scripts/<executable>`` (what ``ros2 run cross4d <executable>`` runs) under this Python,
    with ``--ros-args``: the namespace, ``-p name:=value`` for each of ``params``, the log level."""
    command = [sys.executable, str(SCRIPTS / executable), "--ros-args"]
    if namespace:
        command += ["-r", f"__ns:={namespace}"]
    for name, value in (params or {}).items():
        command += ["-p", f"{name}:={ros_arg(value)}"]
    if log_level:
        command += ["--log-level", log_level]
    return command


class NodeProcess:
    """A node executable in its own process, as ``ros2 run`` starts it; a context manager that
    stops it on exit. Its stdout and stderr go to the file ``log`` (a temporary one, removed
    when the node is stopped, when None), never to a pipe nobody reads.

    Args:
        command: e.g. from :func:`node_command`.
        log: file for the node's output.
    """

    def __init__(self, command: list[str], log: str | Path | None = None) -> None:
        self.command = command
        self._temporary = log is None
        if log is None:
            fd, log = tempfile.mkstemp(prefix="cross4d-node-", suffix=".log")
            os.close(fd)
        self.log_path = Path(log)
        with open(self.log_path, "w") as out:  # the node keeps its own descriptor
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
        self.returncode: int | None = None
        self._interrupted = False

    def output(self) -> str:
        """Everything the node has written so far."""
        return self.log_path.read_text(errors="replace")

    def _failure(self, what: str) -> RuntimeError:
        where = "" if self._temporary else f" (log: {self.log_path})"
        return RuntimeError(f"{Path(self.command[1]).name} {what}{where}:\n{self.output()[-3000:]}")

    def wait_for_subscribers(self, publisher, timeout: float = 120.0) -> None:
        """Until the node has subscribed to every topic of ``publisher`` (a
        :class:`~cross4d_testing.replay.SequencePublisher`); ``RuntimeError`` with the node's
        output when it exits first or ``timeout`` s pass."""
        deadline = time.monotonic() + timeout
        while not all(p.get_subscription_count() > 0 for p in publisher.publishers()):
            if self.process.poll() is not None:
                raise self._failure(f"exited with code {self.process.returncode}")
            if time.monotonic() > deadline:
                raise self._failure(f"did not subscribe within {timeout} s")
            time.sleep(0.05)

    def interrupt(self) -> None:
        """SIGINT, as Ctrl-C (or ``ros2 launch`` on shutdown) sends it."""
        self.process.send_signal(signal.SIGINT)
        self._interrupted = True

    def stop(self, timeout: float = 15.0) -> tuple[int, str]:
        """SIGINT (unless sent already or the node has exited), up to ``timeout`` s to exit, then
        kill; ``(exit code, its output)``."""
        if self.process.poll() is None and not self._interrupted:
            self.interrupt()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.returncode = self.process.returncode
        output = self.output()
        if self._temporary:
            self.log_path.unlink(missing_ok=True)
        return self.returncode, output

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc) -> None:
        if self.returncode is None:
            self.stop()


def stop_while_streaming(rclpy, command, ns, points, stamps, outputs):
    """Start a node executable (``command`` in namespace ``ns``), stream clouds at it as fast as
    it takes them, SIGINT it in the middle of the stream, and return ``(exit code, its log,
    {output topic: messages received})``."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from cross4d_testing.replay import SequencePublisher

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
        with NodeProcess(command) as node:
            pub = SequencePublisher(helper, f"{ns}/points", reliability="reliable", depth=100)
            node.wait_for_subscribers(pub, 120.0)
            deadline = time.monotonic() + 60.0
            i = 0
            while not all(received.values()) and time.monotonic() < deadline:  # until the node is busy
                pub.publish_frame(int(stamps[0]) + i * 10**8, points[i % len(points)], "camera_optical")
                i += 1
                time.sleep(0.01)
            assert all(received.values()), "the node published nothing"
            for k in range(40):  # SIGINT while clouds still arrive and a window is in flight
                if k == 10:
                    node.interrupt()
                pub.publish_frame(int(stamps[0]) + (i + k) * 10**8, points[(i + k) % len(points)], "camera_optical")
                time.sleep(0.005)
            code, log = node.stop(timeout=60.0)
    finally:
        executor.shutdown(timeout_sec=5.0)
        helper.destroy_node()
    return code, log, received


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
