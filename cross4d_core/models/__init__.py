"""Student models: POINT4D (the student of arXiv 2607.00514), the recognizer (encoder + linear
head) the perception node serves, and counting helpers."""
from cross4d_core.models.counting import count_flops, count_parameters
from cross4d_core.models.point4d import FrameTokens, Point4DConfig, Point4DEncoder, Point4DOutput
from cross4d_core.models.recognizer import Recognizer, RecognizerConfig, RecognizerOutput, RecognizerProvenance

__all__ = ["FrameTokens", "Point4DConfig", "Point4DEncoder", "Point4DOutput", "Recognizer", "RecognizerConfig",
           "RecognizerOutput", "RecognizerProvenance", "count_flops", "count_parameters"]
