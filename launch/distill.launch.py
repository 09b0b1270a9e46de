"""Launch distill_node: `ros2 launch cross4d distill.launch.py teacher:=/path/to/dinov2 out:=/data/cache`.

Arguments: config (parameter YAML), teacher (checkpoint directory or model name), out
(target-cache directory), use_sim_time (SetParameter on every node), namespace, and the
input topics as remappings. Works on Humble, Jazzy and Kilted (only launch / launch_ros API
present in all three).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node, SetParameter
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription


def _string(value) -> ParameterValue:
    """A path argument passed as a string (not YAML-parsed: a directory named `1` or `true` stays a path)."""
    return ParameterValue(value, value_type=str)


def generate_launch_description() -> LaunchDescription:
    default_config = os.path.join(get_package_share_directory("cross4d"), "config", "distill.yaml")
    args = [
        DeclareLaunchArgument("config", default_value=default_config, description="node parameter YAML"),
        DeclareLaunchArgument("teacher", description="teacher model directory (save_pretrained) or name"),
        DeclareLaunchArgument("out", description="target-cache directory the node records into"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("cloud", default_value="points", description="PointCloud2 topic"),
        DeclareLaunchArgument("image", default_value="image", description="Image topic"),
        DeclareLaunchArgument("camera_info", default_value="camera_info", description="CameraInfo topic"),
    ]
    node = Node(
        package="cross4d",
        executable="distill_node",
        name="distill_node",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("config"),
            {"teacher_model": _string(LaunchConfiguration("teacher")),
             "record_dir": _string(LaunchConfiguration("out"))},
        ],
        remappings=[
            ("points", LaunchConfiguration("cloud")),
            ("image", LaunchConfiguration("image")),
            ("camera_info", LaunchConfiguration("camera_info")),
        ],
    )
    # SetParameter reaches every node launched after it (SetUseSimTime would not reach ours).
    sim_time = SetParameter(name="use_sim_time", value=LaunchConfiguration("use_sim_time"))
    return LaunchDescription(args + [sim_time, node])
