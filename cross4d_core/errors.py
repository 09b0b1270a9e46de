"""Exception types shared across cross4d_core."""


class MessageFormatError(ValueError):
    """A ROS message (PointCloud2, Image, CameraInfo) is malformed or unsupported.

    The message names the offending field and its values, e.g.
    ``PointCloud2.data: 96 bytes, need row_step*height = 128``.
    """
