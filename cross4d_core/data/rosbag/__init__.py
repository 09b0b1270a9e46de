"""rosbag2 <-> cross4d, via ``rosbags`` (pure Python; sqlite3 and MCAP storage).

- :mod:`~cross4d_core.data.rosbag.read`: the one bag reader (:class:`BagReader`) and the
  decoded, paired frames / windows of a recording (:func:`iter_bag_frames`,
  :func:`iter_bag_windows`), cut by the nodes' own pairing and window classes;
- :mod:`~cross4d_core.data.rosbag.convert`: a bag -> the dataset format (:func:`convert_bag`);
- :mod:`~cross4d_core.data.rosbag.write`: sequences (the synthetic world, a dataset) ->
  a bag (:func:`write_synthetic_bag`);
- :mod:`~cross4d_core.data.rosbag.tf`: the static transform tree of ``/tf_static``.
"""
from cross4d_core.data.rosbag.convert import convert_bag, window_origin
from cross4d_core.data.rosbag.read import (
    AUTO,
    BagReader,
    BagStats,
    iter_bag_frames,
    iter_bag_windows,
    read_static_transforms,
)
from cross4d_core.data.rosbag.tf import StaticTransforms
from cross4d_core.data.rosbag.write import (
    SYNTH_CLOUD_FRAME,
    SYNTH_COLOR_FRAME,
    SYNTH_OPTICAL_FRAME,
    T_COLOR_FROM_OPTICAL,
    T_LINK_FROM_COLOR,
    write_synthetic_bag,
)
from cross4d_core.errors import BagFormatError

__all__ = [
    "AUTO", "BagFormatError", "BagReader", "BagStats", "SYNTH_CLOUD_FRAME", "SYNTH_COLOR_FRAME", "SYNTH_OPTICAL_FRAME",
    "StaticTransforms", "T_COLOR_FROM_OPTICAL", "T_LINK_FROM_COLOR", "convert_bag", "iter_bag_frames",
    "iter_bag_windows", "read_static_transforms", "window_origin", "write_synthetic_bag",
]
