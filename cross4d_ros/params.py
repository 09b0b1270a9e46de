"""Declare ROS parameters with descriptors (description, range, read-only) and validate them."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from cross4d_core.errors import ParameterError


@dataclass(frozen=True)
class Param:
    """One parameter: name, default, description and the constraints checked by :func:`validate`."""

    name: str
    default: Any
    description: str
    read_only: bool = False
    min: float | None = None
    max: float | None = None
    choices: Sequence[str] | None = None
    required: bool = False  # string that must be non-empty (no silent default for topics / checkpoints)
    length: int | None = None  # exact length of an array parameter

    def check(self, value: Any) -> str | None:
        """Why ``value`` is invalid for this parameter, or None when it is fine."""
        if self.required and (value is None or value == ""):
            return f"parameter '{self.name}' is required ({self.description})"
        if self.choices is not None and value not in self.choices:
            return f"parameter '{self.name}' = {value!r} is not one of {list(self.choices)}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and math.isnan(value):
                return f"parameter '{self.name}' is NaN"
            if self.min is not None and value < self.min:
                return f"parameter '{self.name}' = {value} is below its minimum {self.min}"
            if self.max is not None and value > self.max:
                return f"parameter '{self.name}' = {value} is above its maximum {self.max}"
        if self.length is not None and len(value) != self.length:
            return f"parameter '{self.name}' has {len(value)} values, needs {self.length}"
        return None

    def descriptor(self) -> ParameterDescriptor:
        extra = f" One of {list(self.choices)}." if self.choices else ""
        d = ParameterDescriptor(description=self.description + extra, read_only=self.read_only)
        integral = isinstance(self.default, int) and not isinstance(self.default, bool)
        if integral and (self.min is not None or self.max is not None):
            d.integer_range = [IntegerRange(from_value=int(self.min if self.min is not None else -(2**62)),
                                            to_value=int(self.max if self.max is not None else 2**62), step=0)]
        elif isinstance(self.default, float) and self.min is not None and self.max is not None:
            d.floating_point_range = [
                FloatingPointRange(from_value=float(self.min), to_value=float(self.max), step=0.0)]
        return d


def declare_and_validate(node: Node, params: Sequence[Param]) -> dict[str, Any]:
    """Declare every parameter, check every value, and keep checking later changes.

    Returns ``{name: value}``. Raises :class:`ParameterError` listing every invalid value.
    """
    by_name = {p.name: p for p in params}
    values = {}
    for p in params:
        values[p.name] = node.declare_parameter(p.name, p.default, p.descriptor()).value
    problems = [msg for p in params if (msg := p.check(values[p.name])) is not None]
    if problems:
        raise ParameterError(f"{node.get_name()}: invalid parameters: " + "; ".join(problems))

    def on_set(changes) -> SetParametersResult:
        for change in changes:
            p = by_name.get(change.name)
            msg = p.check(change.value) if p is not None else None
            if msg is not None:
                return SetParametersResult(successful=False, reason=msg)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)
    return values


RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}


def qos_profile(reliability: str, depth: int) -> QoSProfile:
    """A keep-last QoS profile; sensor-data QoS is ``best_effort`` with a small depth."""
    if reliability not in RELIABILITY:
        raise ValueError(f"QoS reliability {reliability!r} is not one of {list(RELIABILITY)}")
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth), reliability=RELIABILITY[reliability])
