"""Camera models and projection."""
from cross4d_core.geometry.camera import DISTORTION_MODELS, PinholeCamera

__all__ = ["DISTORTION_MODELS", "PinholeCamera"]
