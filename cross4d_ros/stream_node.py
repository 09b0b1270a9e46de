"""The streaming front half shared by perception_node and distill_node.

Subscriptions (sensor-data QoS by default) only enqueue raw messages into bounded,
drop-oldest queues. One worker thread decodes them, pairs every cloud with the nearest
image / camera info inside ``sync_tolerance``, feeds a :class:`WindowBuffer` and hands
each finished window to :meth:`StreamNode.process_window`. Malformed messages are counted
and reported with a throttled warning; the node never dies on input. Time jumping
backwards (``use_sim_time`` bag loops) clears every buffer.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import JumpThreshold
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import qos_policy_name_from_kind
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from cross4d_core.msgconv import (
    camera_info_to_camera,
    image_to_rgb,
    pointcloud2_to_xyz,
    seconds_to_stamp_parts,
    stamp_to_seconds,
)
from cross4d_core.windowing import Frame, NearestStampQueue, Window, WindowBuffer
from cross4d_ros.params import Param, declare_and_validate, qos_profile

try:
    from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
except ImportError:  # Humble: the module was renamed to event_handler in Iron
    from rclpy.qos_event import PublisherEventCallbacks, SubscriptionEventCallbacks

#: Parameters every streaming node has (the node classes add their own).
STREAM_PARAMS = [
    Param("cloud_topic", "", "PointCloud2 input topic (the clock of the pipeline: frames are keyed on it)",
          read_only=True, required=True),
    Param("image_topic", "", "Image input topic; empty = cloud-only", read_only=True),
    Param("camera_info_topic", "", "CameraInfo input topic; empty = none", read_only=True),
    Param("window_length", 24, "T, frames per window", read_only=True, min=1, max=1024),
    Param("stride", 1, "a window is processed every `stride` new frames", read_only=True, min=1, max=1024),
    Param("num_points", 2048, "N, points per frame fed to the model (subset or repeat-pad)",
          read_only=True, min=1, max=1_000_000),
    Param("sync_tolerance", 0.05, "max |image stamp - cloud stamp| for pairing (s)", min=0.0, max=10.0),
    Param("sync_wait", 0.1, "how long a cloud waits for its image before going on without one (s)",
          min=0.0, max=10.0),
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


def time_msg(seconds: float) -> Time:
    sec, nanosec = seconds_to_stamp_parts(seconds)
    return Time(sec=sec, nanosec=nanosec)


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
    """Base class: subclasses define ``extra_params()`` and ``process_window(window)``."""

    def __init__(self, node_name: str, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.params = declare_and_validate(self, STREAM_PARAMS + self.extra_params())
        p = self.params
        self.stats = StreamStats()
        self.window_buffer = WindowBuffer(p["window_length"], p["stride"])
        depth = p["queue_depth"]
        self.image_queue = NearestStampQueue(depth, p["sync_tolerance"])
        self.camera_queue = NearestStampQueue(depth, p["sync_tolerance"])
        self._pending_clouds: deque = deque()  # (stamp, frame_id, points, arrival) waiting for their image
        self._last_camera = None
        # Exact header stamps of recent clouds: outputs copy them (float seconds may be off by ~100 ns).
        self._stamp_msgs: OrderedDict[float, Time] = OrderedDict()
        self._wake = threading.Condition()
        self._inputs = {kind: _DropOldestQueue(depth, self.stats, kind, self._wake)
                        for kind in ("cloud", "image", "camera_info")}
        self._stop = threading.Event()
        self._time_jumped = threading.Event()
        self._seen_resets = 0
        self._last_warned: dict[str, float] = {}  # kind -> monotonic time of its last warning

        in_qos = qos_profile(p["qos_input_reliability"], p["qos_input_depth"])
        self.output_qos = qos_profile(p["qos_output_reliability"], p["qos_output_depth"])
        sub_events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)
        self.create_subscription(PointCloud2, p["cloud_topic"], self._inputs["cloud"].put, in_qos,
                                 event_callbacks=sub_events)
        if p["image_topic"]:
            self.create_subscription(Image, p["image_topic"], self._inputs["image"].put, in_qos,
                                     event_callbacks=sub_events)
        if p["camera_info_topic"]:
            self.create_subscription(CameraInfo, p["camera_info_topic"], self._inputs["camera_info"].put, in_qos,
                                     event_callbacks=sub_events)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(p["diagnostics_period"], self._publish_diagnostics)
        # /clock jumping back (bag loop with use_sim_time) clears every buffer.
        self._jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-1), on_clock_change=True),
            post_callback=self._on_time_jump,
        )
        self._worker = threading.Thread(target=self._worker_loop, name=f"{node_name}_worker", daemon=True)

    # -- to be provided by subclasses -------------------------------------------------
    def extra_params(self) -> list[Param]:
        return []

    def process_window(self, window: Window) -> None:
        raise NotImplementedError

    def on_reset(self) -> None:
        """Called in the worker thread when the stream restarts (time went backwards)."""

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

    def start(self) -> "StreamNode":
        self._worker.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._worker.is_alive():
            self._worker.join(timeout=10.0)

    def queue_sizes(self) -> dict:
        return {
            **{k: len(q) for k, q in self._inputs.items()},
            "pending_clouds": len(self._pending_clouds),
            "images": len(self.image_queue),
            "camera_infos": len(self.camera_queue),
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

    def _on_time_jump(self, jump) -> None:
        self._time_jumped.set()
        with self._wake:
            self._wake.notify()

    # -- worker --------------------------------------------------------------------------
    def _worker_loop(self) -> None:
        while not self._stop.is_set():
            with self._wake:
                if not any(len(q) for q in self._inputs.values()):
                    # new input notifies; clouds waiting for their image re-check every 5 ms
                    self._wake.wait(timeout=0.005 if self._pending_clouds else 0.1)
            try:
                self._step()
            except Exception as exc:  # a bug in one step must not kill the node's processing
                self.stats.failed_windows += 1
                self.warn_throttled("step", f"worker step failed: {type(exc).__name__}: {exc}", error=True)

    def _reset(self, why: str) -> None:
        self.stats.time_jumps += 1
        self.window_buffer.clear()
        self.image_queue.clear()
        self.camera_queue.clear()
        self._pending_clouds.clear()
        self._last_camera = None
        self.on_reset()
        self.get_logger().info(f"stream reset ({why}): windows cleared")

    def _step(self) -> None:
        if self._time_jumped.is_set():
            self._time_jumped.clear()
            self._reset("clock jumped backwards")
        for msg, _ in self._inputs["image"].take_all():
            self._decode("image", msg,
                         lambda m: self.image_queue.push(stamp_to_seconds(m.header.stamp), image_to_rgb(m)))
        for msg, _ in self._inputs["camera_info"].take_all():
            self._decode("camera_info", msg,
                         lambda m: self.camera_queue.push(stamp_to_seconds(m.header.stamp), camera_info_to_camera(m)))
        for msg, arrival in self._inputs["cloud"].take_all():
            self._decode("cloud", msg, lambda m: self._enqueue_cloud(m, arrival))
        self._flush_pending_clouds()

    def _decode(self, kind: str, msg, action) -> None:
        try:
            action(msg)
        except Exception as exc:  # MessageFormatError for malformed input; anything else is counted too
            self.stats.rejected[kind] += 1
            self.warn_throttled(f"rejected_{kind}", f"rejected {kind} message ({sum(self.stats.rejected.values())} "
                                f"rejected so far): {type(exc).__name__}: {exc}")

    def _enqueue_cloud(self, msg, arrival: float) -> None:
        stamp = stamp_to_seconds(msg.header.stamp)
        self._pending_clouds.append((stamp, msg.header.frame_id, pointcloud2_to_xyz(msg), arrival))
        self._stamp_msgs[stamp] = msg.header.stamp
        self._stamp_msgs.move_to_end(stamp)
        while len(self._stamp_msgs) > 2 * self.window_buffer.length + len(self._pending_clouds) + 8:
            self._stamp_msgs.popitem(last=False)

    def stamp_msg(self, seconds: float) -> Time:
        """The exact header stamp of the cloud at ``seconds`` (converted when no longer known)."""
        stamp = self._stamp_msgs.get(seconds)
        return Time(sec=stamp.sec, nanosec=stamp.nanosec) if stamp is not None else time_msg(seconds)

    def _pairing_may_still_come(self, stamp: float, arrival: float) -> bool:
        """Whether a cloud should wait for its image / camera info (bounded by ``sync_wait``)."""
        if time.monotonic() - arrival >= self.get_parameter("sync_wait").value:
            return False
        image_missing = bool(self.params["image_topic"]) and self.image_queue.peek_nearest(stamp) is None
        camera_missing = (bool(self.params["camera_info_topic"]) and self._last_camera is None
                          and self.camera_queue.peek_nearest(stamp) is None)
        return image_missing or camera_missing

    def _flush_pending_clouds(self) -> None:
        windows = []
        while self._pending_clouds:
            stamp, frame_id, points, arrival = self._pending_clouds[0]
            # bounded: beyond queue_depth waiting clouds the oldest goes on without its image
            if self._pairing_may_still_come(stamp, arrival) and len(self._pending_clouds) <= self.params["queue_depth"]:
                break
            self._pending_clouds.popleft()
            window = self._push_frame(stamp, frame_id, points)
            if window is not None:
                windows.append(window)
        if windows and self.get_parameter("skip_stale_windows").value:
            # Behind the input: only the newest window is worth computing (its frames still
            # go through the per-frame work), the older ones are counted as skipped.
            self.stats.skipped_windows += len(windows) - 1
            windows = windows[-1:]
        for window in windows:
            self._process(window)

    def _push_frame(self, stamp: float, frame_id: str, points: np.ndarray) -> Window | None:
        if points.shape[0] == 0:
            self.stats.rejected["cloud"] += 1
            self.warn_throttled("empty_cloud", f"rejected cloud at t={stamp:.6f}: no finite points")
            return None
        tolerance = self.get_parameter("sync_tolerance").value
        self.image_queue.tolerance = self.camera_queue.tolerance = tolerance
        image = self.image_queue.pop_nearest(stamp) if self.params["image_topic"] else None
        camera = self.camera_queue.pop_nearest(stamp) if self.params["camera_info_topic"] else None
        # CameraInfo rarely changes: a frame without a fresh one uses the last valid one.
        camera = camera if camera is not None else self._last_camera
        self._last_camera = camera
        frame = Frame(stamp=stamp, points=points, frame_id=frame_id, image=image, camera=camera)
        rejected_before = self.window_buffer.rejected
        window = self.window_buffer.push(frame)
        if self.window_buffer.rejected != rejected_before:
            self.stats.rejected["cloud"] += 1
            self.warn_throttled("cloud_stamp", f"rejected cloud with duplicate or invalid stamp t={stamp:.6f}")
            return None
        if self.window_buffer.resets != self._seen_resets:
            self._seen_resets = self.window_buffer.resets
            self.stats.time_jumps += 1
            self.on_reset()
            self.get_logger().info(f"cloud stamps went backwards (t={stamp:.6f}): windows cleared")
        self.stats.frames += 1
        self.stats.paired_frames += image is not None
        return window

    def _process(self, window: Window) -> None:
        started = time.perf_counter()
        try:
            self.process_window(window)
            self.stats.windows += 1
        except Exception as exc:
            self.stats.failed_windows += 1
            self.warn_throttled("window", f"window {window.index} [{window.start:.3f}, {window.end:.3f}] failed: "
                                f"{type(exc).__name__}: {exc}", error=True)
            return
        self.stats.processing_ms = (time.perf_counter() - started) * 1e3
        self.stats.processing_ms_total += self.stats.processing_ms
        now = self.get_clock().now().nanoseconds * 1e-9
        self.stats.latency_ms = (now - window.end) * 1e3

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
    """``main()`` of a stream node: init, build (parameter errors -> exit code 2), spin, shut down."""
    import rclpy
    from rclpy.exceptions import ParameterException
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    rclpy.init(args=args)
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
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
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
