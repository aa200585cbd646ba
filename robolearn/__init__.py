"""robolearn: a robot learning stack from demonstrations to a running robot."""

import os
import sys

__version__ = "0.1.0"

# MuJoCo picks its OpenGL backend when it is imported. On a Linux machine with no display,
# render off-screen through EGL (Mesa's llvmpipe on a CPU) unless the user chose a backend.
if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    os.environ.setdefault("MUJOCO_GL", "egl")
