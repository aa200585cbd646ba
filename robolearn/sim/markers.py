"""ArUco markers on the simulated cube (`robolearn.hardware.markers.CUBE_FACES`), built from geoms.

Each face carries a white quiet zone, the marker's black square and its white data cells as thin visual-only
boxes (no contacts, no mass), so the marker's geometry is exact and the estimator's marker map
(`cube_marker_map`) holds in simulation as on a printed cube. The printed size stays `MARKER_LENGTH` when a
world changes the cube's size; the markers then move out with the faces.
"""

from __future__ import annotations

import mujoco
import numpy as np

from robolearn.hardware.markers import (
    MARKER_CELLS,
    CameraCalibration,
    cube_marker_map,
    marker_bits,
)
from robolearn.sim.arm import model_path

#: the black square's side, m (3 mm of the 3 cm face left on each side: the quiet zone and red)
MARKER_LENGTH = 0.024
QUIET_ZONE = 0.0025  # m of white around the black square
LAYER = 0.0002  # m: thickness of each layer (quiet zone, black square, white cells)
GEOM_PREFIX = "cube_marker_"


def add_cube_markers(spec: mujoco.MjSpec, marker_length: float = MARKER_LENGTH) -> None:
    """Add the five face markers to the `cube` body of the Lift scene's spec (geoms named `cube_marker_*`)."""
    cube = spec.body("cube")
    half_size = float(spec.geom("cube_geom").size[0])
    cell = marker_length / MARKER_CELLS
    white, black = [0.95, 0.95, 0.95, 1.0], [0.02, 0.02, 0.02, 1.0]
    for marker_id, pose in cube_marker_map(half_size).items():
        x_axis, y_axis, normal, centre = pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3]
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, pose[:3, :3].reshape(-1))

        def plate(name: str, offset_xy, half_xy: float, layer: int, rgba) -> None:
            pos = centre + normal * LAYER * (2 * layer + 1) + x_axis * offset_xy[0] + y_axis * offset_xy[1]
            cube.add_geom(name=f"{GEOM_PREFIX}{marker_id}_{name}", type=mujoco.mjtGeom.mjGEOM_BOX,
                          size=[half_xy, half_xy, LAYER], pos=pos, quat=quat, rgba=rgba, contype=0, conaffinity=0,
                          density=0, group=0)

        plate("quiet", (0, 0), marker_length / 2 + QUIET_ZONE, 0, white)
        plate("square", (0, 0), marker_length / 2, 1, black)
        bits = marker_bits(marker_id)
        for row, col in zip(*np.nonzero(bits)):
            offset = ((col - (MARKER_CELLS - 1) / 2) * cell, ((MARKER_CELLS - 1) / 2 - row) * cell)
            plate(f"cell_{row}_{col}", offset, cell / 2, 2, white)


def sim_camera_calibration(camera: str, height: int, width: int) -> CameraCalibration:
    """The calibration of the packaged scene's camera `camera` rendered at (height, width) px: pinhole intrinsics
    from its vertical field of view (square pixels, principal point at the image centre, no distortion) and its
    pose in the nominal scene. A world that moves the camera leaves this calibration stale, as on a real arm.

    Raises:
        ValueError: an unknown camera.
    """
    model = mujoco.MjModel.from_xml_path(model_path())
    try:
        cam = model.camera(camera).id
    except KeyError:
        raise ValueError(f"the scene has no camera {camera!r}") from None
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    f = (height / 2) / np.tan(np.deg2rad(model.cam_fovy[cam]) / 2)
    matrix = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])
    # MuJoCo cameras look along -z with y up; OpenCV's along +z with y down
    rotation = data.cam_xmat[cam].reshape(3, 3) @ np.diag([1.0, -1.0, -1.0])
    return CameraCalibration(matrix, np.zeros(5), data.cam_xpos[cam].copy(), rotation)
