"""The calibrated pinhole camera model shared by CameraInfo decoding, the synthetic
world, the render correspondence and the camera correspondence.

Conventions follow sensor_msgs/CameraInfo and OpenCV: pixel (u, v) with u to the
right and v down, the optical axis +z, pixel centres at integer coordinates.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Distortion models understood by the projection code (CameraInfo spelling).
#: ``none`` means an ideal pinhole (an empty or all-zero D).
DISTORTION_MODELS = ("none", "plumb_bob", "rational_polynomial", "equidistant")

#: Number of coefficients in D per model (plumb_bob accepts 4 or 5, rational 8, 12 or 14).
_DISTORTION_SIZES = {
    "none": (0,),
    "plumb_bob": (4, 5),
    "rational_polynomial": (8, 12, 14),
    "equidistant": (4,),
}


@dataclass
class PinholeCamera:
    """A calibrated camera.

    Attributes:
        K: ``[3, 3]`` float64 intrinsic matrix (pixels).
        width: image width in pixels.
        height: image height in pixels.
        distortion_model: one of :data:`DISTORTION_MODELS`.
        D: distortion coefficients, float64 (OpenCV order: k1, k2, p1, p2[, k3[, k4, k5, k6
            [, s1..s4]]]; equidistant: k1..k4).
        T_cam_from_points: ``[4, 4]`` float64 rigid transform taking points from the
            cloud's frame into the optical frame of this camera (metres).
        P: optional ``[3, 4]`` projection matrix from CameraInfo (rectified camera).
    """

    K: np.ndarray
    width: int
    height: int
    distortion_model: str = "none"
    D: np.ndarray = field(default_factory=lambda: np.zeros(0))
    T_cam_from_points: np.ndarray = field(default_factory=lambda: np.eye(4))
    P: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        self.D = np.asarray(self.D, dtype=np.float64).reshape(-1)
        self.T_cam_from_points = np.asarray(self.T_cam_from_points, dtype=np.float64).reshape(4, 4)
        if self.P is not None:
            self.P = np.asarray(self.P, dtype=np.float64).reshape(3, 4)
        self.width, self.height = int(self.width), int(self.height)
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"PinholeCamera: image size must be positive, got {self.width}x{self.height}")
        fx, fy = self.K[0, 0], self.K[1, 1]
        if not (np.isfinite(self.K).all() and fx > 0 and fy > 0):
            raise ValueError(f"PinholeCamera.K: focal lengths must be finite and > 0, got fx={fx}, fy={fy}")
        if self.distortion_model not in DISTORTION_MODELS:
            raise ValueError(
                f"PinholeCamera.distortion_model: {self.distortion_model!r} is not one of {DISTORTION_MODELS}"
            )
        if self.distortion_model != "none" and self.D.size not in _DISTORTION_SIZES[self.distortion_model]:
            raise ValueError(
                f"PinholeCamera.D: {self.distortion_model} takes {_DISTORTION_SIZES[self.distortion_model]} "
                f"coefficients, got {self.D.size}"
            )
        if self.distortion_model == "none" and np.any(self.D != 0):
            raise ValueError("PinholeCamera.D: non-zero coefficients with distortion_model 'none'")

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    @classmethod
    def from_focal(
        cls, f: float, width: int, height: int, cx: float | None = None, cy: float | None = None, **kwargs
    ) -> PinholeCamera:
        """An undistorted camera with square pixels; principal point defaults to the image centre
        (``W/2, H/2``, the MSR-Action3D / NTU-60 convention with f = 280)."""
        cx = width / 2 if cx is None else cx
        cy = height / 2 if cy is None else cy
        K = np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])
        return cls(K=K, width=width, height=height, **kwargs)
