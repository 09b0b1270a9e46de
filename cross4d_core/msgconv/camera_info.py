"""sensor_msgs/CameraInfo -> :class:`~cross4d_core.geometry.camera.PinholeCamera`.

Duck-typed: ROS 2 spelling (``k``, ``d``, ``p``:
:class:`~cross4d_core.msgconv.protocols.CameraInfoLike`) or ROS 1 spelling (``K``, ``D``, ``P``:
:class:`~cross4d_core.msgconv.protocols.Ros1CameraInfoLike`).
"""
from __future__ import annotations

import numpy as np

from cross4d_core.errors import MessageFormatError
from cross4d_core.geometry.camera import DISTORTION_MODELS, PinholeCamera
from cross4d_core.msgconv.protocols import CameraInfoLike, FloatData, Ros1CameraInfoLike


def _field(msg: CameraInfoLike | Ros1CameraInfoLike, name: str) -> FloatData:
    value = getattr(msg, name, None)
    return getattr(msg, name.upper()) if value is None else value


def camera_info_to_camera(msg: CameraInfoLike | Ros1CameraInfoLike,
                          T_cam_from_points: np.ndarray | None = None) -> PinholeCamera:
    """Build the camera model from a CameraInfo.

    An empty ``D`` means an ideal pinhole (``distortion_model='none'``) whatever
    ``distortion_model`` says; an all-zero ``P`` (uncalibrated) gives ``P=None``.
    ``binning`` and ``roi`` are not applied: K refers to the full-resolution image.

    Args:
        msg: a CameraInfo (rclpy, rosbags; ROS 2 or ROS 1 field names).
        T_cam_from_points: ``[4, 4]`` transform from the cloud's frame into this camera's
            optical frame (identity when omitted).

    Raises:
        MessageFormatError: zero / non-finite focal length, unknown distortion model,
            a coefficient count that does not fit the model, or a non-positive size.
    """
    K = np.asarray(_field(msg, "k"), dtype=np.float64)
    D = np.asarray(_field(msg, "d"), dtype=np.float64).reshape(-1)
    P = np.asarray(_field(msg, "p"), dtype=np.float64)
    if K.size != 9:
        raise MessageFormatError(f"CameraInfo.k: expected 9 values, got {K.size}")
    K = K.reshape(3, 3)
    fx, fy = K[0, 0], K[1, 1]
    if not (np.isfinite(K).all() and fx != 0 and fy != 0):
        raise MessageFormatError(f"CameraInfo.k: focal length must be finite and non-zero, got fx={fx}, fy={fy} "
                                 "(an uncalibrated camera?)")
    model = str(msg.distortion_model)
    if D.size == 0:
        model = "none"
    elif model not in DISTORTION_MODELS or model == "none":
        raise MessageFormatError(f"CameraInfo.distortion_model: {model!r} with {D.size} coefficients is not "
                                 f"supported (supported: plumb_bob, rational_polynomial, equidistant)")
    if P.size != 12:
        raise MessageFormatError(f"CameraInfo.p: expected 12 values, got {P.size}")
    try:
        return PinholeCamera(
            K=K, width=int(msg.width), height=int(msg.height), distortion_model=model, D=D,
            T_cam_from_points=np.eye(4) if T_cam_from_points is None else T_cam_from_points,
            P=None if not P.any() else P.reshape(3, 4),
        )
    except ValueError as exc:
        raise MessageFormatError(f"CameraInfo: {exc}") from None
