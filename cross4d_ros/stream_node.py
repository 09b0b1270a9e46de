"""The streaming front half shared by perception_node and distill_node.

Subscriptions (sensor-data QoS by default) only enqueue raw messages into bounded,
drop-oldest queues. One worker thread decodes them, pairs every cloud with the nearest
image / camera info (:class:`~cross4d_core.windowing.FramePairer`, nodes that declare
``image_topic``), preprocesses each frame once (:class:`~cross4d_core.preprocess.FramePreprocessor`),
feeds a :class:`~cross4d_core.windowing.WindowBuffer` and hands each finished window to
:meth:`StreamNode.process_window` — the pairing and windowing of the rosbag reader.

Defined behaviour at every seam (each counted in the diagnostics, with a throttled warning;
the node never dies on input):

- a malformed message, an empty cloud, a cloud whose points fall outside the range crop or
  reach absurd coordinates (beyond ±8192 m in the model frame), a cloud whose stamp repeats
  the previous one or whose ``frame_id`` is not the stream's (the first cloud's): rejected;
- cloud stamps going backwards (a bag played in a loop with ``use_sim_time``, a simulator
  reset) or jumping forward by more than ``max_frame_gap``: the window restarts
  (``time_jumps`` / ``frame_gaps``); the clouds of the old pass still finish their windows,
  and images pair only within their own pass;
- a window whose model output is not finite is not published (``failed_windows``);
- shutdown (:func:`run_node`): SIGINT / SIGTERM stop the worker while the context is still
  valid: the window in flight is finished (published, and recorded by distill_node), the
  windows still queued are counted as skipped, then the node and the context go.
"""
from __future__ import annotations

import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import qos_policy_name_from_kind
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from cross4d_core.errors import MessageFormatError
from cross4d_core.msgconv import (
    camera_info_to_camera,
    image_to_rgb,
    ns_to_seconds,
    pointcloud2_to_xyz,
    seconds_to_ns,
    stamp_to_ns,
)
from cross4d_core.preprocess import FramePreprocessor, frame_rng
from cross4d_core.windowing import DEFAULT_MAX_FRAME_GAP_S, Frame, FramePairer, Window, WindowBuffer
from cross4d_ros.params import Param, declare_and_validate, qos_profile

try:
    from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
except ImportError:  # Humble: the module was renamed to event_handler in Iron
    from rclpy.qos_event import PublisherEventCallbacks, SubscriptionEventCallbacks

#: Parameters every streaming node has (the node classes add their own).
STREAM_PARAMS = [
    Param("cloud_topic", "", "PointCloud2 input topic (the clock of the pipeline: frames are keyed on it)",
          read_only=True, required=True),
    Param("stride", 1, "a window is processed every `stride` new frames", read_only=True, min=1, max=1024),
    Param("max_frame_gap", DEFAULT_MAX_FRAME_GAP_S, "a longer step between consecutive cloud stamps (s) restarts "
          "the window (a sensor dropout must not join two stretches of time); 0 = never", read_only=True,
          min=0.0, max=1e6),
    Param("queue_depth", 10, "bounded input queue per topic (drop-oldest, counted)", read_only=True,
          min=1, max=10_000),
    Param("points_transform", [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0],
          "row-major 4x4 rigid transform applied to the cloud before cropping (model frame <- cloud frame)",
          read_only=True, length=16),
    Param("range_min", 0.0, "drop points closer than this to the (transformed) origin (m)", read_only=True,
          min=0.0, max=1e6),
    Param("range_max", 0.0, "drop points farther than this (m); 0 = no crop", read_only=True, min=0.0, max=1e6),
    Param("qos_input_reliability", "best_effort", "input subscriptions' reliability", read_only=True,
          choices=("best_effort", "reliable")),
    Param("qos_input_depth", 5, "input subscriptions' history depth", read_only=True, min=1, max=10_000),
    Param("qos_output_reliability", "reliable", "result publishers' reliability", read_only=True,
          choices=("best_effort", "reliable")),
    Param("qos_output_depth", 10, "result publishers' history depth", read_only=True, min=1, max=10_000),
    Param("diagnostics_period", 1.0, "period of the DiagnosticArray on /diagnostics (s)", read_only=True,
          min=0.01, max=3600.0),
    Param("skip_stale_windows", True, "when frames queue up, compute only the newest window (older ones are "
          "counted as skipped); false = compute every window"),
    Param("warn_throttle", 5.0, "at most one warning per kind of problem every this many seconds",
          min=0.0, max=3600.0),
]

#: The window shape of nodes that choose it (distill_node); perception_node takes it from its
#: recognizer (:meth:`StreamNode.window_shape`).
WINDOW_PARAMS = [
    Param("window_length", 24, "T, frames per window", read_only=True, min=1, max=1024),
    Param("num_points", 2048, "N, points per frame fed to the model (random subset or repeat-pad)",
          read_only=True, min=1, max=1_000_000),
]

#: Parameters of nodes that pair clouds with camera images (``StreamNode.pairs_images``).
PAIRING_PARAMS = [
    Param("image_topic", "", "Image input topic; empty = cloud-only", read_only=True),
    Param("camera_info_topic", "", "CameraInfo input topic; empty = none", read_only=True),
    Param("sync_tolerance", 0.05, "max |image stamp - cloud stamp| for pairing (s)", min=0.0, max=10.0),
    Param("sync_wait", 0.1, "how long a cloud waits for its image before going on without one (s)",
          min=0.0, max=10.0),
]


@dataclass
class StreamStats:
    """Counters of the streaming pipeline (read by diagnostics and tests)."""

    received: dict = field(default_factory=lambda: {"cloud": 0, "image": 0, "camera_info": 0})
    dropped: dict = field(default_factory=lambda: {"cloud": 0, "image": 0, "camera_info": 0})
    rejected: dict = field(default_factory=lambda: {"cloud": 0, "image": 0, "camera_info": 0})
    frames: int = 0
    paired_frames: int = 0
    windows: int = 0
    skipped_windows: int = 0
    failed_windows: int = 0
    time_jumps: int = 0
    frame_gaps: int = 0
    qos_incompatible: int = 0
    processing_ms: float = float("nan")
    latency_ms: float = float("nan")
    processing_ms_total: float = 0.0


class _DropOldestQueue:
    """A bounded FIFO of raw messages; a full queue drops its oldest entry and counts it."""

    def __init__(self, maxlen: int, stats: StreamStats, kind: str, wake: threading.Condition) -> None:
        self._items: deque = deque(maxlen=maxlen)
        self._stats, self._kind, self._wake = stats, kind, wake

    def put(self, msg) -> None:
        with self._wake:
            if len(self._items) == self._items.maxlen:
                self._stats.dropped[self._kind] += 1
            self._items.append((msg, time.monotonic()))
            self._stats.received[self._kind] += 1
            self._wake.notify()

    def take_all(self) -> list:
        with self._wake:
            items = list(self._items)
            self._items.clear()
        return items

    def __len__(self) -> int:
        return len(self._items)


class StreamNode(Node):
    """Base class: subclasses define ``extra_params()`` and ``process_window(window)``, and
    ``window_shape()`` where T and N do not come from the :data:`WINDOW_PARAMS` (perception_node:
    from its recognizer); those that use camera images set ``pairs_images = True`` (and get
    :data:`PAIRING_PARAMS`)."""

    pairs_images = False

    def __init__(self, node_name: str, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        pairing = PAIRING_PARAMS if self.pairs_images else []
        self.params = declare_and_validate(self, STREAM_PARAMS + pairing + self.extra_params())
        p = self.params
        self.image_topic = p.get("image_topic", "")
        self.camera_info_topic = p.get("camera_info_topic", "")
        self.stats = StreamStats()
        self.window_length, self.num_points = self.window_shape()
        self.preprocess = FramePreprocessor(self.num_points, as_matrix(p["points_transform"], "points_transform"),
                                            p["range_min"], p["range_max"])
        self.window_buffer = WindowBuffer(self.window_length, p["stride"], seconds_to_ns(p["max_frame_gap"]))
        depth = p["queue_depth"]
        self.pairer = FramePairer(seconds_to_ns(p.get("sync_tolerance", 0.0)), depth, images=bool(self.image_topic),
                                  camera_infos=bool(self.camera_info_topic))
        self._wake = threading.Condition()
        self._inputs = {kind: _DropOldestQueue(depth, self.stats, kind, self._wake)
                        for kind in ("cloud", "image", "camera_info")}
        self._stop = threading.Event()
        self._seen_restarts = (0, 0)  # (resets, gaps) of the window buffer already reported
        self._last_warned: dict[str, float] = {}  # kind -> monotonic time of its last warning

        in_qos = qos_profile(p["qos_input_reliability"], p["qos_input_depth"])
        self.output_qos = qos_profile(p["qos_output_reliability"], p["qos_output_depth"])
        sub_events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)
        self.create_subscription(PointCloud2, p["cloud_topic"], self._inputs["cloud"].put, in_qos,
                                 event_callbacks=sub_events)
        if self.image_topic:
            self.create_subscription(Image, self.image_topic, self._inputs["image"].put, in_qos,
                                     event_callbacks=sub_events)
        if self.camera_info_topic:
            self.create_subscription(CameraInfo, self.camera_info_topic, self._inputs["camera_info"].put, in_qos,
                                     event_callbacks=sub_events)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(p["diagnostics_period"], self._publish_diagnostics)
        self._worker = threading.Thread(target=self._worker_loop, name=f"{node_name}_worker", daemon=True)

    # -- to be provided by subclasses -------------------------------------------------
    def extra_params(self) -> list[Param]:
        """The node's own parameters (declared after :data:`STREAM_PARAMS`). Default: :data:`WINDOW_PARAMS`."""
        return WINDOW_PARAMS

    def window_shape(self) -> tuple[int, int]:
        """``(T, N)``: frames per window and points per frame, asked once by ``__init__`` after the
        parameters are declared. Default: the ``window_length`` / ``num_points`` parameters
        (:data:`WINDOW_PARAMS`)."""
        return self.params["window_length"], self.params["num_points"]

    def process_window(self, window: Window) -> None:
        raise NotImplementedError

    def diagnostic_values(self) -> dict:
        """Node-specific entries of the DiagnosticStatus."""
        return {}

    # -- helpers for subclasses ----------------------------------------------------------
    def publisher_events(self) -> PublisherEventCallbacks:
        return PublisherEventCallbacks(incompatible_qos=self._on_incompatible_qos)

    def warn_throttled(self, kind: str, text: str, error: bool = False) -> None:
        """Log ``text`` unless a message of the same ``kind`` was logged less than ``warn_throttle`` s ago.

        Throttled here, per kind: rclpy's ``throttle_duration_sec`` throttles per call site
        (one site for every kind) and raises ValueError once the duration changes.
        """
        now = time.monotonic()
        last = self._last_warned.get(kind)
        if last is not None and now - last < self.get_parameter("warn_throttle").value:
            return
        self._last_warned[kind] = now
        (self.get_logger().error if error else self.get_logger().warning)(text)

    def start(self) -> StreamNode:
        self._worker.start()
        return self

    def stop(self) -> None:
        """Stop the worker once it has finished the window in flight (later queued windows are
        counted as skipped). Call while the context is valid: that window is still published."""
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._worker.is_alive():
            self._worker.join(timeout=60.0)
            if self._worker.is_alive():
                self.get_logger().error("the worker did not finish its window within 60 s")

    def queue_sizes(self) -> dict:
        return {
            **{k: len(q) for k, q in self._inputs.items()},
            **self.pairer.queue_sizes(),
            "window": len(self.window_buffer),
        }

    # -- callbacks -------------------------------------------------------------------------
    def _on_incompatible_qos(self, event) -> None:
        self.stats.qos_incompatible += 1
        self.get_logger().error(
            f"incompatible QoS with a peer (policy {qos_policy_name_from_kind(event.last_policy_kind)}, "
            f"{event.total_count} in total): no messages flow on that connection. A reliable "
            "subscriber never hears a best-effort publisher; see the qos_* parameters."
        )

    # -- worker --------------------------------------------------------------------------
    def _worker_loop(self) -> None:
        while not self._stop.is_set():
            with self._wake:
                if not any(len(q) for q in self._inputs.values()):
                    # new input notifies; clouds waiting for their image re-check every 5 ms
                    self._wake.wait(timeout=0.005 if len(self.pairer) else 0.1)
            try:
                self._step()
            except Exception as exc:  # a bug in one step must not kill the node's processing
                self.stats.failed_windows += 1
                self.warn_throttled("step", f"worker step failed: {type(exc).__name__}: {exc}", error=True)

    def _step(self) -> None:
        for msg, _ in self._inputs["image"].take_all():
            self._decode("image", msg, lambda m: self.pairer.add_image(stamp_to_ns(m.header.stamp), image_to_rgb(m)))
        for msg, _ in self._inputs["camera_info"].take_all():
            self._decode("camera_info", msg, lambda m: self.pairer.add_camera_info(stamp_to_ns(m.header.stamp),
                                                                                   camera_info_to_camera(m)))
        for msg, arrival in self._inputs["cloud"].take_all():
            self._decode("cloud", msg, lambda m: self._add_cloud(m, arrival))
        if self.pairs_images:
            self.pairer.set_tolerance_ns(seconds_to_ns(self.get_parameter("sync_tolerance").value))
        windows = [w for frame in self.pairer.pop_ready(time.monotonic())
                   if (w := self._push_frame(frame)) is not None]
        if windows and self.get_parameter("skip_stale_windows").value:
            # Behind the input: only the newest window is worth computing (its frames still
            # went through the per-frame work), the older ones are counted as skipped.
            self.stats.skipped_windows += len(windows) - 1
            windows = windows[-1:]
        for k, window in enumerate(windows):
            if self._stop.is_set():  # stopping: the window in flight was the last one
                self.stats.skipped_windows += len(windows) - k
                break
            self._process(window)

    def _decode(self, kind: str, msg, action) -> None:
        try:
            action(msg)
        except Exception as exc:  # MessageFormatError for malformed input; anything else is counted too
            self._reject(kind, f"{type(exc).__name__}: {exc}")

    def _reject(self, kind: str, why: str) -> None:
        self.stats.rejected[kind] += 1
        self.warn_throttled(f"rejected_{kind}", f"rejected {kind} message ({sum(self.stats.rejected.values())} "
                            f"rejected so far): {why}")

    def _add_cloud(self, msg, arrival: float) -> None:
        points = pointcloud2_to_xyz(msg)
        if points.shape[0] == 0:
            raise MessageFormatError("PointCloud2: no finite point")
        deadline = arrival + (self.get_parameter("sync_wait").value if self.pairs_images else 0.0)
        self.pairer.add_cloud(stamp_to_ns(msg.header.stamp), msg.header.frame_id, points, deadline)

    def _push_frame(self, frame: Frame) -> Window | None:
        """Preprocess ``frame`` (once: the windows it joins reuse it) and window it."""
        try:
            frame.model_input = self.preprocess(frame.points, frame_rng(frame.stamp_ns))
            window = self.window_buffer.push(frame)
        except ValueError as exc:  # refused by the preprocessing or the window buffer (FrameRejected)
            self._reject("cloud", f"cloud at t={ns_to_seconds(frame.stamp_ns):.6f} s in {frame.frame_id!r}: {exc}")
            return None
        restarts = (self.window_buffer.resets, self.window_buffer.gaps)
        if restarts != self._seen_restarts:
            why = "went backwards" if restarts[0] != self._seen_restarts[0] else \
                f"jumped forward by more than max_frame_gap = {self.params['max_frame_gap']} s"
            self.stats.time_jumps, self.stats.frame_gaps = restarts
            self._seen_restarts = restarts
            self.get_logger().info(f"cloud stamps {why} (t={ns_to_seconds(frame.stamp_ns):.6f} s): window restarted")
        self.stats.frames += 1
        self.stats.paired_frames += frame.image is not None
        return window

    def _process(self, window: Window) -> None:
        started = time.perf_counter()
        try:
            self.process_window(window)
            self.stats.windows += 1
        except Exception as exc:
            self.stats.failed_windows += 1
            self.warn_throttled("window", f"window {window.index} [{ns_to_seconds(window.start_ns):.3f}, "
                                f"{ns_to_seconds(window.end_ns):.3f}] s failed: {type(exc).__name__}: {exc}",
                                error=True)
            return
        self.stats.processing_ms = (time.perf_counter() - started) * 1e3
        self.stats.processing_ms_total += self.stats.processing_ms
        self.stats.latency_ms = (self.get_clock().now().nanoseconds - window.end_ns) * 1e-6

    def _publish_diagnostics(self) -> None:
        s = self.stats
        values = {
            "processing_ms": f"{s.processing_ms:.2f}",
            "processing_ms_total": f"{s.processing_ms_total:.1f}",
            "latency_ms": f"{s.latency_ms:.2f}",
            "frames": s.frames,
            "paired_frames": s.paired_frames,
            "windows": s.windows,
            "skipped_windows": s.skipped_windows,
            "failed_windows": s.failed_windows,
            "time_jumps": s.time_jumps,
            "frame_gaps": s.frame_gaps,
            "qos_incompatible": s.qos_incompatible,
            **{f"received_{k}": v for k, v in s.received.items()},
            **{f"dropped_{k}": v for k, v in s.dropped.items()},
            **{f"rejected_{k}": v for k, v in s.rejected.items()},
            **{f"queue_{k}": v for k, v in self.queue_sizes().items()},
            **self.diagnostic_values(),
        }
        level = DiagnosticStatus.OK
        message = "ok"
        if s.failed_windows or sum(s.dropped.values()) or sum(s.rejected.values()):
            level, message = DiagnosticStatus.WARN, "dropped, rejected or failed input (see values)"
        status = DiagnosticStatus(level=level, name=f"{self.get_fully_qualified_name()}: pipeline",
                                  message=message, hardware_id=self.get_fully_qualified_name(),
                                  values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)


def run_node(node_class, args=None) -> int:
    """``main()`` of a stream node: init, build (parameter errors -> exit code 2), spin until
    SIGINT / SIGTERM, then stop the worker (it finishes and publishes the window in flight),
    destroy the node and shut the context down — in that order, so no publish ever meets an
    invalid context.

    rclpy's own signal handler is off: it would shut the context down from the signal while the
    worker still publishes (``RCLError: publisher's context is invalid``).
    """
    import rclpy
    from rclpy.exceptions import ParameterException
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    node = None
    try:
        try:
            node = node_class()
        except (ValueError, ParameterException) as exc:  # bad parameter or checkpoint: one clear message
            rclpy.logging.get_logger(node_class.__name__).fatal(str(exc))
            return 2
        node.start()
        # Callbacks only enqueue, so one executor thread is enough; rclpy's MultiThreadedExecutor
        # busy-polls while idle and, holding the GIL, starves the inference worker thread
        # (seconds per window on a 2-core machine).
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            while not stopping.is_set() and rclpy.ok():
                executor.spin_once(timeout_sec=0.1)
        except ExternalShutdownException:
            pass
        finally:
            executor.shutdown()
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


def as_matrix(values, name: str) -> np.ndarray:
    """A row-major 16-value parameter -> ``[4, 4]`` float64 rigid transform (checked)."""
    m = np.asarray(values, dtype=np.float64).reshape(4, 4)
    r = m[:3, :3]
    if not (np.isfinite(m).all() and np.allclose(m[3], [0, 0, 0, 1])
            and np.allclose(r @ r.T, np.eye(3), atol=1e-5) and np.linalg.det(r) > 0):
        raise ValueError(f"parameter '{name}' is not a rigid transform (row-major 4x4): {m.tolist()}")
    return m
