"""Camera models, projection and the teacher image transform."""
from cross4d_core.geometry.camera import DISTORTION_MODELS, PinholeCamera
from cross4d_core.geometry.image_transform import ImageTransform
from cross4d_core.geometry.projection import (
    MSR_NTU_FOCAL,
    CameraBatch,
    Projection,
    depth_to_points,
    msr_ntu_camera,
    pixel_of,
    project_points,
)

__all__ = [
    "DISTORTION_MODELS",
    "MSR_NTU_FOCAL",
    "CameraBatch",
    "ImageTransform",
    "PinholeCamera",
    "Projection",
    "depth_to_points",
    "msr_ntu_camera",
    "pixel_of",
    "project_points",
]
