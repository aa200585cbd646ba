"""Cube pose from ArUco markers: the estimator on rendered frames, the simulated markers, the marker node."""

import numpy as np
import pytest
from ros_helpers import FakeTransport

from robolearn.hardware.markers import (
    CameraCalibration,
    MarkerPoseEstimator,
    cube_marker_map,
)
from robolearn.ros.images import camera_topic, image_message
from robolearn.ros.marker_node import PARAMETERS, MarkerNode
from robolearn.ros.node import stamp
from robolearn.sim.lift import LiftEnv
from robolearn.sim.markers import MARKER_LENGTH, sim_camera_calibration

SIZE = (480, 640)


def rendered_poses(n: int, cube_markers: bool = True, seed: int = 0):
    """(frame, true position, true quaternion) of the cube at n random spawn poses, from the marker camera."""
    env = LiftEnv(cube_markers=cube_markers)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        env.reset(seed=int(rng.integers(1 << 30)))
        yield (env.render_camera_image("marker", SIZE), env.data.qpos[env._cube_adr:env._cube_adr + 3].copy(),
               env.data.qpos[env._cube_adr + 3:env._cube_adr + 7].copy())


def angle_deg(q1: np.ndarray, q2: np.ndarray) -> float:
    return float(np.degrees(2 * np.arccos(min(1.0, abs(float(np.dot(q1, q2)))))))


def estimator() -> MarkerPoseEstimator:
    return MarkerPoseEstimator(sim_camera_calibration("marker", *SIZE), cube_marker_map(0.015), MARKER_LENGTH)


def test_marker_pose_on_rendered_frames_within_5_mm_and_3_degrees():
    est = estimator()
    errors, angles = [], []
    for frame, pos, quat in rendered_poses(12):
        pose = est.estimate(frame)
        assert pose is not None
        errors.append(np.linalg.norm(pose.position - pos))
        angles.append(angle_deg(pose.quat, quat))
    assert np.median(errors) <= 0.005 and np.median(angles) <= 3.0, (errors, angles)


def test_no_markers_in_view_gives_no_pose():
    frame, _, _ = next(rendered_poses(1, cube_markers=False))
    assert estimator().estimate(frame) is None
    assert estimator().estimate(np.zeros((*SIZE, 3), np.uint8)) is None


def test_printed_markers_keep_their_size_when_a_world_grows_the_cube():
    small, big = LiftEnv(cube_markers=True, world={"object": {"cube_size": 0.03}}), LiftEnv(
        cube_markers=True, world={"object": {"cube_size": 0.04}})
    small.reset(seed=0)
    big.reset(seed=0)
    markers = big.world.ids.marker_geoms
    np.testing.assert_allclose(big.model.geom_size[markers], small.model.geom_size[markers])
    np.testing.assert_allclose(big.model.geom_pos[markers] - small.model.geom_pos[markers],
                               big.world.ids.marker_normals * 0.005)


def test_calibration_from_a_dict_names_what_is_missing():
    calibration = sim_camera_calibration("marker", *SIZE)
    again = CameraCalibration.from_dict(calibration.to_dict())
    np.testing.assert_allclose(again.rotation, calibration.rotation)
    with pytest.raises(ValueError, match="needs `position`"):
        CameraCalibration.from_dict({"camera_matrix": np.eye(3).tolist(), "rotation": np.eye(3).tolist()})
    with pytest.raises(ValueError, match="no camera 'nope'"):
        sim_camera_calibration("nope", *SIZE)


def test_marker_node_publishes_the_pose_stamped_with_the_frame_time():
    transport = FakeTransport()
    node = MarkerNode(transport, dict(PARAMETERS))
    frame, pos, quat = next(rendered_poses(1, seed=3))
    header = stamp(1234.5, frame_id="marker_camera")
    transport.deliver(camera_topic("marker"), image_message(frame, header))
    node.step(0.0)
    (topic, msg), = transport.published
    assert topic == "/cube_pose" and msg.header.stamp.to_seconds() == pytest.approx(1234.5)
    p = msg.pose.position
    assert np.linalg.norm(np.array([p.x, p.y, p.z]) - pos) < 0.01
    o = msg.pose.orientation
    assert angle_deg(np.array([o.w, o.x, o.y, o.z]), quat) < 5.0
    transport.deliver(camera_topic("marker"), image_message(np.zeros((*SIZE, 3), np.uint8), header))
    node.step(0.05)
    assert len(transport.published) == 1 and "frames_without_markers" in node.report()
