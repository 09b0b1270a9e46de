#!/usr/bin/env bash
# One-command development set-up on a bare Debian + Python 3.10-3.12 machine (no ROS, no GPU).
#   1. .venv with ROS 2 Kilted wheels, torch (CPU pin from constraints-dev.txt), the library deps
#   2. fix the manylinux paths baked into the wheels' CMake export files
#   3. colcon build of this package into .colcon/ (generates cross4d.msg)
#   4. pip install -e . (the `cross4d` command)
# Idempotent: each step is skipped when its inputs have not changed (stamp files).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
PY=${PYTHON:-python3}

step() { printf '\n[setup] %s\n' "$*"; }
fail() { printf '\n[setup] FAILED at step: %s\n' "$*" >&2; exit 1; }
# Hash of the names and contents of the given files / directories (missing ones count as absent).
hash_of() { find "$@" -type f 2>/dev/null | LC_ALL=C sort | xargs -r sha256sum | sha256sum | cut -d' ' -f1; }

"$PY" -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 10) <= v <= (3, 12) else 1)' \
  || fail "python version: need Python 3.10-3.12 (the ROS 2 Kilted wheels); found $("$PY" --version 2>&1). Set PYTHON=python3.11."

if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV"
  "$PY" -m venv "$VENV" || fail "python -m venv (on Debian: apt-get install python3-venv)"
fi

deps_hash=$(hash_of requirements-dev.txt constraints-dev.txt setup.py)
if [ "$(cat "$VENV/.cross4d-deps" 2>/dev/null)" != "$deps_hash" ]; then
  step "installing Python + ROS 2 wheels (first time: ~1-2 min)"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r requirements-dev.txt -c constraints-dev.txt \
    || fail "pip install -r requirements-dev.txt"
  step "fixing manylinux paths in the wheels' CMake export files"
  "$VENV/bin/python" tools/fix_ros_wheel_cmake.py "$VENV" || fail "fix_ros_wheel_cmake.py"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-deps -e . || fail "pip install -e ."
  echo "$deps_hash" > "$VENV/.cross4d-deps"
fi

build_hash=$(hash_of "$VENV/.cross4d-deps" package.xml CMakeLists.txt msg scripts launch config)
if [ "$(cat .colcon/.cross4d-build 2>/dev/null)" != "$build_hash" ] || [ ! -f .colcon/install/setup.bash ]; then
  step "colcon build (messages, executables, launch, config) into .colcon/"
  (
    export PATH="$VENV/bin:$PATH" CMAKE_PREFIX_PATH="$VENV" AMENT_PREFIX_PATH="$VENV"
    # colcon builds the package through the symlink .colcon/src/cross4d -> repo root: CMake
    # refuses to export include paths under its source dir, and the venv (with numpy's
    # headers) lives inside the repo; seen through the symlink, it no longer does.
    mkdir -p .colcon/src
    [ -L .colcon/src/cross4d ] || ln -s ../.. .colcon/src/cross4d
    colcon --log-base .colcon/log build --paths .colcon/src/cross4d \
      --build-base .colcon/build --install-base .colcon/install \
      --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VENV/bin/python" \
      --event-handlers console_cohesion+
  ) || fail "colcon build (log in .colcon/log)"
  echo "$build_hash" > .colcon/.cross4d-build
fi
step "ready: .venv + .colcon/install (source tools/env.sh to use them)"
