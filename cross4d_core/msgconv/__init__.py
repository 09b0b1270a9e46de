"""ROS message <-> numpy conversion, duck-typed on message fields (rclpy and rosbags alike).

Malformed messages raise :class:`cross4d_core.errors.MessageFormatError` naming the
field and its values.
"""
from cross4d_core.msgconv.camera_info import camera_info_to_camera
from cross4d_core.msgconv.image import (
    IMAGE_ENCODINGS,
    ImageFields,
    image_to_depth_m,
    image_to_numpy,
    image_to_rgb,
    numpy_to_image_fields,
)
from cross4d_core.msgconv.pointcloud2 import (
    POINTFIELD_DTYPES,
    PointFieldSpec,
    pack_rgb,
    pointcloud2_dtype,
    pointcloud2_field,
    pointcloud2_to_structured,
    pointcloud2_to_xyz,
    unpack_rgb,
    xyz_to_pointcloud2_fields,
)
from cross4d_core.msgconv.stamp import NS_PER_S, ns_to_seconds, ns_to_stamp_parts, seconds_to_ns, stamp_to_ns

__all__ = [
    "IMAGE_ENCODINGS", "ImageFields", "NS_PER_S", "POINTFIELD_DTYPES", "PointFieldSpec", "camera_info_to_camera",
    "image_to_depth_m", "image_to_numpy", "image_to_rgb", "ns_to_seconds", "ns_to_stamp_parts",
    "numpy_to_image_fields", "pack_rgb", "pointcloud2_dtype", "pointcloud2_field", "pointcloud2_to_structured",
    "pointcloud2_to_xyz", "seconds_to_ns", "stamp_to_ns", "unpack_rgb", "xyz_to_pointcloud2_fields",
]
