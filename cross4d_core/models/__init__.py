"""Student models: POINT4D (METHOD.md "Student") and counting helpers."""
from cross4d_core.models.counting import count_flops, count_parameters
from cross4d_core.models.point4d import FrameTokens, Point4DConfig, Point4DEncoder, Point4DOutput

__all__ = ["FrameTokens", "Point4DConfig", "Point4DEncoder", "Point4DOutput", "count_flops", "count_parameters"]
