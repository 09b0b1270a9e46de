"""Rewrite the manylinux build paths baked into the ROS 2 wheels' CMake export files.

The PyPI ROS 2 wheels were built in a manylinux container; their
``share/*/cmake/*Export.cmake`` files name that container's Python include dir and
numpy include dir. CMake refuses imported targets with non-existent include paths, so
``colcon build`` of any message package fails until they point at this interpreter.
Idempotent: a second run finds nothing to change.

Usage: python tools/fix_ros_wheel_cmake.py VENV_PREFIX
"""
import pathlib
import re
import sys
import sysconfig

import numpy


def main(prefix: str) -> int:
    python_include = sysconfig.get_paths()["include"]
    numpy_include = numpy.get_include()
    python_pattern = re.compile(r"/opt/python/cp3\d+-cp3\d+/include/python3\.\d+")
    numpy_pattern = re.compile(r"/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/numpy/(?:_core|core)/include")
    changed = 0
    for path in pathlib.Path(prefix, "share").glob("*/cmake/*Export*.cmake"):
        text = path.read_text()
        fixed = numpy_pattern.sub(numpy_include, text)
        fixed = python_pattern.sub(python_include, fixed)
        if fixed != text:
            path.write_text(fixed)
            changed += 1
    print(f"fixed {changed} CMake export file(s) -> {python_include}, {numpy_include}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
