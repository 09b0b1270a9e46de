"""The project's exceptions: one hierarchy under :class:`Cross4DError`.

Every error names what is wrong and where (a file, a message field, a config key), so the
``cross4d`` command's single handler prints it as one line and exits with
:attr:`Cross4DError.exit_code`; no traceback unless ``CROSS4D_TRACEBACK=1``. Each class
also derives from the built-in type its callers have always caught (``ValueError`` for bad
data, ``OSError`` for missing weights, ``RuntimeError`` for a failed run).
"""
from __future__ import annotations

from pathlib import Path


class Cross4DError(Exception):
    """Base of every cross4d error; ``exit_code`` is what the ``cross4d`` command returns."""

    exit_code = 1


class FileError(Cross4DError):
    """A file is missing, truncated, corrupt or not in its documented layout; the message
    starts with the file's path."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: {reason}")


class MessageFormatError(Cross4DError, ValueError):
    """A ROS message (PointCloud2, Image, CameraInfo) is malformed or unsupported.

    The message names the offending field and its values, e.g.
    ``PointCloud2.data: 96 bytes, need row_step*height = 128``.
    """


class ConfigError(Cross4DError, ValueError):
    """A configuration file or override is invalid (names the key and the source)."""


class ParameterError(ConfigError):
    """A ROS node parameter has an invalid value (the message names it and the value)."""


class DatasetFormatError(FileError, ValueError):
    """A file of a converted dataset (the on-disk format) is missing, corrupt or inconsistent."""


class SourceFormatError(FileError, ValueError):
    """A public dataset's source file is corrupt, truncated or not in the documented layout,
    e.g. ``/data/a01_s01_e01_sdepth.bin: body has 1200 bytes, header needs 4 x 10 x 8 x 4 = 1280``."""


class BagFormatError(SourceFormatError):
    """A rosbag2 is unreadable (corrupt, truncated, unknown storage) or lacks what was asked for."""


class TargetCacheError(FileError, ValueError):
    """A file of a target cache is missing, corrupt, of another format or made with other settings."""


class CheckpointError(FileError, RuntimeError):
    """A checkpoint file is missing, corrupt or does not match the model."""


class NonFiniteLossError(Cross4DError, RuntimeError):
    """The loss became NaN or Inf; training stopped (the last checkpoint is left intact)."""

    exit_code = 3


class FrameRejected(Cross4DError, ValueError):
    """A frame the window buffer refuses (a repeated stamp, another ``frame_id`` than the
    stream's); the message says why, and callers count it."""


class CorrespondenceError(Cross4DError, ValueError):
    """A clip cannot be put in correspondence (empty, no finite point, wrong shapes, ...)."""


class TeacherWeightsNotFound(Cross4DError, OSError):
    """The teacher's weights are neither cached locally nor reachable."""


class ReportError(Cross4DError, ValueError):
    """A results directory or file cannot be used (the message names it)."""
