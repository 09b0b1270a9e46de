"""Clips grouped by video: the unit the target cache stores (each source frame once per video).

A ``ClipDataset`` gives the frames of clip ``i`` (``frame_indices``) and a video's frames
with per-frame point samples (``video_frames``); a plain sequence of :class:`Clip` is one
video per clip (its frames, one clip from frame 0).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np

from cross4d_core.types import Clip

if TYPE_CHECKING:
    from cross4d_core.data.clips import ClipDataset


@dataclass
class VideoClips:
    """The clips of one video.

    Attributes:
        video: index of the video in its dataset (the clip's index for a list of clips).
        clips: ``[n]`` int64 indices of the clips in the clip dataset.
        starts: ``[n]`` int64 first source frame of each clip.
        frames: ``[F]`` int64 source frames some clip uses, ascending, each once.
        clip_frames: ``[n, T]`` int64 positions in ``frames`` of each clip's frames.
    """

    video: int
    clips: np.ndarray
    starts: np.ndarray
    frames: np.ndarray
    clip_frames: np.ndarray


def group_clips(dataset: ClipDataset | Sequence[Clip]) -> list[VideoClips]:
    """The clips of ``dataset`` (a ``ClipDataset`` or a sequence of :class:`Clip`) by video,
    in clip order (a ``ClipDataset`` lists each video's clips together)."""
    if not hasattr(dataset, "frame_indices"):
        out = []
        for i in range(len(dataset)):
            clip = dataset[i]
            if not isinstance(clip, Clip):
                raise TypeError(f"dataset item {i} is a {type(clip).__name__}, expected a Clip")
            t = np.arange(clip.num_frames, dtype=np.int64)
            out.append(VideoClips(i, np.array([i]), np.zeros(1, np.int64), t, t[None]))
        return out
    clip_dataset = cast("ClipDataset", dataset)  # it has frame_indices: a ClipDataset
    videos = np.asarray(clip_dataset.clip_videos)
    bounds = np.flatnonzero(np.diff(videos)) + 1
    out = []
    for clips in np.split(np.arange(len(videos), dtype=np.int64), bounds):
        if not len(clips):
            continue
        source = np.stack([clip_dataset.frame_indices(int(i))[1] for i in clips]).astype(np.int64)  # [n, T]
        frames, positions = np.unique(source, return_inverse=True)
        starts = np.asarray(clip_dataset.clip_starts)[clips].astype(np.int64)
        out.append(VideoClips(int(videos[clips[0]]), clips, starts, frames, positions.reshape(source.shape)))
    return out


def load_frames(dataset: ClipDataset | Sequence[Clip], video: VideoClips) -> Clip:
    """The stored frames ``video.frames`` of ``video`` as one :class:`Clip` (points, and the
    images / cameras / part labels the video has)."""
    if hasattr(dataset, "video_frames"):
        return dataset.video_frames(video.video, video.frames)
    return dataset[video.video]

