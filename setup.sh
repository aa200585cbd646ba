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
