"""Launch files: always byte-compiled; loaded and inspected when launch_ros is importable
(it is not on PyPI, so on machines without a ROS install that part is skipped)."""
import ast
import importlib.util
import pathlib
import py_compile

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))
CONFIGS = {"perception": ROOT / "config" / "perception.yaml", "distill": ROOT / "config" / "distill.yaml"}
#: The topic arguments of each launch file: perception needs no camera.
TOPIC_ARGUMENTS = {"perception.launch.py": {"cloud"}, "distill.launch.py": {"cloud", "image", "camera_info"}}
#: The node parameter naming the topic each launch argument remaps.
TOPIC_PARAMETERS = {"cloud": "cloud_topic", "image": "image_topic", "camera_info": "camera_info_topic"}


def test_launch_files_exist_and_compile(tmp_path):
    assert [p.name for p in LAUNCH_FILES] == ["distill.launch.py", "perception.launch.py"]
    for path in LAUNCH_FILES:
        py_compile.compile(str(path), cfile=str(tmp_path / (path.name + "c")), doraise=True)


#: The launch / launch_ros API the files may use: present unchanged in Humble, Jazzy and Kilted.
LONG_STANDING_API = {
    "os": {"path"}, "ament_index_python.packages": {"get_package_share_directory"},
    "launch": {"LaunchDescription"}, "launch.actions": {"DeclareLaunchArgument"},
    "launch.substitutions": {"LaunchConfiguration"}, "launch_ros.actions": {"Node", "SetParameter"},
    "launch_ros.parameter_descriptions": {"ParameterValue"},
}


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name]


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_uses_long_standing_api_described_arguments_and_sim_time(path):
    """Static checks that run without a ROS install (launch_ros is not on PyPI)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert {a.name for a in node.names} <= LONG_STANDING_API.get(node.module, set()), ast.dump(node)
        elif isinstance(node, ast.Import):
            assert {a.name for a in node.names} <= set(LONG_STANDING_API), ast.dump(node)
    declared = {}
    for call in _calls(tree, "DeclareLaunchArgument"):
        keywords = {k.arg: k.value for k in call.keywords}
        assert isinstance(keywords.get("description"), ast.Constant) and keywords["description"].value, \
            f"{path.name}: argument {ast.unparse(call.args[0])} has no description"
        declared[call.args[0].value] = keywords
    assert {"config", "use_sim_time", "namespace"} | TOPIC_ARGUMENTS[path.name] <= set(declared)
    assert not (set(TOPIC_PARAMETERS) - TOPIC_ARGUMENTS[path.name]) & set(declared)
    used = {c.args[0].value for c in _calls(tree, "LaunchConfiguration")}
    assert used == set(declared), (sorted(used), sorted(declared))  # no undeclared or unused argument
    # use_sim_time reaches the node through SetParameter (SetUseSimTime would not), placed before it.
    (sim_time,) = _calls(tree, "SetParameter")
    assert ast.unparse(sim_time) == "SetParameter(name='use_sim_time', value=LaunchConfiguration('use_sim_time'))"
    returned = [n for n in ast.walk(tree) if isinstance(n, ast.Return)][-1]
    assert ast.unparse(returned.value) == "LaunchDescription(args + [sim_time, node])"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_yaml_declares_only_known_parameters_with_valid_values(name):
    pytest.importorskip("rclpy", reason="rclpy not installed: run `make setup`")
    from cross4d_ros.stream_node import PAIRING_PARAMS, STREAM_PARAMS

    if name == "perception":
        from cross4d_ros.perception_node import PERCEPTION_PARAMS as extra
    else:
        from cross4d_ros.distill_node import DISTILL_PARAMS

        extra = PAIRING_PARAMS + DISTILL_PARAMS
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
    from launch.actions import DeclareLaunchArgument

    from launch import LaunchDescription

    monkeypatch.setattr(packages, "get_package_share_directory", lambda name: str(ROOT))
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert isinstance(description, LaunchDescription)
    from launch_ros.actions import Node, SetParameter

    names = {e.name for e in description.entities if isinstance(e, DeclareLaunchArgument)}
    assert {"config", "use_sim_time", "namespace"} | TOPIC_ARGUMENTS[path.name] <= names
    kinds = [type(e) for e in description.entities if not isinstance(e, DeclareLaunchArgument)]
    assert kinds == [SetParameter, Node]  # use_sim_time set before the node starts


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_every_topic_remapping_reaches_a_topic_the_shipped_config_subscribes(path):
    """A remapping only works when the shipped YAML names that logical topic: a remapped
    `image` is useless while the config says `image_topic: ""`."""
    tree = ast.parse(path.read_text())
    (node,) = _calls(tree, "Node")
    # remappings=[("points", LaunchConfiguration("cloud")), ...]
    pairs = next(k.value for k in node.keywords if k.arg == "remappings").elts
    remappings = [(pair.elts[0].value, pair.elts[1].args[0].value) for pair in pairs]
    name = path.name.removesuffix(".launch.py")
    values = yaml.safe_load(CONFIGS[name].read_text())["/**"]["ros__parameters"]
    assert {argument for _, argument in remappings} == TOPIC_ARGUMENTS[path.name]
    for logical, argument in remappings:
        assert values[TOPIC_PARAMETERS[argument]] == logical, (argument, values.get(TOPIC_PARAMETERS[argument]))
