"""Stamp conversion (cross4d_core.msgconv.stamp): integer nanoseconds, exact both ways."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rosbags.typesys import Stores, get_typestore

from cross4d_core.msgconv import ns_to_seconds, ns_to_stamp_parts, seconds_to_ns, stamp_to_ns

Time = get_typestore(Stores.ROS2_KILTED).types["builtin_interfaces/msg/Time"]


@given(sec=st.integers(-2**31, 2**31 - 1), nanosec=st.integers(0, 999_999_999))
def test_time_ns_round_trip_is_exact(sec, nanosec):
    ns = stamp_to_ns(Time(sec=sec, nanosec=nanosec))
    assert ns == sec * 10**9 + nanosec
    assert ns_to_stamp_parts(ns) == (sec, nanosec)
    assert ns_to_stamp_parts(np.int64(ns)) == (sec, nanosec)


def test_ros1_spelling_and_exact_cases():
    class Ros1Time:
        secs, nsecs = 7, 5

    assert stamp_to_ns(Ros1Time()) == 7_000_000_005
    assert ns_to_stamp_parts(-250_000_000) == (-1, 750_000_000)
    assert seconds_to_ns(1.5) == 1_500_000_000 and seconds_to_ns(2.9999999999) == 3_000_000_000
    np.testing.assert_array_equal(seconds_to_ns(np.arange(3) / 15), [0, 66_666_667, 133_333_333])
    assert seconds_to_ns(np.arange(3) / 15).dtype == np.int64
    assert ns_to_seconds(1_700_000_000_123_456_789) == 1700000000.1234567  # nearest float64
    np.testing.assert_array_equal(ns_to_seconds(np.array([0, 500_000_000])), [0.0, 0.5])


def test_float_stamps_and_non_finite_seconds_are_refused():
    with pytest.raises(TypeError, match="integer nanoseconds, got float 1.5"):
        ns_to_stamp_parts(1.5)
    with pytest.raises(TypeError, match="integer nanoseconds"):
        ns_to_stamp_parts(True)
    with pytest.raises(ValueError, match="finite"):
        seconds_to_ns(math.nan)
    with pytest.raises(ValueError, match="finite"):
        seconds_to_ns(np.array([0.0, np.inf]))
