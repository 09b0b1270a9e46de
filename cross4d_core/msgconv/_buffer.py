"""Read-only uint8 views of a message's ``data`` field, whatever container holds it.

rclpy gives ``array.array('B')``, rosbags a numpy ``uint8`` array, hand-built messages
may hold ``bytes``; all of them expose the buffer protocol, so the view costs no copy.
"""
from __future__ import annotations

import numpy as np

from cross4d_core.errors import MessageFormatError
from cross4d_core.msgconv.protocols import ByteData


def data_bytes(data: ByteData, where: str) -> np.ndarray:
    """``data`` as a 1-D read-only ``uint8`` array sharing memory with the message when possible.

    ``where`` names the field in error messages (e.g. ``"PointCloud2.data"``).
    """
    try:
        # Any buffer-protocol object works at run time; numpy's stubs list a few concrete types
        # only, and a non-buffer (a list of ints) takes the except branch.
        view = np.frombuffer(data, dtype=np.uint8)  # type: ignore[arg-type]
    except (TypeError, ValueError, BufferError):
        # A plain list of ints: one copy, with a range check.
        try:
            values = np.asarray(data)
        except (TypeError, ValueError) as exc:
            raise MessageFormatError(f"{where}: cannot read bytes from {type(data).__name__}: {exc}") from None
        if values.ndim != 1 or not (values.size == 0 or np.issubdtype(values.dtype, np.integer)):
            raise MessageFormatError(f"{where}: expected a sequence of bytes, got {type(data).__name__} "
                                     f"of dtype {values.dtype} and shape {values.shape}") from None
        if values.size and (values.min() < 0 or values.max() > 255):
            raise MessageFormatError(f"{where}: byte values must lie in [0, 255], "
                                     f"got [{values.min()}, {values.max()}]") from None
        view = values.astype(np.uint8)
    view.flags.writeable = False  # our view only; the message itself is untouched
    return view
