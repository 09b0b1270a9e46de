"""The fp16 teacher-target cache: projection, writer / reader, per-point gather, precompute."""
from cross4d_core.targets.cache import TargetCache, TargetCacheWriter, gather_point_targets
from cross4d_core.targets.precompute import precompute_targets
from cross4d_core.targets.projection import FeatureProjection

__all__ = ["FeatureProjection", "TargetCache", "TargetCacheWriter", "gather_point_targets", "precompute_targets"]
