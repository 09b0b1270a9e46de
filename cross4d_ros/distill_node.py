"""distill_node: online correspondence + frozen teacher on the robot.

Windows of clouds (+ images and camera infos in camera mode) -> point -> patch
correspondence (``render``: virtual camera from the cloud alone; ``camera``: the real
image, its CameraInfo and the ``camera_from_cloud`` extrinsic) -> frozen teacher ->
projected fp16 targets. Publishes ``~/targets`` (PointCloud2 of the newest frame's
visible points with a ``target`` field) and ``~/overlay`` (the teacher's input image with
the visible points drawn in the PCA colour of their targets), and records windows +
targets into the target-cache format ``cross4d pretrain`` reads: atomic shards, bounded
disk use, resumed after a restart.
"""
from __future__ import annotations

import dataclasses
import threading

import numpy as np
import torch
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Header

from cross4d_core.colours import pca_colours
from cross4d_core.correspondence import fit_virtual_camera
from cross4d_core.geometry.projection import pixel_of, project_points
from cross4d_core.msgconv import ns_to_seconds
from cross4d_core.targets import FeatureProjection, TargetCacheWriter, TargetRecord, cache_config
from cross4d_core.targets.precompute import correspond_clip, target_record
from cross4d_core.types import Clip
from cross4d_core.windowing import Window
from cross4d_ros.messages import make_image, make_pointcloud2, stamp_msg
from cross4d_ros.params import Param
from cross4d_ros.stream_node import WINDOW_PARAMS, StreamNode, as_matrix, run_node
from cross4d_ros.torch_setup import TORCH_PARAMS, configure_torch

_IDENTITY = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]

DISTILL_PARAMS = WINDOW_PARAMS + TORCH_PARAMS + [
    Param("teacher_kind", "dinov2", "frozen teacher family", read_only=True, choices=("dinov2", "vjepa2")),
    Param("teacher_model", "", "teacher model directory (save_pretrained) or Hugging Face id in the local cache",
          read_only=True, required=True),
    Param("correspondence", "render", "render: virtual camera from the cloud alone; camera: real Image + CameraInfo",
          read_only=True, choices=("render", "camera")),
    Param("camera_from_cloud", _IDENTITY, "row-major 4x4 extrinsic: cloud frame -> camera optical frame "
          "(camera mode)", read_only=True, length=16),
    Param("render_image_size", 126, "rendered image side (render mode, pixels)", read_only=True, min=14, max=4096),
    Param("depth_tolerance", 0.05, "camera-mode occlusion tolerance (m)", read_only=True, min=0.0, max=10.0),
    Param("d_p", 384, "projected target size (fixed seeded random projection)", read_only=True, min=1, max=65536),
    Param("projection_seed", 0, "seed of the random projection", read_only=True, min=0, max=2**31 - 1),
    Param("record_dir", "", "target-cache directory to record into; '' = do not record", read_only=True),
    Param("record_every", 0, "record one window every this many windows; 0 = every window_length windows "
          "(non-overlapping windows when stride is 1)", read_only=True, min=0, max=1_000_000),
    Param("shard_windows", 16, "windows per atomically written shard", read_only=True, min=1, max=100_000),
    Param("record_max_bytes", 1 << 30, "stop recording once the cache holds this many bytes", read_only=True,
          min=1, max=1 << 50),
]


class TargetRecorder:
    """Appends windows + targets to a target cache as atomic shards; resumes after a restart.

    Each recorded window is one stored video of one clip (:class:`TargetRecord`). A restart
    with the same settings continues after the last complete shard (a shard that was being
    written when the process died never appeared: atomic rename). Every shard costs the same
    whatever the session's length: the writer commits the manifest from running totals and
    keeps the byte count. ``add`` (worker thread) and ``flush`` (also called by ``stop``) are
    serialised by a lock.
    """

    def __init__(self, root: str, config: dict, projection: FeatureProjection, shard_windows: int,
                 max_bytes: int) -> None:
        self.writer = TargetCacheWriter(root, config)
        self.writer.use_projection(projection)
        self.next_shard = self.writer.num_shards
        self.shard_windows, self.max_bytes = shard_windows, max_bytes
        self.records: list[TargetRecord] = []
        self.recorded = 0
        self.bytes = self.writer.bytes
        self.full = self.bytes >= max_bytes
        self._lock = threading.Lock()

    def add(self, record: TargetRecord) -> None:
        with self._lock:
            if self.full:
                return
            self.records.append(record)
            if len(self.records) >= self.shard_windows:
                self._flush()

    def flush(self) -> None:
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if not self.records:
            return
        self.writer.write_shard(self.next_shard, self.records)
        self.writer.commit()
        self.recorded += len(self.records)
        self.records = []
        self.next_shard += 1
        self.bytes = self.writer.bytes
        self.full = self.bytes >= self.max_bytes


class DistillNode(StreamNode):
    pairs_images = True  # camera mode reads Image + CameraInfo

    def __init__(self, **kwargs) -> None:
        super().__init__("distill_node", **kwargs)
        from cross4d_core.teachers import load_teacher

        p = self.params
        self.device = configure_torch(p)
        if p["correspondence"] == "camera" and not (p["image_topic"] and p["camera_info_topic"]):
            raise ValueError("correspondence 'camera' needs both 'image_topic' and 'camera_info_topic'")
        # Model points live in the transformed frame: camera <- model = camera <- cloud <- model.
        camera_from_cloud = as_matrix(p["camera_from_cloud"], "camera_from_cloud")
        self.camera_from_model = camera_from_cloud @ np.linalg.inv(self.preprocess.transform)
        try:
            self.teacher = load_teacher(p["teacher_kind"], p["teacher_model"], device=self.device,
                                        dtype=torch.bfloat16 if self.device.type == "cuda" else None)
        except (OSError, ValueError) as exc:
            raise ValueError(f"parameter 'teacher_model' = {p['teacher_model']!r}: {exc}") from exc
        self.projection = FeatureProjection.random(self.teacher.feature_dim, p["d_p"], p["projection_seed"])
        self.recorder = None
        if p["record_dir"]:
            config = cache_config(
                self.teacher, p["correspondence"], p["d_p"], "random", p["projection_seed"],
                image_size=p["render_image_size"], splat_radius=1, depth_tolerance=p["depth_tolerance"],
                shard_size=p["shard_windows"], frames=p["window_length"], num_points=p["num_points"],
                dataset={"recorded_by": "distill_node", "cloud_topic": p["cloud_topic"]})
            self.recorder = TargetRecorder(p["record_dir"], config, self.projection, p["shard_windows"],
                                           p["record_max_bytes"])
            self.get_logger().info(f"recording into {p['record_dir']} from shard {self.recorder.next_shard}")
        self.record_every = p["record_every"] or p["window_length"]
        self._next_record = 0  # Window.index of the next window to record (a skipped one moves it on)
        self.targets_pub = self.create_publisher(PointCloud2, "~/targets", self.output_qos,
                                                 event_callbacks=self.publisher_events())
        self.overlay_pub = self.create_publisher(Image, "~/overlay", self.output_qos,
                                                 event_callbacks=self.publisher_events())

    def extra_params(self) -> list[Param]:
        return DISTILL_PARAMS

    def stop(self) -> None:
        super().stop()
        if self.recorder is not None:
            self.recorder.flush()

    def _clip(self, window: Window) -> tuple[Clip, list[np.ndarray]]:
        """The window's model input (each frame preprocessed once, on arrival) as a Clip, and the
        per-frame indices of its points into the raw clouds."""
        points = np.stack([f.model_input.points for f in window.frames])
        images = cameras = None
        if self.params["correspondence"] == "camera":
            missing = [f.stamp_ns for f in window.frames if f.image is None or f.camera is None]
            if missing:
                raise ValueError(f"{len(missing)} frames of the window have no paired image / camera info "
                                 f"(first at t={ns_to_seconds(missing[0]):.6f} s); check sync_tolerance")
            images = np.stack([f.image for f in window.frames])
            cameras = [dataclasses.replace(f.camera, T_cam_from_points=self.camera_from_model) for f in window.frames]
        clip = Clip(points=points, stamps_ns=window.stamps_ns, images=images, cameras=cameras)
        return clip, [f.model_input.index for f in window.frames]

    @torch.no_grad()
    def process_window(self, window: Window) -> None:
        p = self.params
        clip, indices = self._clip(window)
        images, corr = correspond_clip(clip, self.teacher, p["correspondence"], p["render_image_size"], 1,
                                   p["depth_tolerance"])
        feats, transform = self.teacher.grid_features(images)
        grids = self.projection(feats).reshape(feats.shape[0], -1, p["d_p"])  # [S, P, d_p]
        newest = window.frames[-1]
        header = Header(stamp=stamp_msg(newest.stamp_ns), frame_id=newest.frame_id)
        visible = corr.visible[-1].cpu().numpy()
        targets = grids[corr.slot[-1], corr.patch[-1].clamp_min(0)].cpu().numpy()[visible]
        colours = pca_colours(targets) if len(targets) else np.zeros((0, 3), np.uint8)
        # Unique source points only (repeat-padding duplicates them), in the cloud's own frame.
        first = np.zeros(len(indices[-1]), bool)
        first[np.unique(indices[-1], return_index=True)[1]] = True
        keep = first[visible]
        cloud = make_pointcloud2(header, newest.points[indices[-1][visible][keep]], rgb=colours[keep],
                                 embedding=targets[keep], embedding_name="target")
        self.targets_pub.publish(cloud)
        self.overlay_pub.publish(make_image(header, self._overlay(clip, images, visible, colours), "rgb8"))

        if self.recorder is not None and window.index >= self._next_record:
            self._next_record = window.index + self.record_every
            self.recorder.add(target_record(clip.points, corr, feats, self.projection, video=window.sequence,
                                            starts=[window.index], clips=[window.index]))
            if self.recorder.full:
                self.warn_throttled("recording", f"recording stopped: {self.recorder.writer.root} holds "
                                    f"{self.recorder.bytes} bytes >= record_max_bytes")

    def _overlay(self, clip: Clip, images: torch.Tensor, visible: np.ndarray, colours: np.ndarray) -> np.ndarray:
        """The newest teacher input image with its visible points drawn in their target colour."""
        image = np.array(images[-1].cpu().numpy(), dtype=np.uint8)
        if self.params["correspondence"] == "camera":
            camera = clip.cameras[-1]
        else:
            camera = fit_virtual_camera(clip.points, self.params["render_image_size"])
        uv = project_points(torch.from_numpy(clip.points[-1]), camera).uv
        px = pixel_of(uv).numpy()[visible]
        h, w = image.shape[:2]
        inside = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
        image[px[inside, 1], px[inside, 0]] = colours[inside]
        return image


def main(args=None) -> int:
    return run_node(DistillNode, args)


__all__ = ["DistillNode", "TargetRecorder", "main"]
