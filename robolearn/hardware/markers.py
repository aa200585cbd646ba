"""Object pose from fiducial markers: ArUco markers on the faces of a cube, seen by a calibrated camera (OpenCV).

A marker map places markers on an object: marker `id` -> 4x4 pose of the marker in the object frame (x right and
y up in the marker image, z out of the marker), all markers `marker_length` m wide (the black square). The
estimator detects the markers in a frame and solves the object's pose from the corners of every marker of the
map in view (SQPnP, Terzakis & Lourakis 2020, refined by Levenberg-Marquardt; one marker alone: IPPE for squares,
Collins & Bartoli 2014), in the world frame through the camera's calibrated pose. Units: m, rad; quaternions (w, x, y, z).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

#: the cube's markers: id -> (face normal, marker x axis, marker y axis) in the cube frame (5 faces; not the bottom)
CUBE_FACES: dict[int, tuple[tuple, tuple, tuple]] = {
    0: ((0, 0, 1), (1, 0, 0), (0, 1, 0)),    # top
    1: ((1, 0, 0), (0, 1, 0), (0, 0, 1)),    # +x
    2: ((-1, 0, 0), (0, -1, 0), (0, 0, 1)),  # -x
    3: ((0, 1, 0), (-1, 0, 0), (0, 0, 1)),   # +y
    4: ((0, -1, 0), (1, 0, 0), (0, 0, 1)),   # -y
}
#: DICT_4X4_50: 4x4 data bits inside a one-cell black border (6 x 6 cells)
DICTIONARY = "DICT_4X4_50"
MARKER_CELLS = 6


def cube_marker_map(half_size: float) -> dict[int, np.ndarray]:
    """{marker id: (4, 4) pose of the marker in the cube frame} for markers on the faces of a cube of half edge
    `half_size` m (`CUBE_FACES`), lying on the faces."""
    out = {}
    for marker_id, (normal, x_axis, y_axis) in CUBE_FACES.items():
        pose = np.eye(4)
        pose[:3, 0], pose[:3, 1], pose[:3, 2] = x_axis, y_axis, normal
        pose[:3, 3] = np.asarray(normal, dtype=float) * half_size
        out[marker_id] = pose
    return out


def marker_bits(marker_id: int, dictionary: str = DICTIONARY) -> np.ndarray:
    """The (MARKER_CELLS, MARKER_CELLS) cells of a marker, True = white, row 0 at the top of the marker image."""
    aruco = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, dictionary))
    image = cv2.aruco.generateImageMarker(aruco, marker_id, MARKER_CELLS * 10, borderBits=1)
    return image[5::10, 5::10] > 127


@dataclass
class CameraCalibration:
    """A pinhole camera: `camera_matrix` (3, 3) px, `dist_coeffs` (k1, k2, p1, p2[, k3]), and its pose in the world:
    `position` (3,) m and `rotation` (3, 3), the columns being the OpenCV camera axes (x right, y down, z forward)
    in the world frame."""

    camera_matrix: np.ndarray
    dist_coeffs: np.ndarray
    position: np.ndarray
    rotation: np.ndarray

    @classmethod
    def from_dict(cls, d: Mapping) -> CameraCalibration:
        """From {camera_matrix: 3x3, dist_coeffs: [...], position: [x, y, z], rotation: 3x3} (a calibration YAML).

        Raises:
            ValueError: a missing key or a wrong shape, naming it.
        """
        try:
            out = cls(np.asarray(d["camera_matrix"], float).reshape(3, 3), np.asarray(d.get("dist_coeffs", [0] * 5),
                                                                                     float).reshape(-1),
                      np.asarray(d["position"], float).reshape(3), np.asarray(d["rotation"], float).reshape(3, 3))
        except KeyError as exc:
            raise ValueError(f"camera calibration needs `{exc.args[0]}`") from None
        except ValueError as exc:
            raise ValueError(f"camera calibration: {exc}") from None
        return out

    def to_dict(self) -> dict:
        return {"camera_matrix": self.camera_matrix.tolist(), "dist_coeffs": self.dist_coeffs.tolist(),
                "position": self.position.tolist(), "rotation": self.rotation.tolist()}


@dataclass
class MarkerPose:
    """An estimate: object `position` (3,) m and `quat` (4,) w-x-y-z in the world frame; `marker_id` the largest
    marker used, `area_px` the markers' pixels, `error_px` the reprojection error (RMS over the corners used)."""

    position: np.ndarray
    quat: np.ndarray
    marker_id: int
    area_px: float
    error_px: float


class MarkerPoseEstimator:
    """Estimate an object's pose from the markers of its marker map in camera frames.

    Args:
        calibration: the camera's intrinsics and pose in the world.
        marker_map: {marker id: (4, 4) marker pose in the object frame} (e.g. `cube_marker_map(0.015)`).
        marker_length: side of each marker's black square, m.
        dictionary: the ArUco dictionary's OpenCV name.

    Raises:
        ValueError: an unknown dictionary or an empty marker map.
    """

    def __init__(self, calibration: CameraCalibration, marker_map: Mapping[int, np.ndarray], marker_length: float,
                 dictionary: str = DICTIONARY):
        if not hasattr(cv2.aruco, dictionary):
            raise ValueError(f"unknown ArUco dictionary {dictionary!r} (e.g. DICT_4X4_50)")
        if not marker_map:
            raise ValueError("the marker map is empty")
        self.calibration, self.marker_length = calibration, float(marker_length)
        self.marker_map = {int(k): np.asarray(v, float) for k, v in marker_map.items()}
        params = cv2.aruco.DetectorParameters()
        params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_CONTOUR
        self.detector = cv2.aruco.ArucoDetector(cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, dictionary)),
                                                params)
        half = self.marker_length / 2
        # IPPE_SQUARE's corner order: top-left, top-right, bottom-right, bottom-left (marker x right, y up)
        self.corners3d = np.array([[-half, half, 0], [half, half, 0], [half, -half, 0], [-half, -half, 0]])

    def estimate(self, image: np.ndarray) -> MarkerPose | None:
        """The object's pose from an (H, W, 3) RGB uint8 frame (or (H, W) gray), or None when no marker of the map
        is in view. All markers in view are solved together (their corners are one rigid set of points in the
        object frame: SQPnP, then Levenberg-Marquardt refinement); a single marker by IPPE, keeping the solution of
        the two with the smaller reprojection error."""
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        corners, ids, _ = self.detector.detectMarkers(gray)
        if ids is None:
            return None
        seen = [(quad.reshape(4, 2).astype(np.float64), int(i)) for quad, i in zip(corners, ids.reshape(-1))
                if int(i) in self.marker_map]
        if not seen:
            return None
        cal = self.calibration
        image_points = np.concatenate([quad for quad, _ in seen])
        object_points = np.concatenate([(self.marker_map[i][:3, :3] @ self.corners3d.T).T + self.marker_map[i][:3, 3]
                                        for _, i in seen])
        if len(seen) == 1:
            n, rvecs, tvecs, errors = cv2.solvePnPGeneric(self.corners3d, seen[0][0], cal.camera_matrix,
                                                          cal.dist_coeffs, flags=cv2.SOLVEPNP_IPPE_SQUARE)
            if not n:
                return None
            k = int(np.argmin(np.asarray(errors).reshape(-1)))
            cam_object = _pose(rvecs[k], tvecs[k]) @ np.linalg.inv(self.marker_map[seen[0][1]])
        else:
            ok, rvec, tvec = cv2.solvePnP(object_points, image_points, cal.camera_matrix, cal.dist_coeffs,
                                          flags=cv2.SOLVEPNP_SQPNP)
            if not ok:
                return None
            rvec, tvec = cv2.solvePnPRefineLM(object_points, image_points, cal.camera_matrix, cal.dist_coeffs,
                                              rvec, tvec)
            cam_object = _pose(rvec, tvec)
        rvec = cv2.Rodrigues(cam_object[:3, :3])[0]
        projected, _ = cv2.projectPoints(object_points, rvec, cam_object[:3, 3], cal.camera_matrix, cal.dist_coeffs)
        error = float(np.sqrt(np.mean(np.sum((projected.reshape(-1, 2) - image_points) ** 2, axis=1))))
        world_cam = np.eye(4)
        world_cam[:3, :3], world_cam[:3, 3] = cal.rotation, cal.position
        world_object = world_cam @ cam_object
        largest = max(seen, key=lambda s: cv2.contourArea(s[0].astype(np.float32)))
        return MarkerPose(world_object[:3, 3].copy(), rotation_to_quat(world_object[:3, :3]), largest[1],
                          float(sum(cv2.contourArea(q.astype(np.float32)) for q, _ in seen)), error)


def _pose(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = cv2.Rodrigues(np.asarray(rvec, dtype=np.float64))[0]
    pose[:3, 3] = np.asarray(tvec, dtype=np.float64).reshape(3)
    return pose


def rotation_to_quat(rotation: np.ndarray) -> np.ndarray:
    """A (3, 3) rotation matrix as a unit quaternion (w, x, y, z) with w >= 0."""
    import mujoco

    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.asarray(rotation, dtype=np.float64).reshape(-1))
    return quat if quat[0] >= 0 else -quat
