"""Student models: POINT4D (the student of arXiv 2607.00514) and counting helpers."""
from cross4d_core.models.counting import count_flops, count_parameters
from cross4d_core.models.point4d import FrameTokens, Point4DConfig, Point4DEncoder, Point4DOutput

__all__ = ["FrameTokens", "Point4DConfig", "Point4DEncoder", "Point4DOutput", "count_flops", "count_parameters"]
