"""Where robolearn's shipped files are (a library module: the CLI, the driver factory and deployment use it)."""

from __future__ import annotations

from pathlib import Path

import robolearn


def config_dir() -> Path:
    """The hydra config folder: inside the installed wheel, else the source checkout's `configs/`,
    else (a colcon build in a ROS 2 workspace) the package's share folder from the ament index.

    The ament index is asked only when neither local folder exists, and an index that cannot answer
    (`ament_index_python` installed with `AMENT_PREFIX_PATH` unset raises OSError) is skipped.

    Raises:
        FileNotFoundError: no config folder anywhere.
    """
    package = Path(robolearn.__file__).resolve().parent
    for candidate in (package / "configs", package.parent / "configs"):
        if (candidate / "collect.yaml").is_file():
            return candidate
    try:
        from ament_index_python.packages import get_package_share_directory

        candidate = Path(get_package_share_directory("robolearn")) / "configs"
        if (candidate / "collect.yaml").is_file():
            return candidate
    except (ImportError, LookupError, OSError, ValueError):
        pass
    raise FileNotFoundError(f"robolearn's hydra configs were not found next to {package} or in the ament index")
