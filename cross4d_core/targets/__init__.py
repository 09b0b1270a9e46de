"""Teacher targets: projection, the token-granularity fp16 cache (writer / reader), typed
batches and the per-point gather, precompute, and online-teacher training."""
from cross4d_core.targets.batch import ClipBatch, ClipTargets, TargetBatch, compact_targets, gather_point_targets
from cross4d_core.targets.cache import (
    CACHE_FORMAT,
    TargetCache,
    TargetCacheWriter,
    TargetRecord,
    cache_config,
    read_cache_manifest,
)
from cross4d_core.targets.online import OnlineBatch, OnlineClip, OnlineClips, OnlineTeacher
from cross4d_core.targets.precompute import precompute_targets
from cross4d_core.targets.projection import FeatureProjection

__all__ = [
    "CACHE_FORMAT", "ClipBatch", "ClipTargets", "FeatureProjection", "OnlineBatch", "OnlineClip", "OnlineClips",
    "OnlineTeacher", "TargetBatch", "TargetCache", "TargetCacheWriter", "TargetRecord", "cache_config",
    "compact_targets", "gather_point_targets", "precompute_targets", "read_cache_manifest",
]
