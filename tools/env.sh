# Source me: the dev environment `make test` uses.
#   source tools/env.sh
# - the venv (rclpy, torch, ...) and the colcon workspace (generated cross4d.msg)
# - the source tree ahead of the workspace's installed copy of cross4d_core / cross4d_ros,
#   so edits take effect without a rebuild
# - DDS on loopback only, with a random domain id unless ROS_DOMAIN_ID is already set
_cross4d_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export VIRTUAL_ENV="$_cross4d_root/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
# setup.bash reads unset variables: source it with nounset off, then restore the caller's setting.
case $- in *u*) _cross4d_nounset=1 ;; *) _cross4d_nounset= ;; esac
set +u
# shellcheck disable=SC1091
source "$_cross4d_root/.colcon/install/setup.bash"
[ -n "$_cross4d_nounset" ] && set -u
export PYTHONPATH="$_cross4d_root${PYTHONPATH:+:$PYTHONPATH}"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 1 ))}"
unset _cross4d_root _cross4d_nounset
