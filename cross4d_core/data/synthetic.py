"""The synthetic RGB-D 4D action world: articulated figures built from analytic parts
(ellipsoids and capsules), posed by forward kinematics, seen by a Kinect-like depth camera.

Every video is rendered by ray casting the analytic parts (vectorised over the pixels of
each part's screen bounding box; a z-buffer keeps the nearest hit), then:

- ``depth [T, H, W]`` float32 metres (0 = no return), with Kinect-like noise
  (sigma growing with z^2), millimetre quantisation and random pixel dropout;
- ``points``: one point per valid depth pixel, back-projected with the camera, in the
  camera's optical frame (x right, y down, z forward; ``T_cam_from_points = I``), so a
  point projects exactly onto the pixel whose depth produced it;
- ``rgb [T, H, W, 3]`` uint8, pixel-aligned with the depth: clothing / skin colours per
  subject, a checker texture on the part surface and Lambertian-like shading;
- ``part`` per point (index into :data:`PART_NAMES`; clutter objects are ``scene``);
- ``track`` per point: the ground-truth surface-point id. Each part's surface is
  parametrised in the part's own frame (capsule: axial position x angle around the axis;
  ellipsoid: polar x azimuth angle) and cut into a fixed ``8 x 12`` grid of cells; a
  point's track id is ``part * 96 + cell`` of the noise-free surface point it sees. The
  same id in two frames is therefore the same patch of the same body part (within one
  cell), moving rigidly with that part. Scene clutter has no track (-1).

What makes the world hard (the :class:`SyntheticConfig` defaults): subjects facing up to
90 degrees away from the camera, mirrored left / right action pairs, walk vs jog, camera
position, distance and aim varied, Kinect-like noise and dropout; occluding scene clutter is
an option (``clutter``). Measured with the demo's clips and encoder (random-init POINT4D,
converged linear probe, test video accuracy, one seed unless noted): the former world (12
actions without the mirrored punch / kick pairs and jog, facing +-29 deg, no aim offset)
0.89; this one with facing +-90 deg 0.58 (0.575 +- 0.036 over 3 seeds), +-180 deg 0.54;
+-90 deg with 2 clutter objects 0.23, +-30 deg with 2 clutter objects 0.33 (dense
distillation barely helps with clutter, 0.28: the clutter dominates the mean-pooled clip
feature, so the defaults leave it off).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cross4d_core.geometry.camera import PinholeCamera
from cross4d_core.msgconv.stamp import seconds_to_ns
from cross4d_core.preprocess import sample_point_indices
from cross4d_core.types import FrameSequence

#: Action classes (label = index). Confusable on purpose: three mirrored left / right pairs
#: (told apart only by which side of the body moves, while the subject may face any way),
#: the same gait at two speeds (walk / jog), and squat vs sit, jump vs reach_up.
ACTION_NAMES = (
    "wave_left", "wave_right", "clap", "punch_right", "kick_right", "squat",
    "jump", "bow", "turn", "reach_up", "sit", "walk_in_place",
    "punch_left", "kick_left", "jog_in_place",
)

#: Body parts of the humanoid (part label = index), then ``scene`` for the clutter objects.
PART_NAMES = (
    "head", "torso", "pelvis",
    "upper_arm_l", "forearm_l", "hand_l", "upper_arm_r", "forearm_r", "hand_r",
    "thigh_l", "shin_l", "foot_l", "thigh_r", "shin_r", "foot_r",
    "scene",
)
SCENE_PART = PART_NAMES.index("scene")

#: Track cells per part: ``TRACK_BINS_AXIAL x TRACK_BINS_ANGULAR``.
TRACK_BINS_AXIAL = 8
TRACK_BINS_ANGULAR = 12
TRACKS_PER_PART = TRACK_BINS_AXIAL * TRACK_BINS_ANGULAR

_ELLIPSOID, _CAPSULE = 0, 1
_SKIN, _SHIRT, _PANTS, _SHOES = 0, 1, 2, 3
# (joint, kind, clothing) per part, in PART_NAMES order.
_PART_LAYOUT = (
    ("neck", _ELLIPSOID, _SKIN), ("spine", _ELLIPSOID, _SHIRT), ("root", _ELLIPSOID, _PANTS),
    ("shoulder_l", _CAPSULE, _SHIRT), ("elbow_l", _CAPSULE, _SHIRT), ("elbow_l", _ELLIPSOID, _SKIN),
    ("shoulder_r", _CAPSULE, _SHIRT), ("elbow_r", _CAPSULE, _SHIRT), ("elbow_r", _ELLIPSOID, _SKIN),
    ("hip_l", _CAPSULE, _PANTS), ("knee_l", _CAPSULE, _PANTS), ("ankle_l", _ELLIPSOID, _SHOES),
    ("hip_r", _CAPSULE, _PANTS), ("knee_r", _CAPSULE, _PANTS), ("ankle_r", _ELLIPSOID, _SHOES),
)


@dataclass
class SyntheticConfig:
    """Camera and capture settings of the synthetic world.

    Attributes:
        width, height: depth / RGB image size in pixels (Kinect v1 at 320x240 by default).
        focal: focal length in pixels (square pixels, principal point at the image centre).
        fps: frame rate (Hz); frame ``t`` is stamped ``t / fps`` seconds.
        noise: scale of the depth noise (0 = noise-free depth, no dropout).
        dropout: maximum fraction of valid depth pixels dropped per frame.
        facing_deg: the subject faces the camera turned by up to +-this (180: any direction,
            so a mirrored action seen from behind looks like its twin seen from the front).
        azimuth_deg: the camera stands up to +-this round the subject from the room's front
            (independent of the subject's facing).
        distance_m: camera distance range (metres, for a 1.75 m subject; scaled by height).
        aim_offset_m: the camera aims up to this far (sideways and up / down) off the subject,
            so the subject is not always in the middle of the image.
        clutter: static scene objects per video (boxes / posts as ellipsoids and capsules,
            part label ``scene``, no track), placed round the subject; about one in three
            stands between the camera and the subject and occludes part of it.
    """

    width: int = 320
    height: int = 240
    focal: float = 285.0
    fps: float = 15.0
    noise: float = 1.0
    dropout: float = 0.02
    facing_deg: float = 90.0
    azimuth_deg: float = 40.0
    distance_m: tuple[float, float] = (2.3, 3.5)
    aim_offset_m: float = 0.3
    clutter: int = 0

    def camera(self) -> PinholeCamera:
        return PinholeCamera.from_focal(self.focal, self.width, self.height)


@dataclass
class Subject:
    """A performer: body proportions (metres) and clothing colours (RGB in [0, 1])."""

    subject_id: int
    height: float
    proportions: dict[str, float]
    palette: np.ndarray  # [4, 3]: skin, shirt, pants, shoes


@dataclass(kw_only=True)
class SyntheticVideo(FrameSequence):
    """One rendered video (see the module docstring for conventions).

    Attributes (beyond :class:`~cross4d_core.types.FrameSequence`):
        points: list of T ``[n_t, 3]`` float32 arrays (camera optical frame, metres).
        stamps_ns: ``[T]`` int64, ``t / fps`` seconds in nanoseconds.
        images: ``[T, H, W, 3]`` uint8 RGB, pixel-aligned with ``depth``.
        cameras: the (fixed) depth / RGB camera, once per frame.
        depth: ``[T, H, W]`` float32 metres, 0 where there is no return.
        part_image: ``[T, H, W]`` int16 part index per pixel, -1 for background / dropped.
        track_image: ``[T, H, W]`` int32 track id per pixel, -1 for background / dropped.
        pixels: list of T ``[n_t, 2]`` int64 ``(u, v)`` pixel of each point.
        part, track: lists of T ``[n_t]`` int64 arrays.
        cam_from_part: ``[T, P, 4, 4]`` float64 pose of every part in the camera frame.
        label: action index; subject: subject id; meta: sampled variation parameters.
    """

    depth: np.ndarray
    part_image: np.ndarray
    track_image: np.ndarray
    pixels: list[np.ndarray]
    part: list[np.ndarray]
    track: list[np.ndarray]
    cam_from_part: np.ndarray
    subject: int
    meta: dict = field(default_factory=dict)


def make_subject(subject_id: int, seed: int = 0) -> Subject:
    """Deterministic body proportions and clothing of performer ``subject_id``."""
    rng = np.random.default_rng([seed, 7919, subject_id])
    h = float(rng.uniform(1.45, 1.95))
    girth = float(rng.uniform(0.8, 1.3))
    limb = float(rng.uniform(0.92, 1.08))
    p = {
        "leg": 0.245 * h * limb, "shin": 0.24 * h * limb, "upper_arm": 0.17 * h * limb,
        "forearm": 0.15 * h * limb, "torso": 0.30 * h, "shoulder": 0.115 * h * rng.uniform(0.9, 1.15),
        "hip": 0.055 * h * girth, "head": 0.065 * h, "girth": girth,
        "limb_r": 0.028 * h * girth, "thigh_r": 0.045 * h * girth, "foot": 0.075 * h,
    }
    palette = np.stack([
        rng.uniform([0.45, 0.3, 0.2], [0.95, 0.8, 0.7]),  # skin
        rng.uniform(0.05, 0.95, 3), rng.uniform(0.05, 0.8, 3), rng.uniform(0.0, 0.4, 3),
    ])
    return Subject(subject_id, h, p, palette)


def _part_shapes(s: Subject) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per part: kind, offset in its joint frame [P, 3], size [P, 3] (ellipsoid semi-axes,
    or capsule ``(radius, length, 0)`` along the joint's -y)."""
    p = s.proportions
    g = p["girth"]
    hand = 0.045 * s.height
    rows = [
        ((0, p["head"] * 1.1, 0.01), (p["head"] * 0.85, p["head"] * 1.1, p["head"] * 0.95)),
        ((0, p["torso"] * 0.52, 0), (p["shoulder"] * 0.95, p["torso"] * 0.55, 0.1 * s.height * 0.55 * g)),
        ((0, 0.0, 0), (p["hip"] * 1.9, 0.07 * s.height, 0.06 * s.height * g)),
        ((0, 0, 0), (p["limb_r"], p["upper_arm"], 0)),
        ((0, 0, 0), (p["limb_r"] * 0.85, p["forearm"], 0)),
        ((0, -p["forearm"] - hand * 0.6, 0), (hand * 0.5, hand * 0.8, hand * 0.3)),
        ((0, 0, 0), (p["limb_r"], p["upper_arm"], 0)),
        ((0, 0, 0), (p["limb_r"] * 0.85, p["forearm"], 0)),
        ((0, -p["forearm"] - hand * 0.6, 0), (hand * 0.5, hand * 0.8, hand * 0.3)),
        ((0, 0, 0), (p["thigh_r"], p["leg"], 0)),
        ((0, 0, 0), (p["thigh_r"] * 0.75, p["shin"], 0)),
        ((0, -0.02 * s.height, p["foot"] * 0.35), (0.035 * s.height, 0.025 * s.height, p["foot"] * 0.6)),
        ((0, 0, 0), (p["thigh_r"], p["leg"], 0)),
        ((0, 0, 0), (p["thigh_r"] * 0.75, p["shin"], 0)),
        ((0, -0.02 * s.height, p["foot"] * 0.35), (0.035 * s.height, 0.025 * s.height, p["foot"] * 0.6)),
    ]
    kind = np.array([k for _, k, _ in _PART_LAYOUT])
    return kind, np.array([r[0] for r in rows], float), np.array([r[1] for r in rows], float)


# --------------------------------------------------------------------------- kinematics
def _rot(axis: str, angle: float | np.ndarray) -> np.ndarray:
    """``[T, 3, 3]`` rotations about a principal axis (angles in radians; one angle: ``[3, 3]``)."""
    angle = np.asarray(angle, float)
    c, s = np.cos(angle), np.sin(angle)
    R = np.zeros(angle.shape + (3, 3))
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    k = 3 - i - j
    R[..., k, k] = 1
    R[..., i, i], R[..., i, j], R[..., j, i], R[..., j, j] = c, -s, s, c
    return R


def _pulse(phase: np.ndarray) -> np.ndarray:
    """Smooth 0 -> 1 -> 0 per cycle."""
    return 0.5 - 0.5 * np.cos(phase)


def _action_angles(action: int, t: np.ndarray, speed: float, amp: float, phase0: float) -> dict[str, np.ndarray]:
    """Joint angles (radians) and root offsets (metres) over time for one action."""
    z = np.zeros_like(t)
    a = {k: z.copy() for k in ("yaw", "jump", "bow", "flex_l", "abd_l", "elbow_l", "flex_r", "abd_r",
                               "elbow_r", "hip_l", "hipabd_l", "knee_l", "hip_r", "hipabd_r", "knee_r")}
    a["abd_l"] += 0.12
    a["abd_r"] += 0.12
    a["elbow_l"] += 0.15
    a["elbow_r"] += 0.15
    w = 2 * np.pi * speed
    name = ACTION_NAMES[action]
    if name in ("wave_left", "wave_right"):
        side = "l" if name == "wave_left" else "r"
        a["abd_" + side] = amp * (2.35 + 0.4 * np.sin(w * 1.4 * t + phase0))
        a["elbow_" + side] = 0.35 + 0.35 * amp * np.sin(w * 1.4 * t + phase0 + 1.0)
    elif name == "clap":
        for side in "lr":
            a["flex_" + side] = 1.35 * amp + z
            a["abd_" + side] = 0.1 + 0.75 * amp * _pulse(w * 1.3 * t + phase0)
            a["elbow_" + side] = 0.3 + z
    elif name in ("punch_left", "punch_right"):
        side, guard = ("l", "r") if name == "punch_left" else ("r", "l")
        p = _pulse(w * t + phase0) ** 2
        a["flex_" + side] = 0.9 + 0.65 * amp * p
        a["elbow_" + side] = 2.0 * (1 - p) + 0.05
        a["flex_" + guard], a["elbow_" + guard] = 0.9 + z, 2.0 + z  # the other fist stays up
        a["abd_l"] = a["abd_r"] = 0.25 + z
    elif name in ("kick_left", "kick_right"):
        side = "l" if name == "kick_left" else "r"
        p = _pulse(w * 0.9 * t + phase0)
        a["hip_" + side] = 1.25 * amp * p
        a["knee_" + side] = 1.3 * np.sin(np.pi * p) * (1 - p) + 0.1 * p
        a["abd_l"] = a["abd_r"] = 0.35 + z
    elif name == "squat":
        p = _pulse(w * 0.8 * t + phase0) * amp
        a["hip_l"] = a["hip_r"] = 1.3 * p
        a["knee_l"] = a["knee_r"] = 2.2 * p
        a["bow"] = 0.45 * p
        a["flex_l"] = a["flex_r"] = 1.4 * p
    elif name == "jump":
        s = np.sin(w * t + phase0)
        up = np.clip(s, 0, None)
        down = np.clip(-s, 0, None)
        a["jump"] = 0.28 * amp * up ** 1.5
        a["hip_l"] = a["hip_r"] = 0.6 * down
        a["knee_l"] = a["knee_r"] = 1.1 * down
        a["flex_l"] = a["flex_r"] = 2.4 * amp * up - 0.4 * down
    elif name == "bow":
        a["bow"] = 1.0 * amp * _pulse(w * 0.6 * t + phase0)
        a["hip_l"] = a["hip_r"] = 0.15 * a["bow"]
    elif name == "turn":
        a["yaw"] = 1.4 * amp * np.sin(w * 0.45 * t + phase0)
        a["hip_l"] = 0.35 * np.clip(np.sin(w * 1.5 * t), 0, None)
        a["knee_l"] = 2 * a["hip_l"]
        a["hip_r"] = 0.35 * np.clip(-np.sin(w * 1.5 * t), 0, None)
        a["knee_r"] = 2 * a["hip_r"]
    elif name == "reach_up":
        p = _pulse(w * 0.7 * t + phase0) * amp
        a["flex_l"] = a["flex_r"] = 2.9 * p
        a["abd_l"] = a["abd_r"] = 0.1 + 0.2 * p
        a["jump"] = 0.03 * p
        a["bow"] = -0.1 * p
    elif name == "sit":
        p = np.clip(speed * (t - t[0]) / max(t[-1] - t[0], 1e-6) * 1.6 - 0.15 + 0.1 * np.sin(phase0), 0, 1)
        p = p * p * (3 - 2 * p) * amp
        a["hip_l"] = a["hip_r"] = 1.5 * p
        a["knee_l"] = a["knee_r"] = 1.55 * p
        a["flex_l"] = a["flex_r"] = 0.6 * p
        a["elbow_l"] = a["elbow_r"] = 0.15 + 0.8 * p
    elif name in ("walk_in_place", "jog_in_place"):
        jog = name == "jog_in_place"  # the same gait, ~1.8x faster, with a bounce and bent arms
        s = np.sin(w * (2.0 if jog else 1.1) * t + phase0)
        a["hip_l"], a["hip_r"] = 0.8 * amp * np.clip(s, 0, None), 0.8 * amp * np.clip(-s, 0, None)
        a["knee_l"], a["knee_r"] = 1.6 * a["hip_l"], 1.6 * a["hip_r"]
        a["flex_l"], a["flex_r"] = -0.5 * amp * s, 0.5 * amp * s
        a["elbow_l"] = a["elbow_r"] = (1.3 if jog else 0.5) + z
        if jog:
            a["jump"] = 0.04 * amp * np.abs(s)
    return a


def _homogeneous(R: np.ndarray, p: np.ndarray) -> np.ndarray:
    T = np.zeros(R.shape[:-2] + (4, 4))
    T[..., :3, :3] = R
    T[..., :3, 3] = p
    T[..., 3, 3] = 1
    return T


def _joint_frames(s: Subject, a: dict[str, np.ndarray], facing: float) -> dict[str, np.ndarray]:
    """``world_from_joint [T, 4, 4]`` for every joint (world: y up, ground at y = 0)."""
    p = s.proportions
    n = len(a["yaw"])
    eye = np.broadcast_to(np.eye(3), (n, 3, 3))

    def child(parent: np.ndarray, offset, R: np.ndarray) -> np.ndarray:
        return parent @ _homogeneous(R, np.broadcast_to(np.asarray(offset, float), (n, 3)))

    root = _homogeneous(_rot("y", facing + a["yaw"]), np.zeros((n, 3)))
    J = {"root": root}
    J["spine"] = child(root, (0, 0.04 * s.height, 0), _rot("x", a["bow"]))
    J["neck"] = child(J["spine"], (0, p["torso"] * 1.04, 0), eye)
    for side, sign in (("l", 1.0), ("r", -1.0)):
        J["shoulder_" + side] = child(J["spine"], (sign * p["shoulder"], p["torso"] * 0.93, 0),
                                      _rot("x", -a["flex_" + side]) @ _rot("z", sign * a["abd_" + side]))
        J["elbow_" + side] = child(J["shoulder_" + side], (0, -p["upper_arm"], 0), _rot("x", -a["elbow_" + side]))
        J["hip_" + side] = child(root, (sign * p["hip"], -0.03 * s.height, 0),
                                 _rot("x", -a["hip_" + side]) @ _rot("z", sign * a["hipabd_" + side]))
        J["knee_" + side] = child(J["hip_" + side], (0, -p["leg"], 0), _rot("x", a["knee_" + side]))
        J["ankle_" + side] = child(J["knee_" + side], (0, -p["shin"], 0), eye)
    # Put the lowest ankle on the ground (feet stay planted in squats / sits), then jump.
    ankle_y = np.minimum(J["ankle_l"][:, 1, 3], J["ankle_r"][:, 1, 3])
    lift = -ankle_y + 0.045 * s.height + a["jump"]
    for k in J:
        J[k][:, 1, 3] += lift
    return J


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``cam_from_world`` 4x4 for an optical frame (x right, y down, z forward), world y up."""
    fwd = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(fwd, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd])
    return _homogeneous(R, -R @ eye)


def _clutter(rng: np.random.Generator, count: int, eye: np.ndarray, subject_at: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``count`` static scene objects: kind ``[K]``, ``world_from_object [K, 4, 4]``, size
    ``[K, 3]`` and colour ``[K, 3]``. Each is a box-like ellipsoid or an upright post (a
    capsule) on the floor; about one in three stands between the camera and the subject
    (a low occluder), the others beside or behind the subject."""
    kinds, poses, sizes, colours = [], [], [], []
    ground = np.array([subject_at[0], 0.0, subject_at[2]])
    to_camera = np.array([eye[0], 0.0, eye[2]]) - ground
    to_camera /= np.linalg.norm(to_camera)
    across = np.array([to_camera[2], 0.0, -to_camera[0]])
    for _ in range(count):
        if rng.random() < 1 / 3:  # in front: 0.6-1.2 m towards the camera, off to one side a little
            where = ground + rng.uniform(0.6, 1.2) * to_camera + rng.uniform(-0.4, 0.4) * across
        else:  # beside or behind
            where = ground + rng.uniform(-1.0, 0.3) * to_camera + rng.choice([-1, 1]) * rng.uniform(0.6, 1.3) * across
        if rng.random() < 0.5:
            half = rng.uniform([0.15, 0.2, 0.15], [0.45, 0.5, 0.4])
            kinds.append(_ELLIPSOID)
            sizes.append(half)
            centre = where + np.array([0.0, half[1], 0.0])
        else:
            radius, length = rng.uniform(0.04, 0.12), rng.uniform(0.6, 1.6)
            kinds.append(_CAPSULE)
            sizes.append(np.array([radius, length, 0.0]))
            centre = where + np.array([0.0, length + radius, 0.0])  # capsules hang down their -y axis
        poses.append(_homogeneous(_rot("y", rng.uniform(0, 2 * np.pi)), centre))
        colours.append(rng.uniform(0.1, 0.9, 3))
    return np.array(kinds), np.stack(poses), np.stack(sizes), np.stack(colours)


# --------------------------------------------------------------------------- rendering
def _first_hit_sphere(o: np.ndarray, d: np.ndarray, dd: np.ndarray, r2) -> np.ndarray:
    """Ray parameter of the first hit of rays ``o + t d`` with a sphere at the origin (inf if none)."""
    b = d @ o
    disc = b * b - dd * (o @ o - r2)
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / dd
    return np.where((disc >= 0) & (t > 0), t, np.inf)


def _intersect(kind: int, size: np.ndarray, o: np.ndarray, d: np.ndarray) -> np.ndarray:
    """First-hit ray parameter for rays ``o + t d`` (part-local frame; o [3], d [M, 3])."""
    if kind == _ELLIPSOID:
        ds = d / size
        return _first_hit_sphere(o / size, ds, np.einsum("mi,mi->m", ds, ds), 1.0)
    r, L = size[0], size[1]
    dd = np.einsum("mi,mi->m", d, d)
    t = np.minimum(_first_hit_sphere(o, d, dd, r * r),
                   _first_hit_sphere(o + np.array([0.0, L, 0.0]), d, dd, r * r))
    a = d[:, 0] ** 2 + d[:, 2] ** 2
    b = o[0] * d[:, 0] + o[2] * d[:, 2]
    disc = b * b - a * (o[0] ** 2 + o[2] ** 2 - r * r)
    with np.errstate(invalid="ignore", divide="ignore"):
        tc = (-b - np.sqrt(disc)) / a
    y = o[1] + tc * d[:, 1]
    ok = (disc >= 0) & (a > 0) & (tc > 0) & (y <= 0) & (y >= -L)
    return np.minimum(t, np.where(ok, tc, np.inf))


def _surface_cells(kind: np.ndarray, size: np.ndarray, local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Track cell index and outward unit normal (part frame) of surface points ``local [M, 3]``."""
    caps = kind == _CAPSULE
    r, L = size[:, 0], size[:, 1]
    axial_c = np.clip((r - local[:, 1]) / (L + 2 * r), 0, 1 - 1e-9)
    q = local / np.where(caps[:, None], 1.0, size)
    qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    axial_e = np.clip(np.arccos(np.clip(qn[:, 1], -1, 1)) / np.pi, 0, 1 - 1e-9)
    axial = np.where(caps, axial_c, axial_e)
    angle = np.arctan2(local[:, 2], local[:, 0]) / (2 * np.pi) + 0.5
    cell = (np.floor(axial * TRACK_BINS_AXIAL).astype(np.int64) * TRACK_BINS_ANGULAR
            + np.minimum(np.floor(angle * TRACK_BINS_ANGULAR).astype(np.int64), TRACK_BINS_ANGULAR - 1))
    centre = local.copy()
    centre[:, 0] = 0
    centre[:, 2] = 0
    centre[:, 1] = np.clip(local[:, 1], -L, 0)
    n_caps = local - centre
    n_ell = local / np.where(caps[:, None], 1.0, size * size)
    n = np.where(caps[:, None], n_caps, n_ell)
    return cell, n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def render_video(subject: Subject, action: int, rng: np.random.Generator, frames: int,
                 config: SyntheticConfig | None = None) -> SyntheticVideo:
    """Sample the per-video variation from ``rng`` and render ``frames`` frames."""
    cfg = config or SyntheticConfig()
    cam = cfg.camera()
    H, W = cfg.height, cfg.width
    speed = rng.uniform(0.7, 1.4)
    amp = rng.uniform(0.75, 1.15)
    phase0 = rng.uniform(0, 2 * np.pi)
    facing = np.radians(rng.uniform(-cfg.facing_deg, cfg.facing_deg))
    azimuth = np.radians(rng.uniform(-cfg.azimuth_deg, cfg.azimuth_deg))
    distance = rng.uniform(*cfg.distance_m) * subject.height / 1.75 + 0.4
    cam_height = rng.uniform(0.7, 1.5)
    noise = cfg.noise * rng.uniform(0.5, 1.5)
    dropout = cfg.dropout * rng.uniform(0.0, 1.0) if cfg.noise > 0 else 0.0
    offset = rng.uniform(-0.15, 0.15, 2)
    aim = rng.uniform(-cfg.aim_offset_m, cfg.aim_offset_m, 2)
    background = rng.uniform(0.2, 0.8, 3)

    t = np.arange(frames) / cfg.fps
    angles = _action_angles(action, t, speed, amp, phase0)
    J = _joint_frames(subject, angles, facing)
    target = np.array([offset[0], 0.5 * subject.height, offset[1]])
    eye = target + np.array([distance * np.sin(azimuth), cam_height - target[1], distance * np.cos(azimuth)])
    side = np.array([np.cos(azimuth), 0.0, -np.sin(azimuth)])
    cam_from_world = _look_at(eye, target + aim[0] * side + np.array([0.0, aim[1], 0.0]))
    world_shift = _homogeneous(np.eye(3), np.array([offset[0], 0.0, offset[1]]))

    kind, part_offset, size = _part_shapes(subject)
    body = len(kind)
    joint_of_part = [j for j, _, _ in _PART_LAYOUT]
    part_in_joint = _homogeneous(np.broadcast_to(np.eye(3), (body, 3, 3)), part_offset)
    cam_from_part = np.stack(
        [cam_from_world @ world_shift @ J[joint_of_part[k]] @ part_in_joint[k] for k in range(body)], axis=1)
    colours = subject.palette[[c for _, _, c in _PART_LAYOUT]]
    if cfg.clutter:
        c_kind, c_pose, c_size, c_colour = _clutter(rng, cfg.clutter, eye, target)
        kind, size = np.concatenate([kind, c_kind]), np.concatenate([size, c_size])
        cam_from_part = np.concatenate([cam_from_part, np.broadcast_to(cam_from_world @ c_pose,
                                                                      (frames, *c_pose.shape))], axis=1)
        colours = np.concatenate([colours, c_colour])
    P = len(kind)
    capsule = (kind == _CAPSULE)[:, None]
    centre_local = np.where(capsule, np.stack([0 * size[:, 1], -size[:, 1] / 2, 0 * size[:, 1]], 1), 0.0)
    radius = np.where(kind == _CAPSULE, size[:, 0] + size[:, 1] / 2, size.max(axis=1))

    u = np.arange(W)
    v = np.arange(H)
    rays = np.stack(np.broadcast_arrays(((u - cam.cx) / cam.fx)[None, :], ((v - cam.cy) / cam.fy)[:, None],
                                        np.ones((H, W))), axis=-1)  # z = 1: the ray parameter is the depth
    depth = np.full((frames, H, W), np.inf)
    part_image = np.full((frames, H, W), -1, np.int16)
    for f in range(frames):
        for k in range(P):
            R, p = cam_from_part[f, k, :3, :3], cam_from_part[f, k, :3, 3]
            c = R @ centre_local[k] + p
            rho = radius[k]
            if c[2] - rho < 0.05:
                continue
            near, far = c[2] - rho, c[2] + rho
            # Conservative screen box of the bounding sphere (extremes over its near / far depth).
            xs = np.array([c[0] - rho, c[0] + rho])[:, None] / np.array([near, far])[None, :]
            ys = np.array([c[1] - rho, c[1] + rho])[:, None] / np.array([near, far])[None, :]
            u0 = int(max(np.floor(cam.cx + cam.fx * xs.min()), 0))
            u1 = int(min(np.ceil(cam.cx + cam.fx * xs.max()) + 1, W))
            v0 = int(max(np.floor(cam.cy + cam.fy * ys.min()), 0))
            v1 = int(min(np.ceil(cam.cy + cam.fy * ys.max()) + 1, H))
            if u0 >= u1 or v0 >= v1:
                continue
            d_local = rays[v0:v1, u0:u1].reshape(-1, 3) @ R  # R^T d for each ray
            hit = _intersect(kind[k], size[k], -R.T @ p, d_local).reshape(v1 - v0, u1 - u0)
            zbuf = depth[f, v0:v1, u0:u1]
            closer = hit < zbuf
            zbuf[closer] = hit[closer]
            part_image[f, v0:v1, u0:u1][closer] = k

    valid = np.isfinite(depth)
    tt, vv, uu = np.nonzero(valid)
    z_true = depth[tt, vv, uu]
    pk = part_image[tt, vv, uu].astype(np.int64)
    ray = rays[vv, uu]
    cam_pts = ray * z_true[:, None]
    Rk = cam_from_part[tt, pk, :3, :3]
    local = np.einsum("mji,mj->mi", Rk, cam_pts - cam_from_part[tt, pk, :3, 3])
    cell, normal_local = _surface_cells(kind[pk], size[pk], local)
    scene = pk >= body
    track_ids = np.where(scene, -1, pk * TRACKS_PER_PART + cell)
    normal = np.einsum("mij,mj->mi", Rk, normal_local)
    shade = 0.3 + 0.7 * np.abs(np.einsum("mi,mi->m", normal, ray)) / np.linalg.norm(ray, axis=1)
    skin = np.array([c == _SKIN for _, _, c in _PART_LAYOUT] + [False] * (P - body))[pk]
    checker = np.where(((cell // TRACK_BINS_ANGULAR) + cell) % 2 == 0, 1.0, 0.72)
    colour = colours[pk] * (shade * np.where(skin, 1.0, checker))[:, None]
    pk = np.where(scene, SCENE_PART, pk)

    # Sensor: Kinect-like axial noise (sigma ~ z^2), mm quantisation, random dropout.
    sigma = noise * (0.0012 + 0.0019 * (z_true - 0.4) ** 2)
    z_meas = np.round((z_true + sigma * rng.standard_normal(z_true.shape)) * 1000.0) / 1000.0
    keep = rng.random(z_true.shape) >= dropout if dropout > 0 else np.ones(z_true.shape, bool)
    depth_out = np.zeros((frames, H, W), np.float32)
    depth_out[tt[keep], vv[keep], uu[keep]] = z_meas[keep]
    part_out = np.full((frames, H, W), -1, np.int16)
    part_out[tt[keep], vv[keep], uu[keep]] = pk[keep]
    track_out = np.full((frames, H, W), -1, np.int32)
    track_out[tt[keep], vv[keep], uu[keep]] = track_ids[keep]

    rows = np.linspace(0.85, 1.15, H)[:, None, None] * background
    rgb = np.broadcast_to(rows, (frames, H, W, 3)).copy()
    rgb[tt, vv, uu] = colour
    rgb = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)

    tk, vk, uk = tt[keep], vv[keep], uu[keep]
    zk = z_meas[keep].astype(np.float32)
    pts = (rays[vk, uk] * zk[:, None]).astype(np.float32)
    splits = np.cumsum(np.bincount(tk, minlength=frames))[:-1]
    return SyntheticVideo(
        depth=depth_out, images=rgb, part_image=part_out, track_image=track_out,
        points=np.split(pts, splits), pixels=np.split(np.stack([uk, vk], 1), splits),
        part=np.split(pk[keep], splits), track=np.split(track_ids[keep], splits),
        cameras=[cam] * frames, cam_from_part=cam_from_part[:, :body], stamps_ns=seconds_to_ns(t), label=int(action),
        subject=int(subject.subject_id),
        meta={"speed": speed, "amplitude": amp, "phase": phase0, "facing": float(facing),
              "azimuth": float(azimuth), "distance": distance, "camera_height": cam_height, "noise": noise,
              "dropout": dropout, "aim_offset": aim.tolist(), "clutter": int(cfg.clutter)},
    )


def synthetic_video(seed: int, subject: int, action: int, repetition: int, frames: int = 32,
                    config: SyntheticConfig | None = None) -> SyntheticVideo:
    """The video ``(subject, action, repetition)`` of the world with ``seed`` (deterministic)."""
    if not 0 <= action < len(ACTION_NAMES):
        raise ValueError(f"synthetic_video: action must be in [0, {len(ACTION_NAMES)}), got {action}")
    if frames < 1:
        raise ValueError(f"synthetic_video: frames must be >= 1, got {frames}")
    rng = np.random.default_rng([seed, subject, action, repetition])
    return render_video(make_subject(subject, seed), action, rng, frames, config)


def subject_split(subject: int, num_subjects: int) -> str:
    """Cross-subject split: the first half of the subjects train, the rest test."""
    return "train" if subject < (num_subjects + 1) // 2 else "test"


def generate_synthetic_dataset(out_root: str | Path, num_subjects: int = 8, videos_per_class_per_subject: int = 2,
                               frames: int = 32, seed: int = 0, classes: int = len(ACTION_NAMES),
                               config: SyntheticConfig | None = None, with_images: bool = True,
                               max_points: int | None = None, progress: bool = False) -> dict:
    """Render the world into the on-disk format at ``out_root`` (resumable: finished videos
    are skipped). Video ids are ``s{subject:02d}_a{action:02d}_r{rep:02d}``; split by subject
    (:func:`subject_split`). ``max_points`` keeps a seeded random subset of at most that many
    points per frame (smaller datasets; the kept points stay pixel-aligned). Returns the
    writer's summary."""
    from cross4d_core.data.format import DatasetWriter

    if not 1 <= classes <= len(ACTION_NAMES):
        raise ValueError(f"generate_synthetic_dataset: classes must be in [1, {len(ACTION_NAMES)}], got {classes}")
    if num_subjects < 2 or videos_per_class_per_subject < 1:
        raise ValueError("generate_synthetic_dataset: need num_subjects >= 2 (cross-subject split) and "
                         f"videos_per_class_per_subject >= 1, got {num_subjects}, {videos_per_class_per_subject}")
    cfg = config or SyntheticConfig()
    jobs = [(s, a, r) for s in range(num_subjects) for a in range(classes) for r in range(videos_per_class_per_subject)]
    if max_points is not None and max_points < 1:
        raise ValueError(f"generate_synthetic_dataset: max_points must be >= 1, got {max_points}")
    normalisation = {"generator": "cross4d synthetic", "seed": seed, "frames": frames,
                     "max_points_per_frame": max_points, "world": dataclasses.asdict(cfg),
                     "frame": "camera optical (x right, y down, z forward)"}
    with DatasetWriter(out_root, source="synthetic", label_names=list(ACTION_NAMES[:classes]),
                       normalisation=normalisation, part_names=list(PART_NAMES)) as writer:
        iterator: Iterable[tuple[int, int, int]] = jobs
        if progress:
            from tqdm import tqdm
            iterator = tqdm(jobs, desc="synth", unit="video")
        for s, a, r in iterator:
            vid = f"s{s:02d}_a{a:02d}_r{r:02d}"
            if writer.has_video(vid):
                continue
            video = synthetic_video(seed, s, a, r, frames, cfg)
            points, part, track = video.points, video.part, video.track
            if max_points is not None:
                rng = np.random.default_rng([seed, s, a, r, 1])
                keep = [np.sort(sample_point_indices(len(p), min(len(p), max_points), rng)) if len(p) else
                        np.zeros(0, np.int64) for p in points]
                points, part, track = ([x[k] for x, k in zip(xs, keep)] for xs in (points, part, track))
            writer.add_video(vid, points, label=a, split=subject_split(s, num_subjects), subject=s,
                             stamps_ns=video.stamps_ns, images=video.images if with_images else None,
                             cameras=video.cameras if with_images else None, part=part, track=track,
                             meta=video.meta)
        return writer.summary()
