"""perception_node: streaming 4D recognition.

clouds -> windows of T frames x N points -> recognizer (POINT4D encoder, per-frame tokens
cached across overlapping windows, and its linear head) -> ``~/actions`` (ActionRecognition,
top-k labels) and ``~/point_embeddings`` (PointEmbeddings of the newest frame: x, y, z, PCA
rgb, embedding) plus a DiagnosticArray on ``/diagnostics``. It needs no camera: it declares
no image topics (distill_node does).

T and N come from the recognizer (:class:`~cross4d_core.models.Recognizer`, its
``config.json``): its head was fitted on T x N windows. The ``window_length`` /
``num_points`` parameters default to 0 (= the recognizer's); any other value is a check
that must equal the recognizer's, and a node given a different one does not start (a
parameter error naming both values), so a launch file written for one model cannot
silently feed another the wrong windows.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from cross4d.msg import ActionRecognition, PointEmbeddings
from std_msgs.msg import Header

from cross4d_core.colours import pca_colours
from cross4d_core.errors import CheckpointError
from cross4d_core.frame_cache import FrameEncodingCache
from cross4d_core.models import Point4DOutput, Recognizer
from cross4d_core.windowing import Window
from cross4d_ros.messages import make_action_recognition, make_point_embeddings, stamp_msg
from cross4d_ros.params import Param, ParameterError
from cross4d_ros.stream_node import StreamNode, run_node
from cross4d_ros.torch_setup import TORCH_PARAMS, configure_torch

#: perception_node's own parameters (declared after the stream parameters).
PERCEPTION_PARAMS = TORCH_PARAMS + [
    Param("checkpoint", "", "recognizer directory (config.json + model.safetensors; `cross4d probe` writes "
          "<out>/recognizer/)", read_only=True, required=True),
    Param("window_length", 0, "T, frames per window: 0 = the recognizer's num_frames; any other value must equal "
          "it (a check: the head was fitted on such windows)", read_only=True, min=0, max=1024),
    Param("num_points", 0, "N, points per frame fed to the model (random subset or repeat-pad): 0 = the "
          "recognizer's num_points; any other value must equal it", read_only=True, min=0, max=1_000_000),
    Param("labels", [""], "label names overriding the recognizer's ([''] = use the recognizer's)", read_only=True),
    Param("publish_embeddings", True, "publish ~/point_embeddings (N x D x 4 bytes per window)"),
    Param("embedding_max_points", 0, "at most this many points in ~/point_embeddings; 0 = all", min=0,
          max=1_000_000),
    Param("top_k", 5, "labels in ActionRecognition.labels", min=1, max=1000),
]


class PerceptionNode(StreamNode):
    recognizer: Recognizer  # loaded by window_shape(), which StreamNode.__init__ calls

    def __init__(self, **kwargs) -> None:
        super().__init__("perception_node", **kwargs)  # loads the recognizer (window_shape)
        p = self.params
        self.device = configure_torch(p)
        self.recognizer = self.recognizer.to(self.device)
        config = self.recognizer.config
        labels = [s for s in p["labels"] if s]
        if labels and len(labels) != config.num_classes:
            raise ValueError(f"parameter 'labels' has {len(labels)} names, the recognizer has {config.num_classes} "
                             "classes")
        self.label_names = labels or config.label_names
        self.model_id = config.model_id or p["checkpoint"]
        self.cache = FrameEncodingCache(self.recognizer.encoder, self.window_length + p["stride"])
        # Cumulative time up to the ActionRecognition publish (encoder + classifier; a frame is
        # preprocessed once, on arrival) and of the PointEmbeddings part, for diagnostics and the benchmark.
        self.inference_ms_total = self.embeddings_ms_total = 0.0
        self.actions_pub = self.create_publisher(ActionRecognition, "~/actions", self.output_qos,
                                                 event_callbacks=self.publisher_events())
        self.embeddings_pub = self.create_publisher(PointEmbeddings, "~/point_embeddings", self.output_qos,
                                                    event_callbacks=self.publisher_events())
        self.get_logger().info(
            f"model {self.model_id} on {self.device}: {config.num_classes} classes, windows of "
            f"{self.window_length} x {self.num_points} points (the recognizer's) every {p['stride']} frames "
            f"from {p['cloud_topic']}"
        )

    def extra_params(self) -> list[Param]:
        return PERCEPTION_PARAMS

    def window_shape(self) -> tuple[int, int]:
        """The recognizer's ``(num_frames, num_points)``; loads it (on the CPU) from ``checkpoint``
        and checks the ``window_length`` / ``num_points`` parameters against it."""
        p = self.params
        try:
            self.recognizer = Recognizer.from_pretrained(p["checkpoint"])
        except CheckpointError as exc:
            raise ValueError(f"parameter 'checkpoint' = {p['checkpoint']!r}: {exc}") from exc
        config = self.recognizer.config
        for name, key in (("window_length", "num_frames"), ("num_points", "num_points")):
            if p[name] and p[name] != getattr(config, key):
                raise ParameterError(
                    f"parameter '{name}' = {p[name]} differs from the recognizer's {key} = {getattr(config, key)} "
                    f"({p['checkpoint']}): its head was fitted on {config.num_frames} x {config.num_points} windows; "
                    f"leave '{name}' at 0 to take the recognizer's")
        return config.num_frames, config.num_points

    def diagnostic_values(self) -> dict:
        return {"inference_ms_total": f"{self.inference_ms_total:.1f}",
                "embeddings_ms_total": f"{self.embeddings_ms_total:.1f}",
                "frame_cache_hits": self.cache.hits, "frame_cache_misses": self.cache.misses}

    def model_input(self, window: Window) -> torch.Tensor:
        """``[T, N, 3]`` model points of the window (each frame was preprocessed once, on arrival)."""
        return torch.from_numpy(np.stack([f.model_input.points for f in window.frames])).to(self.device)

    @torch.no_grad()
    def process_window(self, window: Window) -> None:
        started = time.perf_counter()
        points = self.model_input(window)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            output = self.recognizer.classify(
                self.cache.encode([(window.sequence, f.stamp_ns) for f in window.frames], points))
        probs = torch.softmax(output.logits.float(), dim=-1)[0]
        if not torch.isfinite(probs).all():
            raise ValueError("the model's class scores are not finite; nothing published")
        k = min(self.get_parameter("top_k").value, probs.numel())
        scores, classes = torch.topk(probs, k)
        newest = window.frames[-1]
        header = Header(stamp=stamp_msg(newest.stamp_ns), frame_id=newest.frame_id)
        self.actions_pub.publish(make_action_recognition(
            header, window.start_ns, window.end_ns, len(window.frames),
            [self.label_names[i] for i in classes.tolist()], scores.cpu().numpy(), self.model_id))
        published = time.perf_counter()
        self.inference_ms_total += (published - started) * 1e3

        if self.get_parameter("publish_embeddings").value:
            self._publish_embeddings(window, output.encoder_output, points, header)
            self.embeddings_ms_total += (time.perf_counter() - published) * 1e3

    def _publish_embeddings(self, window: Window, output: Point4DOutput, points: torch.Tensor,
                            header: Header) -> None:
        newest = Point4DOutput(token_features=output.token_features[:, -1:], token_centres=output.token_centres[:, -1:],
                               token_point_index=output.token_point_index[:, -1:], clip_feature=output.clip_feature)
        features = self.recognizer.encoder.point_features(newest, points[None, -1:])[0, 0].float().cpu().numpy()
        # Repeat-padding appends copies after the distinct prefix: publish every source point
        # once (at most embedding_max_points), in source order.
        index = window.frames[-1].model_input.index
        unique = len(np.unique(index))
        limit = self.get_parameter("embedding_max_points").value
        count = min(unique, limit) if limit else unique
        order = np.argsort(index[:count], kind="stable")
        features = features[:count][order]
        self.embeddings_pub.publish(make_point_embeddings(
            header, window.start_ns, len(window.frames), window.frames[-1].points[index[:count][order]],
            features, self.model_id, rgb=pca_colours(features)))


def main(args=None) -> int:
    return run_node(PerceptionNode, args)
