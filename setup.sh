#!/usr/bin/env bash
# Install robolearn into ./.venv, with Debian's Mesa packages for off-screen MuJoCo rendering.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")"

# 1. Mesa (EGL and OSMesa) so MuJoCo renders without a display, on the CPU if need be.
if command -v dpkg >/dev/null 2>&1; then
  missing=()
  for pkg in libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libgbm1 libosmesa6; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing ${missing[*]} (off-screen rendering)"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

# 2. A virtual environment for the project.
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)

# 3. torch: keep one already installed (e.g. a CUDA build); otherwise 2.13.0 (the CPU build here).
.venv/bin/python -c "import torch" 2>/dev/null || "${pip[@]}" install "torch==2.13.0"

# 4. robolearn itself, editable, with the test tools and OpenCV cameras; redone only when pyproject.toml changes.
stamp=.venv/.robolearn-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "${pip[@]}" install -e ".[test,camera]"
  echo "$want" > "$stamp"
fi
echo "setup: robolearn is installed in .venv (run .venv/bin/robolearn --help)"

# 5. Real ROS 2 client libraries from PyPI (rclpy + Fast DDS), Kilted and Jazzy, each in a venv of its own so that
#    .venv keeps choosing its transport as a user's would. They see .venv's packages (robolearn, torch, mujoco)
#    through a .pth file, so robolearn's nodes can also run there on the rclpy transport. Used by the cross-vendor
#    tests (tests/ros2_real). ROBOLEARN_ROS2=0 skips this step.
if [ "${ROBOLEARN_ROS2:-1}" != "0" ]; then
  main_site="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  for distro in kilted jazzy; do
    venv=".venv-ros/$distro"
    [ "$distro" = kilted ] && prefix="ros-" || prefix="ros-jazzy-"
    want="${prefix}rclpy[fastrtps] ${prefix}std-msgs ${prefix}sensor-msgs ${prefix}geometry-msgs ${prefix}trajectory-msgs ${prefix}rcl-interfaces"
    [ "$distro" = kilted ] && want="$want ros-rmw-fastrtps-cpp"
    if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$want" ]; then
      echo "setup: installing ROS 2 $distro client libraries into $venv"
      [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
      # shellcheck disable=SC2086
      "$venv/bin/python" -m pip --disable-pip-version-check -q install $want
      site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
      echo "import site; site.addsitedir('$main_site')" > "$site/robolearn-main-venv.pth"
      echo "$want" > "$venv/.installed"
    fi
  done
  echo "setup: ROS 2 Kilted and Jazzy rclpy in .venv-ros/ (for tests/ros2_real)"
fi
