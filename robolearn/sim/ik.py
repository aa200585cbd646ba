"""Damped least-squares inverse kinematics on a MuJoCo model.

Differential IK in the style of Buss (2004), "Introduction to inverse kinematics with
Jacobian transpose, pseudoinverse and damped least squares methods", eq. (11):
    dq = J^T (J J^T + lambda^2 I)^-1 e
with J the site Jacobian from `mujoco.mj_jacSite` and e the 6-D pose error.
"""

from __future__ import annotations

import mujoco
import numpy as np


def _quat_z(angle: float) -> np.ndarray:
    return np.array([np.cos(angle / 2), 0.0, 0.0, np.sin(angle / 2)])


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])


def top_down_quat(position: np.ndarray, roll: float) -> np.ndarray:
    """Orientation (w, x, y, z) of the arm's gripper pointing straight down at `position` (m).

    The arm pans towards the point (pan = atan2(y, x)), its pitch joints sum to pi so the
    gripper points down, and the wrist rolls by `roll` rad: R = Rz(pan) Ry(pi) Rz(roll).
    """
    pan = float(np.arctan2(position[1], position[0]))
    return _quat_mul(_quat_mul(_quat_z(pan), np.array([0.0, 0.0, 1.0, 0.0])), _quat_z(roll))


class DampedLeastSquaresIK:
    """Solve for joint positions that put a site at a target position and orientation.

    Args:
        model: compiled MuJoCo model.
        site: name of the site to place.
        joints: names of the hinge/slide joints the solver may move (others stay fixed).
        damping: lambda in the DLS formula (dimensionless; larger is more robust, slower).
        rot_weight: weight of the orientation error (rad) relative to position error (m).

    Raises:
        KeyError: if the site or a joint name is not in the model.
    """

    def __init__(self, model: mujoco.MjModel, site: str, joints, damping: float = 1e-2,
                 rot_weight: float = 0.25):
        self.model = model
        self.data = mujoco.MjData(model)
        self.site_id = model.site(site).id
        self.qpos_adr = np.array([model.joint(j).qposadr[0] for j in joints])
        self.dof_adr = np.array([model.joint(j).dofadr[0] for j in joints])
        self.lower = np.array([model.joint(j).range[0] for j in joints])
        self.upper = np.array([model.joint(j).range[1] for j in joints])
        self.damping = damping
        self.rot_weight = rot_weight
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def site_pose(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Forward kinematics: site position (3,) m and rotation matrix (3, 3) at joint values q."""
        self.data.qpos[self.qpos_adr] = q
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.site_id].copy(), self.data.site_xmat[self.site_id].reshape(3, 3).copy()

    def solve(self, q_init: np.ndarray, target_pos: np.ndarray, target_quat: np.ndarray,
              iterations: int = 30, tol: float = 1e-4) -> tuple[np.ndarray, float]:
        """Iterate DLS from `q_init` (shape (n,), rad) towards the target.

        Args:
            target_pos: (3,) m, world frame.
            target_quat: (4,) unit quaternion (w, x, y, z), world frame.

        Returns:
            (q, err): joint positions (n,) clipped to the joint ranges, and the final
            position error in m.
        """
        q = np.array(q_init, dtype=float)
        site_quat = np.empty(4)
        rot_err = np.empty(3)
        for _ in range(iterations):
            pos, mat = self.site_pose(q)
            pos_err = target_pos - pos
            mujoco.mju_mat2Quat(site_quat, mat.ravel())
            mujoco.mju_subQuat(rot_err, target_quat, site_quat)
            rot_err = mat @ rot_err  # mju_subQuat answers in the site frame; the Jacobian is in world
            err = np.concatenate([pos_err, self.rot_weight * rot_err])
            if np.linalg.norm(pos_err) < tol and np.linalg.norm(rot_err) < 10 * tol:
                break
            mujoco.mj_comPos(self.model, self.data)  # mj_jacSite needs the com-based quantities
            mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.site_id)
            jac = np.vstack([self._jacp[:, self.dof_adr], self.rot_weight * self._jacr[:, self.dof_adr]])
            jjt = jac @ jac.T + self.damping**2 * np.eye(6)
            q = np.clip(q + jac.T @ np.linalg.solve(jjt, err), self.lower, self.upper)
        pos, _ = self.site_pose(q)
        return q, float(np.linalg.norm(target_pos - pos))
