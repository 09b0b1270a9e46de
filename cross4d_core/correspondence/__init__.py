"""Dense point -> teacher-patch correspondence: the render and camera sources (DESIGN.md §3)."""
from cross4d_core.correspondence.camera import camera_correspondence
from cross4d_core.correspondence.inputs import CorrespondenceError
from cross4d_core.correspondence.render import (
    fit_virtual_camera,
    render_correspondence,
    render_index_map,
    shade_depth,
)
from cross4d_core.correspondence.zbuffer import ZBuffer, nearest_depth_in_footprint, splat_zbuffer

__all__ = [
    "CorrespondenceError",
    "ZBuffer",
    "camera_correspondence",
    "fit_virtual_camera",
    "render_correspondence",
    "nearest_depth_in_footprint",
    "render_index_map",
    "shade_depth",
    "splat_zbuffer",
]
