"""Launch perception_node: `ros2 launch cross4d perception.launch.py checkpoint:=RUN/recognizer`.

Arguments: config (parameter YAML), checkpoint (a recognizer directory: the node takes its
window length T and points per frame N from it), use_sim_time (set on every node via
SetParameter), namespace, and the input topic as a remapping (cloud). Perception needs no
camera, so there are no image / camera_info arguments.
Works on Humble, Jazzy and Kilted (only launch / launch_ros API present in all three).
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
    default_config = os.path.join(get_package_share_directory("cross4d"), "config", "perception.yaml")
    args = [
        DeclareLaunchArgument("config", default_value=default_config, description="node parameter YAML"),
        DeclareLaunchArgument("checkpoint", description="recognizer directory (config.json + model.safetensors, "
                              "`cross4d probe` writes <out>/recognizer/)"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("cloud", default_value="points", description="PointCloud2 topic"),
    ]
    node = Node(
        package="cross4d",
        executable="perception_node",
        name="perception_node",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[LaunchConfiguration("config"), {"checkpoint": _string(LaunchConfiguration("checkpoint"))}],
        # The YAML names the logical topic `points`; remap it here.
        remappings=[("points", LaunchConfiguration("cloud"))],
    )
    # SetParameter reaches every node launched after it (SetUseSimTime would not reach ours).
    sim_time = SetParameter(name="use_sim_time", value=LaunchConfiguration("use_sim_time"))
    return LaunchDescription(args + [sim_time, node])
