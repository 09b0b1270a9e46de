"""Static transforms of a recording (``/tf_static``): quaternion <-> matrix and the frame tree.

The two quaternion conversions are written out (tested against scipy's ``Rotation``): no runtime
dependency of the package provides them (scipy is a development dependency only), and they
are two closed-form expressions.
"""
from __future__ import annotations

from collections import defaultdict, deque

import numpy as np

from cross4d_core.windowing import normalise_frame_id


def quaternion_to_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """``[3, 3]`` rotation of a (normalised) quaternion."""
    q = np.array([x, y, z, w], dtype=np.float64)
    norm = np.linalg.norm(q)
    if not (np.isfinite(norm) and norm > 0):
        raise ValueError(f"quaternion ({x}, {y}, {z}, {w}) has no rotation")
    x, y, z, w = q / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quaternion(R: np.ndarray) -> tuple[float, float, float, float]:
    """``(x, y, z, w)`` of a ``[3, 3]`` rotation (w >= 0)."""
    m = np.asarray(R, dtype=np.float64)
    w = np.sqrt(max(0.0, 1 + m[0, 0] + m[1, 1] + m[2, 2])) / 2
    x = np.copysign(np.sqrt(max(0.0, 1 + m[0, 0] - m[1, 1] - m[2, 2])) / 2, m[2, 1] - m[1, 2])
    y = np.copysign(np.sqrt(max(0.0, 1 - m[0, 0] + m[1, 1] - m[2, 2])) / 2, m[0, 2] - m[2, 0])
    z = np.copysign(np.sqrt(max(0.0, 1 - m[0, 0] - m[1, 1] + m[2, 2])) / 2, m[1, 0] - m[0, 1])
    return float(x), float(y), float(z), float(w)


def rigid_inverse(T: np.ndarray) -> np.ndarray:
    inv = np.eye(4)
    inv[:3, :3] = T[:3, :3].T
    inv[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return inv


class StaticTransforms:
    """The static transform tree of a recording (``/tf_static``).

    ``add(parent, child, T_parent_from_child)`` stores an edge (a TransformStamped says
    where ``child`` sits in ``parent``); :meth:`lookup` composes the chain between any
    two connected frames.
    """

    def __init__(self) -> None:
        self._edges: dict[str, dict[str, np.ndarray]] = defaultdict(dict)

    def add(self, parent: str, child: str, T_parent_from_child: np.ndarray) -> None:
        self._edges[parent][child] = np.asarray(T_parent_from_child, dtype=np.float64)
        self._edges[child][parent] = rigid_inverse(self._edges[parent][child])

    def add_message(self, msg) -> None:
        """Add every ``geometry_msgs/TransformStamped`` of a ``tf2_msgs/TFMessage``."""
        for ts in msg.transforms:
            t, r = ts.transform.translation, ts.transform.rotation
            T = np.eye(4)
            T[:3, :3] = quaternion_to_matrix(r.x, r.y, r.z, r.w)
            T[:3, 3] = (t.x, t.y, t.z)
            self.add(normalise_frame_id(ts.header.frame_id), normalise_frame_id(ts.child_frame_id), T)

    @property
    def frames(self) -> list[str]:
        return sorted(self._edges)

    def lookup(self, target: str, source: str) -> np.ndarray:
        """``[4, 4]`` T_target_from_source (maps points in ``source`` into ``target``)."""
        target, source = normalise_frame_id(target), normalise_frame_id(source)
        if target == source:
            return np.eye(4)
        # Breadth-first search from source; each step composes T_next_from_source.
        reached = {source: np.eye(4)}
        frontier = deque([source])
        while frontier:
            frame = frontier.popleft()
            for neighbour, T_frame_from_neighbour in self._edges[frame].items():
                if neighbour not in reached:
                    reached[neighbour] = rigid_inverse(T_frame_from_neighbour) @ reached[frame]
                    if neighbour == target:
                        return reached[neighbour]
                    frontier.append(neighbour)
        raise KeyError(f"no static transform chain from {source!r} to {target!r} (known frames: {self.frames})")
