"""Datasets: the on-disk 4D format, the clip sampler, the synthetic world and the
readers of public formats (:mod:`cross4d_core.data.readers`, :mod:`cross4d_core.data.rosbag`).

``ClipDataset`` (torch) is imported on first use so that writers stay torch-free.
"""
from cross4d_core.data.format import Dataset4D, DatasetFormatError, DatasetWriter, VideoRecord

__all__ = ["ClipDataset", "Dataset4D", "DatasetFormatError", "DatasetWriter", "VideoRecord",
           "generate_synthetic_dataset"]


def __getattr__(name: str):
    if name == "ClipDataset":
        from cross4d_core.data.clips import ClipDataset

        return ClipDataset
    if name == "generate_synthetic_dataset":
        from cross4d_core.data.synthetic import generate_synthetic_dataset

        return generate_synthetic_dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
