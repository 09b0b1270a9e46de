"""Dense point -> teacher-patch correspondence: the render and camera sources."""
from cross4d_core.correspondence.camera import camera_correspondence
from cross4d_core.correspondence.inputs import CorrespondenceError
from cross4d_core.correspondence.render import (
    RenderOutput,
    RenderViews,
    fit_virtual_camera,
    render_clip,
    render_correspondence,
    render_index_map,
    shade_depth,
)
from cross4d_core.correspondence.zbuffer import ZBuffer, nearest_depth_in_footprint, splat_zbuffer

__all__ = [
    "CorrespondenceError",
    "RenderOutput",
    "RenderViews",
    "ZBuffer",
    "camera_correspondence",
    "fit_virtual_camera",
    "render_clip",
    "render_correspondence",
    "nearest_depth_in_footprint",
    "render_index_map",
    "shade_depth",
    "splat_zbuffer",
]
