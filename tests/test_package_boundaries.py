"""What the product packages may import, checked statically on every module's source (``ast``:
module-level and function-local imports, relative imports resolved, and
``importlib.import_module`` / ``__import__`` of a constant name):

- ``cross4d_core`` (the ROS-free library) imports nothing of ROS: not ``cross4d_ros``, not
  rclpy, not a message package;
- ``cross4d_ros`` (the nodes) does not import ``cross4d_core.training`` (the nodes load
  artefacts; they do not train);
- neither imports what is not the product: the demo (``examples``), the test support
  (``cross4d_testing``), the tests or the benchmarks;

and every exception class of the product is defined in ``cross4d_core/errors.py``, under
``Cross4DError``.
"""
from __future__ import annotations

import ast
import builtins
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRODUCT = ("cross4d_core", "cross4d_ros")
NOT_PRODUCT = ("examples", "cross4d_testing", "tests", "benchmarks")
#: ROS client libraries and message packages (``cross4d`` is this package's generated messages).
ROS = ("cross4d_ros", "cross4d", "rclpy", "rcl_interfaces", "rosidl_runtime_py", "builtin_interfaces", "std_msgs",
       "sensor_msgs", "geometry_msgs", "tf2_msgs", "diagnostic_msgs", "rosgraph_msgs", "launch", "launch_ros",
       "ament_index_python")


def _module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(*packages: str) -> dict[str, Path]:
    return {_module_name(path): path for package in packages for path in sorted((REPO / package).rglob("*.py"))}


def _imports(module: str, path: Path) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in the file; ``from a import b`` gives
    ``a`` and ``a.b`` (``b`` may be a submodule)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name != "*"]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
    return found


def _within(name: str, packages: tuple[str, ...]) -> str | None:
    """The entry of ``packages`` that ``name`` is, or is inside of."""
    return next((p for p in packages if name == p or name.startswith(p + ".")), None)


def test_product_imports_stay_inside_their_boundaries():
    rules = {"cross4d_core": ROS + NOT_PRODUCT, "cross4d_ros": ("cross4d_core.training",) + NOT_PRODUCT}
    problems, reported = [], set()
    for module, path in _modules(*PRODUCT).items():
        forbidden = rules[module.split(".")[0]]
        for line, name in _imports(module, path):
            hit = _within(name, forbidden)
            if hit is not None and (module, line) not in reported:  # one line per import statement
                reported.add((module, line))
                problems.append(f"{path.relative_to(REPO)}:{line}: {module} imports {name} "
                                f"({module.split('.')[0]} must not import {hit})")
    assert not problems, "forbidden imports:\n" + "\n".join(problems)


def test_the_checker_sees_local_relative_and_dynamic_imports(tmp_path):
    source = ("import os\n"
              "def f():\n"
              "    from ..ros import node\n"
              "    from . import sibling\n"
              "    importlib.import_module('rclpy.node')\n")
    path = tmp_path / "cross4d_core" / "sub" / "mod.py"
    path.parent.mkdir(parents=True)
    path.write_text(source)
    names = [name for _, name in _imports(_module_name(path, tmp_path), path)]
    assert names == ["os", "cross4d_core.ros", "cross4d_core.ros.node", "cross4d_core.sub",
                     "cross4d_core.sub.sibling", "rclpy.node"]


def _is_exception_base(name: str, errors_classes: set[str]) -> bool:
    """Whether a base class of this name makes an exception: a built-in one, one of errors.py,
    or any ``...Error`` / ``...Exception``."""
    builtin = getattr(builtins, name, None)
    return (isinstance(builtin, type) and issubclass(builtin, BaseException)) or name in errors_classes \
        or name.endswith(("Error", "Exception"))


def test_every_exception_class_is_defined_in_errors_py():
    tree = ast.parse((REPO / "cross4d_core" / "errors.py").read_text())
    errors_classes = {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    elsewhere = []
    for module, path in _modules(*PRODUCT).items():
        if module == "cross4d_core.errors":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                names = {b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "") for b in node.bases}
                if any(_is_exception_base(name, errors_classes) for name in names):
                    elsewhere.append(f"{path.relative_to(REPO)}:{node.lineno}: class {node.name}")
    assert not elsewhere, "exception classes outside cross4d_core/errors.py:\n" + "\n".join(elsewhere)

    from cross4d_core import errors

    classes = [v for v in vars(errors).values() if isinstance(v, type) and v.__module__ == errors.__name__]
    assert classes and all(issubclass(c, errors.Cross4DError) for c in classes), classes
