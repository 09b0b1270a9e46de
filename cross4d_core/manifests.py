"""The ``format`` field of each ``manifest.json`` cross4d writes: readers tell a dataset from a
target cache by it, never by which other keys happen to be present."""

DATASET_FORMAT = "cross4d-dataset"
"""``cross4d data convert`` / ``DatasetWriter`` (:mod:`cross4d_core.data.format`)."""
TARGET_CACHE_FORMAT = "cross4d-target-cache"
"""``cross4d precompute`` / ``distill_node`` (:mod:`cross4d_core.targets.cache`)."""
