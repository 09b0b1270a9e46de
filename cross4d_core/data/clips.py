"""Fixed-size clips from the on-disk format: the torch Dataset training reads.

Clip semantics (``L = frames``, ``s = frame_step``, ``c = clip_stride``):

- a clip covers ``span = (L - 1) * s + 1`` consecutive source frames and uses every
  ``s``-th one; clips start at ``0, c, 2c, ...`` while ``start + span <= T``;
- a video shorter than ``span`` is never dropped silently: with ``short_video="pad"`` it
  gives one clip from frame 0 whose missing frames repeat the last frame; with
  ``"report"`` it gives no clip. Either way it is listed in :attr:`ClipDataset.short_videos`;
- each frame gets exactly ``N = num_points`` points from
  :func:`~cross4d_core.preprocess.sample_point_indices`, the sampler the ROS nodes use: a
  random subset without replacement when it has more, otherwise a random permutation of
  all its points repeated cyclically (never zeros, never invented points), in random order;
- a frame with zero points is replaced by the nearest non-empty frame of the same video
  (the earlier one on a tie); these are counted in :attr:`ClipDataset.empty_frames`. A
  video with no points at all gives no clip and is listed in :attr:`ClipDataset.empty_videos`;
- the points of a frame depend only on ``(seed, epoch, the frame's stamp)``
  (:func:`~cross4d_core.preprocess.frame_rng`, :meth:`ClipDataset.set_epoch`): a frame is
  sampled alike in every clip that holds it (as the nodes' per-frame cache sees it), results
  do not depend on worker order, and with ``seed=0, epoch=0`` a clip's points are exactly
  the model input a node computes from the same frames.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cross4d_core.data.format import Dataset4D, VideoRecord
from cross4d_core.preprocess import frame_rng, sample_point_indices
from cross4d_core.types import Clip

SHORT_VIDEO_POLICIES = ("pad", "report")


def nearest_nonempty(counts: np.ndarray) -> np.ndarray:
    """For every frame the index of the nearest frame with points (earlier on a tie);
    ``counts`` must have at least one non-zero entry."""
    full = np.nonzero(counts > 0)[0]
    t = np.arange(len(counts))
    right = np.clip(np.searchsorted(full, t), 0, len(full) - 1)
    left = np.clip(right - 1, 0, len(full) - 1)
    use_left = np.abs(t - full[left]) <= np.abs(full[right] - t)
    return np.where(use_left, full[left], full[right])


class ClipDataset(torch.utils.data.Dataset):
    """Clips of ``frames`` frames x ``num_points`` points from a dataset on disk.

    Items are dicts: ``points [T, N, 3]`` float32 (metres), ``label`` int64 (-1 if none),
    ``video`` int64 (index of the video in the :class:`Dataset4D`), ``start`` int64 (first
    source frame); with ``with_images`` also ``images [T, H, W, 3]`` uint8,
    ``K [T, 3, 3]`` and ``T_cam_from_points [T, 4, 4]`` float64.

    Args:
        root: dataset directory.
        split: a split name, a list of split names, or None for every video.
        frames, frame_step, clip_stride, num_points, short_video, seed: see the module docstring.
        with_images: add the RGB images and cameras to the items (every selected video must have them).
        verify: file check on first access of a video (``"size"``, ``"checksum"``, ``"none"``).
    """

    def __init__(self, root: str | Path, split: str | Sequence[str] | None = None, frames: int = 24,
                 frame_step: int = 1, clip_stride: int = 1, num_points: int = 2048, short_video: str = "pad",
                 seed: int = 0, with_images: bool = False, verify: str = "size") -> None:
        for name, value in (("frames", frames), ("frame_step", frame_step), ("clip_stride", clip_stride),
                            ("num_points", num_points)):
            if int(value) < 1:
                raise ValueError(f"ClipDataset: {name} must be >= 1, got {value}")
        if short_video not in SHORT_VIDEO_POLICIES:
            raise ValueError(f"ClipDataset: short_video must be one of {SHORT_VIDEO_POLICIES}, got {short_video!r}")
        self.dataset = Dataset4D.open(root, verify=verify)
        self.frames, self.frame_step, self.clip_stride = int(frames), int(frame_step), int(clip_stride)
        self.num_points, self.short_video, self.seed = int(num_points), short_video, int(seed)
        self.with_images = with_images
        self.epoch = 0
        splits = None if split is None else ({split} if isinstance(split, str) else set(split))
        if splits is not None:
            unknown = splits - set(self.dataset.manifest["splits"])
            if unknown:
                raise ValueError(f"ClipDataset: split(s) {sorted(unknown)} not in {root} "
                                 f"(has {self.dataset.manifest['splits']})")
        span = (self.frames - 1) * self.frame_step + 1
        self.span = span
        self.short_videos: list[dict] = []
        self.empty_videos: list[str] = []
        self.empty_frames = 0
        self.video_indices: list[int] = []
        vids, starts = [], []
        for i, e in enumerate(self.dataset.entries):
            if splits is not None and e["split"] not in splits:
                continue
            self.video_indices.append(i)
            T = e["num_frames"]
            if len(e["empty_frames"]) == T:
                self.empty_videos.append(e["id"])
                continue
            self.empty_frames += len(e["empty_frames"])
            if T < span:
                self.short_videos.append({"id": e["id"], "num_frames": T, "policy": short_video})
                if short_video == "report":
                    continue
                s = np.zeros(1, np.int64)
            else:
                s = np.arange(0, T - span + 1, self.clip_stride, dtype=np.int64)
            vids.append(np.full(len(s), i, np.int64))
            starts.append(s)
        self.clip_videos = np.concatenate(vids) if vids else np.zeros(0, np.int64)
        self.clip_starts = np.concatenate(starts) if starts else np.zeros(0, np.int64)
        labels = np.array([e["label"] for e in self.dataset.entries], np.int64)
        self.clip_labels = labels[self.clip_videos] if len(labels) else np.zeros(0, np.int64)

    @property
    def label_names(self) -> list[str]:
        return self.dataset.label_names

    @property
    def num_videos(self) -> int:
        """Videos selected by ``split`` (including short / empty ones that give no clip)."""
        return len(self.video_indices)

    def set_epoch(self, epoch: int) -> None:
        """Change the random point subsets (deterministically) for another training epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.clip_videos)

    def frame_indices(self, i: int) -> tuple[VideoRecord, np.ndarray]:
        """Clip ``i`` as (video, source frame index ``[T]``): padding repeats the last frame,
        empty frames are replaced by the nearest non-empty one."""
        if not 0 <= i < len(self):
            raise IndexError(f"clip index {i} out of range [0, {len(self)})")
        video = self.dataset.video(int(self.clip_videos[i]))
        counts = np.diff(np.asarray(video.offsets))
        frame_idx = np.minimum(self.clip_starts[i] + np.arange(self.frames) * self.frame_step, video.num_frames - 1)
        if (counts[frame_idx] == 0).any():
            frame_idx = nearest_nonempty(counts)[frame_idx]
        return video, frame_idx

    def indices(self, i: int) -> tuple[VideoRecord, np.ndarray, np.ndarray]:
        """Clip ``i`` as (video, source frame index ``[T]``, flat point index ``[T, N]`` into
        the video's ``points`` / ``part`` / ``track`` arrays)."""
        video, frame_idx = self.frame_indices(i)
        return video, frame_idx, self._point_indices(video, frame_idx)

    def _point_indices(self, video: VideoRecord, frame_idx: np.ndarray) -> np.ndarray:
        """``[F, N]`` flat point index of frames ``frame_idx``, each sampled from its own stamp."""
        offsets = np.asarray(video.offsets)
        counts = np.diff(offsets)
        stamps = video.stamps_ns
        local = np.stack([sample_point_indices(int(counts[f]), self.num_points,
                                               frame_rng(int(stamps[f]), self.seed, self.epoch)) for f in frame_idx])
        return offsets[frame_idx][:, None] + local

    def __getitem__(self, i: int) -> dict:
        video, frame_idx, flat = self.indices(i)
        item = {
            "points": torch.from_numpy(np.asarray(video.array("points")[flat.reshape(-1)]).reshape(
                self.frames, self.num_points, 3)),
            "label": torch.tensor(video.label, dtype=torch.int64),
            "video": torch.tensor(int(self.clip_videos[i]), dtype=torch.int64),
            "start": torch.tensor(int(self.clip_starts[i]), dtype=torch.int64),
        }
        if self.with_images:
            if video.images is None:
                raise ValueError(f"ClipDataset(with_images=True): video {video.id!r} has no images")
            item["images"] = torch.from_numpy(np.ascontiguousarray(video.images[frame_idx]))
            item["K"] = torch.from_numpy(np.ascontiguousarray(video.array("camera_K")[frame_idx]))
            item["T_cam_from_points"] = torch.from_numpy(np.ascontiguousarray(video.array("camera_T")[frame_idx]))
        return item

    def get_clip(self, i: int) -> Clip:
        """Clip ``i`` as a :class:`Clip` with images, cameras, part and track when the video has them."""
        video, frame_idx, flat = self.indices(i)
        return self._clip(video, frame_idx, flat)

    def video_frames(self, video_index: int, frame_idx: np.ndarray) -> Clip:
        """Source frames ``frame_idx [F]`` (non-empty) of dataset video ``video_index`` as one
        :class:`Clip`, sampled as every clip samples them (from each frame's stamp), so a frame
        holds the same points in every clip that uses it (how the target cache stores each frame
        once per video)."""
        video = self.dataset.video(int(video_index))
        frame_idx = np.asarray(frame_idx)
        return self._clip(video, frame_idx, self._point_indices(video, frame_idx))

    def _clip(self, video: VideoRecord, frame_idx: np.ndarray, flat: np.ndarray) -> Clip:
        per_point = {name: np.asarray(video.array(name)[flat]).astype(np.int64)
                     for name in ("part", "track") if video.has(name)}
        return Clip(
            points=np.asarray(video.array("points")[flat]),
            stamps_ns=video.stamps_ns[frame_idx],
            images=None if video.images is None else np.ascontiguousarray(video.images[frame_idx]),
            cameras=video.cameras(frame_idx),
            label=video.label if video.label >= 0 else None,
            part=per_point.get("part"),
            track=per_point.get("track"),
        )
