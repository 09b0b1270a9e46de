"""Launch files: always byte-compiled; loaded and inspected when launch_ros is importable
(it is not on PyPI, so on machines without a ROS install that part is skipped)."""
import importlib.util
import pathlib
import py_compile

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))
CONFIGS = {"perception": ROOT / "config" / "perception.yaml", "distill": ROOT / "config" / "distill.yaml"}


def test_launch_files_exist_and_compile(tmp_path):
    assert [p.name for p in LAUNCH_FILES] == ["distill.launch.py", "perception.launch.py"]
    for path in LAUNCH_FILES:
        py_compile.compile(str(path), cfile=str(tmp_path / (path.name + "c")), doraise=True)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_yaml_declares_only_known_parameters_with_valid_values(name):
    pytest.importorskip("rclpy", reason="rclpy not installed: run `make setup`")
    from cross4d_ros.stream_node import STREAM_PARAMS

    if name == "perception":
        from cross4d_ros.perception_node import PERCEPTION_PARAMS as extra
    else:
        from cross4d_ros.distill_node import DISTILL_PARAMS as extra
    params = {p.name: p for p in STREAM_PARAMS + extra}
    values = yaml.safe_load(CONFIGS[name].read_text())["/**"]["ros__parameters"]
    assert set(values) <= set(params), sorted(set(values) - set(params))
    # Everything but the model / data paths (given as launch arguments) is set explicitly.
    assert set(params) - set(values) <= {"checkpoint", "teacher_model", "record_dir"}
    for key, value in values.items():
        assert params[key].check(value) is None, (key, value)
        assert type(value) is type(params[key].default), (key, value, params[key].default)


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_description_declares_arguments_and_sim_time(path, monkeypatch):
    pytest.importorskip("launch_ros", reason="launch_ros is not installable from PyPI; needs a ROS 2 install")
    import ament_index_python.packages as packages
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument

    monkeypatch.setattr(packages, "get_package_share_directory", lambda name: str(ROOT))
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert isinstance(description, LaunchDescription)
    names = {e.name for e in description.entities if isinstance(e, DeclareLaunchArgument)}
    assert {"config", "use_sim_time", "namespace", "cloud", "image", "camera_info"} <= names
