"""Shared pytest set-up.

DDS traffic of every ROS test stays on loopback with a per-run domain id (tools/env.sh
sets both for `make test`; they are set here too for a bare `pytest`).
"""
import os
import random

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))
# Never reach for the Hugging Face Hub from tests: loading must work offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

settings.register_profile(
    "cross4d", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("cross4d")


@pytest.fixture(scope="session")
def rclpy_context():
    """An initialised rclpy for the whole session (skips when rclpy or cross4d.msg is missing)."""
    rclpy = pytest.importorskip("rclpy", reason="rclpy not installed: run `make setup`")
    pytest.importorskip("cross4d.msg", reason="cross4d messages not built: run `make setup` (colcon build)")
    rclpy.init()
    yield rclpy
    rclpy.shutdown()
