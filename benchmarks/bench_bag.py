"""rosbag2 reading and writing: a synthetic-world recording (Kinect-like 320x240 depth
clouds + rgb8 images + camera infos, MCAP and sqlite3) read into windows.

Rows: write_synthetic_bag (frames/s), raw ``rosbags`` iteration without decoding (the
floor), iter_bag_frames (messages/s: deserialise + PointCloud2/Image/CameraInfo decode +
pairing) and iter_bag_windows (windows/s at T=24, stride 1).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from benchmarks.common import Report

FRAMES_PER_VIDEO = 24
VIDEOS = 6


def run(report: Report) -> None:
    from rosbags.highlevel import AnyReader

    from cross4d_core.data.rosbag import BagStats, iter_bag_frames, iter_bag_windows, write_synthetic_bag
    from cross4d_core.data.synthetic import synthetic_video

    videos = [synthetic_video(0, s, a, 0, frames=FRAMES_PER_VIDEO) for s, a in zip(range(VIDEOS), range(0, 12, 2))]
    frames = VIDEOS * FRAMES_PER_VIDEO
    points = sum(len(p) for v in videos for p in v.points) / frames
    report.value("points per cloud (mean)", points, "points")
    tmp = Path(tempfile.mkdtemp(prefix="bench_bag_"))
    try:
        counter = iter(range(1_000_000))

        def write() -> None:
            write_synthetic_bag(videos, tmp / f"w{next(counter)}", storage="mcap")

        report.time("write_synthetic_bag mcap", write, repeats=3, warmup=1, items=frames, item_unit="frames")
        for storage in ("mcap", "sqlite3"):
            bag = tmp / storage
            summary = write_synthetic_bag(videos, bag, storage=storage)
            messages = summary["messages"]

            def raw_read() -> None:
                with AnyReader([bag]) as reader:
                    for _ in reader.messages():
                        pass

            def frames_read() -> None:
                for _ in iter_bag_frames(bag, sync_tolerance=0.001):
                    pass

            stats = BagStats()
            for _ in iter_bag_windows(bag, window_length=24, stride=1, sync_tolerance=0.001, stats=stats):
                pass
            windows = stats.windows

            def windows_read() -> None:
                for _ in iter_bag_windows(bag, window_length=24, stride=1, sync_tolerance=0.001):
                    pass

            report.time(f"rosbags raw iteration {storage}", raw_read, repeats=3, warmup=1, items=messages,
                        item_unit="messages", note="no deserialisation")
            report.time(f"iter_bag_frames {storage}", frames_read, repeats=3, warmup=1, items=messages,
                        item_unit="messages", note=f"{messages} messages: clouds + rgb8 320x240 + CameraInfo + tf")
            report.time(f"iter_bag_windows {storage} T=24 stride=1", windows_read, repeats=3, warmup=1,
                        items=windows, item_unit="windows")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
