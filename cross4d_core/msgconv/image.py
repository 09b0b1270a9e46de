"""sensor_msgs/Image <-> numpy, duck-typed on the message fields.

Works on any object with ``height``, ``width``, ``encoding``, ``is_bigendian``, ``step``
and ``data`` (rclpy, rosbags). ``step`` row padding is honoured with a row stride, so
decoding is a zero-copy view unless the data's byte order differs from the host's.
"""
from __future__ import annotations

import sys
from typing import NamedTuple

import numpy as np

from cross4d_core.errors import MessageFormatError
from cross4d_core.msgconv._buffer import data_bytes
from cross4d_core.msgconv.protocols import ImageLike

#: encoding -> (scalar dtype, channels). 16UC1 depth is millimetres (0 = invalid),
#: 32FC1 depth is metres (NaN = invalid) — REP 118.
IMAGE_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype("u1"), 3),
    "bgr8": (np.dtype("u1"), 3),
    "rgba8": (np.dtype("u1"), 4),
    "bgra8": (np.dtype("u1"), 4),
    "mono8": (np.dtype("u1"), 1),
    "mono16": (np.dtype("u2"), 1),
    "16UC1": (np.dtype("u2"), 1),
    "32FC1": (np.dtype("f4"), 1),
}

_HOST_IS_BIGENDIAN = sys.byteorder == "big"


class ImageFields(NamedTuple):
    """The content of a sensor_msgs/Image (everything except the header)."""

    height: int
    width: int
    encoding: str
    is_bigendian: bool
    step: int
    data: bytes


def _encoding_of(encoding: str) -> tuple[np.dtype, int]:
    if encoding not in IMAGE_ENCODINGS:
        raise MessageFormatError(f"Image.encoding: {encoding!r} is not supported "
                                 f"(supported: {', '.join(IMAGE_ENCODINGS)})")
    return IMAGE_ENCODINGS[encoding]


def image_to_numpy(msg: ImageLike) -> np.ndarray:
    """The pixels as stored: ``[H, W, C]`` for colour encodings (channel order as
    encoded: bgr8 stays BGR), ``[H, W]`` for mono8 / mono16 / 16UC1 / 32FC1.

    A read-only view of ``msg.data`` when the byte order is the host's (or irrelevant,
    8-bit), else a byteswapped native copy; the message is never modified.

    Raises:
        MessageFormatError: unknown encoding, ``step < width * bytes_per_pixel``, or
            ``len(data) < step * height``.
    """
    encoding = str(msg.encoding)
    scalar, channels = _encoding_of(encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height < 0 or width < 0:
        raise MessageFormatError(f"Image: negative size height={height}, width={width}")
    row_bytes = width * channels * scalar.itemsize
    if step < row_bytes:
        raise MessageFormatError(f"Image.step: {step} < width*channels*bytes = "
                                 f"{width}*{channels}*{scalar.itemsize} = {row_bytes} ({encoding})")
    data = data_bytes(msg.data, "Image.data")
    if data.size < step * height:
        raise MessageFormatError(f"Image.data: {data.size} bytes, need step*height = {step}*{height} = "
                                 f"{step * height} ({encoding})")
    big = bool(msg.is_bigendian) and scalar.itemsize > 1
    stored = scalar.newbyteorder(">" if big else "<") if scalar.itemsize > 1 else scalar
    shape = (height, width, channels) if channels > 1 else (height, width)
    strides = (step, channels * scalar.itemsize, scalar.itemsize)[: len(shape)]
    view = np.ndarray(shape, dtype=stored, buffer=data, strides=strides)
    view.flags.writeable = False
    if scalar.itemsize > 1 and big != _HOST_IS_BIGENDIAN:
        return view.astype(scalar.newbyteorder("="))
    return view


def image_to_rgb(msg: ImageLike) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB (a new array) from rgb8 / bgr8 / rgba8 / bgra8 (alpha
    dropped) / mono8 (grey replicated).

    Raises:
        MessageFormatError: a depth or 16-bit encoding, or any malformed image.
    """
    pixels = image_to_numpy(msg)
    encoding = str(msg.encoding)
    if encoding in ("rgb8", "rgba8"):
        return np.ascontiguousarray(pixels[..., :3])
    if encoding in ("bgr8", "bgra8"):
        return np.ascontiguousarray(pixels[..., 2::-1])
    if encoding == "mono8":
        return np.repeat(pixels[..., None], 3, axis=-1)
    raise MessageFormatError(f"Image.encoding: {encoding!r} is not a colour encoding "
                             f"(use image_to_depth_m for 16UC1 / 32FC1)")


def image_to_depth_m(msg: ImageLike) -> np.ndarray:
    """Depth in metres, ``[H, W]`` float32 with NaN where invalid (a new array).

    16UC1: millimetres, 0 invalid. 32FC1: metres; NaN, +-Inf and values <= 0 are invalid.

    Raises:
        MessageFormatError: any other encoding, or a malformed image.
    """
    encoding = str(msg.encoding)
    if encoding not in ("16UC1", "32FC1"):
        raise MessageFormatError(f"Image.encoding: {encoding!r} is not a depth encoding (16UC1 or 32FC1)")
    pixels = image_to_numpy(msg)
    if encoding == "16UC1":
        depth = pixels.astype(np.float32) * np.float32(1e-3)
        depth[pixels == 0] = np.nan
    else:
        depth = np.array(pixels, dtype=np.float32)
        depth[~(np.isfinite(depth) & (depth > 0))] = np.nan
    return depth


def numpy_to_image_fields(array: np.ndarray, encoding: str, is_bigendian: bool = False) -> ImageFields:
    """Pack an array into Image content with no row padding (``step = W * C * bytes``).

    Args:
        array: ``[H, W, C]`` for colour encodings, ``[H, W]`` (or ``[H, W, 1]``) for mono
            and depth; its dtype must be the encoding's (uint8, uint16 or float32).
        encoding: one of :data:`IMAGE_ENCODINGS`.
        is_bigendian: store multi-byte pixels big-endian.
    """
    scalar, channels = _encoding_of(encoding)
    array = np.asarray(array)
    if channels == 1 and array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    expected = 3 if channels > 1 else 2
    if array.ndim != expected or (channels > 1 and array.shape[2] != channels):
        layout = f"[H, W, {channels}]" if channels > 1 else "[H, W]"
        raise ValueError(f"image array for {encoding}: expected {layout}, got shape {array.shape}")
    if array.dtype != scalar:
        raise ValueError(f"image array for {encoding}: expected dtype {scalar}, got {array.dtype}")
    stored = scalar.newbyteorder(">" if is_bigendian else "<") if scalar.itemsize > 1 else scalar
    data = np.ascontiguousarray(array, dtype=stored).tobytes()
    height, width = array.shape[:2]
    return ImageFields(height, width, encoding, bool(is_bigendian), width * channels * scalar.itemsize, data)
