"""Image and CameraInfo decoding in cross4d_core.msgconv (rosbags messages)."""
import math
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rosbags.typesys import Stores, get_typestore

from cross4d_core.errors import MessageFormatError
from cross4d_core.geometry.camera import PinholeCamera
from cross4d_core.msgconv import (
    camera_info_to_camera,
    image_to_depth_m,
    image_to_numpy,
    image_to_rgb,
    numpy_to_image_fields,
)

TYPES = get_typestore(Stores.ROS2_KILTED).types
Image = TYPES["sensor_msgs/msg/Image"]
CameraInfo = TYPES["sensor_msgs/msg/CameraInfo"]
RegionOfInterest = TYPES["sensor_msgs/msg/RegionOfInterest"]
Header = TYPES["std_msgs/msg/Header"]
Time = TYPES["builtin_interfaces/msg/Time"]

HEADER = Header(stamp=Time(sec=3, nanosec=4), frame_id="camera_optical")
# encoding -> (struct char, channels), written here independently of the implementation.
LAYOUT = {"rgb8": ("B", 3), "bgr8": ("B", 3), "rgba8": ("B", 4), "bgra8": ("B", 4), "mono8": ("B", 1),
          "mono16": ("H", 1), "16UC1": ("H", 1), "32FC1": ("f", 1)}


def image(height, width, encoding, step, data, is_bigendian=False):
    return Image(header=HEADER, height=height, width=width, encoding=encoding, is_bigendian=is_bigendian,
                 step=step, data=np.frombuffer(bytes(data), dtype=np.uint8))


def reference_pixels(msg):
    """Per row, per pixel, per channel with struct.unpack_from."""
    char, channels = LAYOUT[msg.encoding]
    size = struct.calcsize(char)
    prefix = ">" if msg.is_bigendian else "<"
    data = bytes(msg.data)
    rows = [[struct.unpack_from(prefix + char * channels, data, r * msg.step + c * channels * size)
             for c in range(msg.width)] for r in range(msg.height)]
    out = np.array(rows, dtype=np.float32 if char == "f" else np.int64).reshape(msg.height, msg.width, channels)
    return out[..., 0] if channels == 1 else out


@st.composite
def random_images(draw):
    encoding = draw(st.sampled_from(sorted(LAYOUT)))
    char, channels = LAYOUT[encoding]
    height, width = draw(st.integers(0, 4)), draw(st.integers(0, 5))
    step = width * channels * struct.calcsize(char) + draw(st.integers(0, 7))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    data = rng.integers(0, 256, step * height + draw(st.integers(0, 3)), dtype=np.uint8).tobytes()
    return image(height, width, encoding, step, data, is_bigendian=draw(st.booleans()))


@given(random_images())
def test_image_matches_reference_decoder(msg):
    before = bytes(msg.data)
    pixels = image_to_numpy(msg)
    expected = reference_pixels(msg)
    assert pixels.shape == expected.shape
    assert pixels.dtype.isnative
    np.testing.assert_array_equal(pixels, expected)
    assert bytes(msg.data) == before


@given(encoding=st.sampled_from(sorted(LAYOUT)), height=st.integers(0, 6), width=st.integers(0, 6),
       is_bigendian=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_numpy_image_round_trip(encoding, height, width, is_bigendian, seed):
    char, channels = LAYOUT[encoding]
    rng = np.random.default_rng(seed)
    shape = (height, width, channels) if channels > 1 else (height, width)
    if char == "f":
        array = rng.standard_normal(shape).astype(np.float32)
    else:
        array = rng.integers(0, 256 if char == "B" else 65536, shape).astype(np.uint8 if char == "B" else np.uint16)
    fields = numpy_to_image_fields(array, encoding, is_bigendian=is_bigendian)
    assert fields.step == width * channels * struct.calcsize(char)
    assert len(fields.data) == fields.step * height
    msg = image(fields.height, fields.width, fields.encoding, fields.step, fields.data, fields.is_bigendian)
    np.testing.assert_array_equal(image_to_numpy(msg), array)
    np.testing.assert_array_equal(reference_pixels(msg), array)


def test_padded_rgb_view_is_zero_copy():
    data = bytes(range(2 * 8))  # 2 rows of 2 rgb pixels (6 bytes) + 2 padding bytes
    msg = image(2, 2, "rgb8", 8, data)
    pixels = image_to_numpy(msg)
    assert np.shares_memory(pixels, msg.data)
    np.testing.assert_array_equal(pixels, [[[0, 1, 2], [3, 4, 5]], [[8, 9, 10], [11, 12, 13]]])
    with pytest.raises(ValueError):
        pixels[0, 0, 0] = 1


@pytest.mark.parametrize("encoding, raw, expected", [
    ("rgb8", [[10, 20, 30, 40, 50, 60]], [[[10, 20, 30], [40, 50, 60]]]),
    ("bgr8", [[10, 20, 30, 40, 50, 60]], [[[30, 20, 10], [60, 50, 40]]]),
    ("rgba8", [[10, 20, 30, 255, 40, 50, 60, 0]], [[[10, 20, 30], [40, 50, 60]]]),
    ("bgra8", [[10, 20, 30, 255, 40, 50, 60, 0]], [[[30, 20, 10], [60, 50, 40]]]),
    ("mono8", [[7, 200]], [[[7, 7, 7], [200, 200, 200]]]),
])
def test_image_to_rgb(encoding, raw, expected):
    raw = np.array(raw, dtype=np.uint8)
    msg = image(1, 2, encoding, raw.shape[1] + 3, np.concatenate([raw[0], [99, 99, 99]]).astype(np.uint8).tobytes())
    rgb = image_to_rgb(msg)
    assert rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, expected)


def test_depth_16uc1_millimetres_zero_invalid_both_byte_orders():
    values = [0, 1000, 65535, 1]
    for prefix, big in (("<", False), (">", True)):
        msg = image(2, 2, "16UC1", 6, struct.pack(prefix + "HHxxHHxx", *values), is_bigendian=big)
        np.testing.assert_allclose(image_to_depth_m(msg), [[np.nan, 1.0], [65.535, 0.001]], rtol=1e-6)


def test_depth_32fc1_metres_nan_invalid():
    msg = image(1, 5, "32FC1", 20, struct.pack("<5f", math.nan, math.inf, -1.0, 0.0, 2.5))
    np.testing.assert_array_equal(image_to_depth_m(msg), [[np.nan, np.nan, np.nan, np.nan, 2.5]])


@pytest.mark.parametrize("msg, call, match", [
    (image(2, 2, "yuv422", 4, bytes(8)), image_to_numpy, r"Image\.encoding: 'yuv422' is not supported"),
    (image(2, 2, "rgb8", 5, bytes(10)), image_to_numpy, r"Image\.step: 5 < width\*channels\*bytes = 2\*3\*1 = 6"),
    (image(2, 3, "16UC1", 5, bytes(10)), image_to_numpy, r"Image\.step: 5 < width\*channels\*bytes = 3\*1\*2 = 6"),
    (image(2, 2, "mono8", 2, bytes(3)), image_to_numpy, r"Image\.data: 3 bytes, need step\*height = 2\*2 = 4"),
    (image(3, 2, "32FC1", 8, bytes(20)), image_to_numpy, r"Image\.data: 20 bytes, need step\*height = 8\*3 = 24"),
    (image(1, 1, "rgb8", 3, bytes(3)), image_to_depth_m, r"'rgb8' is not a depth encoding"),
    (image(1, 1, "16UC1", 2, bytes(2)), image_to_rgb, r"'16UC1' is not a colour encoding"),
    (image(1, 1, "mono16", 2, bytes(2)), image_to_depth_m, r"'mono16' is not a depth encoding"),
])
def test_malformed_images_raise(msg, call, match):
    with pytest.raises(MessageFormatError, match=match):
        call(msg)


def test_numpy_to_image_rejects_wrong_arrays():
    with pytest.raises(ValueError, match=r"rgb8: expected \[H, W, 3\], got shape \(2, 2\)"):
        numpy_to_image_fields(np.zeros((2, 2), np.uint8), "rgb8")
    with pytest.raises(ValueError, match=r"32FC1: expected dtype float32, got float64"):
        numpy_to_image_fields(np.zeros((2, 2)), "32FC1")
    with pytest.raises(MessageFormatError, match=r"'jpeg' is not supported"):
        numpy_to_image_fields(np.zeros((2, 2), np.uint8), "jpeg")


def camera_info(k, d=(), model="plumb_bob", p=None, width=640, height=480):
    return CameraInfo(header=HEADER, height=height, width=width, distortion_model=model,
                      d=np.array(d, dtype=np.float64), k=np.array(k, dtype=np.float64),
                      r=np.eye(3).reshape(-1), p=np.zeros(12) if p is None else np.array(p, dtype=np.float64),
                      binning_x=0, binning_y=0,
                      roi=RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


K = [525.0, 0.0, 319.5, 0.0, 520.0, 239.5, 0.0, 0.0, 1.0]
P = [525.0, 0.0, 319.5, 0.0, 0.0, 520.0, 239.5, 0.0, 0.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize("model, d", [
    ("plumb_bob", [0.1, -0.2, 0.001, 0.002, 0.05]),
    ("plumb_bob", [0.0, 0.0, 0.0, 0.0, 0.0]),
    ("rational_polynomial", [0.1, -0.2, 0.001, 0.002, 0.05, 0.01, 0.02, 0.03]),
    ("equidistant", [0.1, 0.01, -0.001, 0.0001]),
])
def test_camera_info_models(model, d):
    camera = camera_info_to_camera(camera_info(K, d, model, P))
    assert isinstance(camera, PinholeCamera)
    np.testing.assert_array_equal(camera.K, np.reshape(K, (3, 3)))
    np.testing.assert_array_equal(camera.D, d)
    np.testing.assert_array_equal(camera.P, np.reshape(P, (3, 4)))
    assert (camera.distortion_model, camera.width, camera.height) == (model, 640, 480)
    assert (camera.fx, camera.fy, camera.cx, camera.cy) == (525.0, 520.0, 319.5, 239.5)


def test_camera_info_empty_d_is_ideal_pinhole_and_zero_p_is_none():
    for model in ("", "plumb_bob"):
        camera = camera_info_to_camera(camera_info(K, (), model))
        assert camera.distortion_model == "none" and camera.D.size == 0 and camera.P is None


def test_camera_info_extrinsic_passes_through():
    T = np.eye(4)
    T[:3, 3] = [0.1, -0.2, 0.3]
    np.testing.assert_array_equal(camera_info_to_camera(camera_info(K), T_cam_from_points=T).T_cam_from_points, T)


@pytest.mark.parametrize("msg, match", [
    (camera_info([0.0] * 9), r"CameraInfo\.k: focal length must be finite and non-zero, got fx=0\.0, fy=0\.0"),
    (camera_info([525, 0, 320, 0, 0, 240, 0, 0, 1]), r"fx=525\.0, fy=0\.0"),
    (camera_info([-525, 0, 320, 0, 525, 240, 0, 0, 1]), r"CameraInfo: .*focal lengths must be finite and > 0"),
    (camera_info(K, [0.1, 0.2, 0.3], "fisheye"), r"distortion_model: 'fisheye' with 3 coefficients is not supported"),
    (camera_info(K, [0.1, 0.2, 0.3], "plumb_bob"), r"CameraInfo: .*plumb_bob takes \(4, 5\) coefficients, got 3"),
    (camera_info(K, [0.1] * 4, "rational_polynomial"), r"rational_polynomial takes \(8, 12, 14\) coefficients, got 4"),
    (camera_info(K, width=0), r"CameraInfo: .*image size must be positive, got 0x480"),
    (camera_info(K[:6]), r"CameraInfo\.k: expected 9 values, got 6"),
])
def test_malformed_camera_info_raises(msg, match):
    with pytest.raises(MessageFormatError, match=match):
        camera_info_to_camera(msg)
