"""A scripted, multimodal Push-T expert: choose a face and a point on it, go around the block, push."""

from __future__ import annotations

import numpy as np
import shapely.geometry as sg

from robolearn.sim.pusht import AGENT_RADIUS, GOAL_POSE, TEE_COM, rotation, tee_polygon

#: The T's outline in the block frame (px, counter-clockwise): its 8 faces are consecutive vertex pairs.
OUTLINE = np.array([[-60.0, 0.0], [60.0, 0.0], [60.0, 30.0], [15.0, 30.0], [15.0, 120.0], [-15.0, 120.0],
                    [-15.0, 30.0], [-60.0, 30.0]])
CONCAVE = (3, 6)  # outline vertices at the inner corners, where the round agent cannot reach the face ends
#: The agent's centre stays in [LOW, HIGH]^2 px (walls at 5 and 506 px, 2 px thick), with a margin.
LOW, HIGH = 5 + 2 + AGENT_RADIUS + 2, 506 - 2 - AGENT_RADIUS - 2
GYRATION = 55.0  # px, the block's radius of gyration about its centre of mass (sqrt(I / m) in gym-pusht)


def contact_candidates(spacing: float = 6.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points on the T's faces where the agent can push, and the faces' outward normals, block frame.

    Returns:
        points (N, 2) px, normals (N, 2) unit vectors and face indices (N,) (into `OUTLINE`); points keep 4 px from convex corners and an agent
        radius from the two concave ones.
    """
    points, normals, faces = [], [], []
    n = len(OUTLINE)
    for i in range(n):
        a, b = OUTLINE[i], OUTLINE[(i + 1) % n]
        edge = b - a
        length = float(np.linalg.norm(edge))
        u = edge / length
        normal = np.array([u[1], -u[0]])  # outward for a counter-clockwise outline
        start = AGENT_RADIUS + 1 if i in CONCAVE else 4.0
        end = length - (AGENT_RADIUS + 1 if (i + 1) % n in CONCAVE else 4.0)
        for s in np.arange(start, end + 1e-9, spacing):
            points.append(a + u * s)
            normals.append(normal)
            faces.append(i)
    return np.array(points), np.array(normals), np.array(faces)


def wrap(angle):
    """Angle(s) wrapped to [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


class PushTExpert:
    """Closed-loop pushing expert for `robolearn/PushT-v0`.

    Every control step (10 Hz) it scores each contact candidate (a point on a face of the T, pushed along
    the face's inward normal; the contacts are frictionless in gym-pusht) by how much a push there would
    reduce the pose error. The block's response to a push of length s at lever r from the centre of mass
    along d is modelled as a rigid-body twist, dx = s d and dtheta = s (r x d) / rho^2 (rho the radius of
    gyration); the best s cancels the error's projection. The error weighs the angle by rho (px per rad).
    Switching to another contact costs the way around the block, so the expert keeps a face while it
    helps. To reach a contact it goes around the block on a circle outside it, then approaches along the
    normal, and pushes at a speed that falls with the remaining error.

    Multimodality (drawn per episode from `rng`): the way around the block (clockwise or counter-clockwise
    first), and the order of the two sub-goals, rotation first (angle weighted up until it is within
    0.15 rad) or translation first (position weighted up until within 25 px). The episode's choices are
    `self.mode`.

    Args:
        action_noise: std of Gaussian noise on the target position, px.
        max_step: the target moves at most this far per control step, px (the agent's PD follows it).
    """

    def __init__(self, action_noise: float = 0.0, max_step: float = 30.0):
        if action_noise < 0:
            raise ValueError(f"action_noise must be >= 0 px, got {action_noise}")
        self.action_noise = float(action_noise)
        self.max_step = float(max_step)
        self.points, self.normals, self.faces = contact_candidates()
        self.rng = np.random.default_rng()
        self.goal_com = GOAL_POSE[:2] + rotation(GOAL_POSE[2]) @ TEE_COM

    def reset(self, obs: dict, rng: np.random.Generator | None = None) -> None:
        """Start an episode from its first observation; `rng` draws the episode's mode and noise."""
        if rng is not None:
            self.rng = rng
        self.mode = {"orbit": int(self.rng.choice([-1, 1])),
                     "first": str(self.rng.choice(["rotate", "translate"]))}
        self.current: int | None = None
        self.banned = np.zeros(len(self.points), dtype=int)  # steps left during which a contact is skipped
        self.still = 0  # control steps the agent has not moved while travelling
        self.last_agent = np.asarray(obs["state"][:2], dtype=float)
        self.stale, self.best_error = 0, np.inf  # steps without progress on the committed contact
        self.target = np.asarray(obs["state"][:2], dtype=float)

    # -- planning ---------------------------------------------------------------------------------------
    def _weights(self, pos_err: float, ang_err: float) -> float:
        """Weight of the angle error (px per rad) for this episode's sub-goal order."""
        if self.mode["first"] == "rotate" and abs(ang_err) > 0.15:
            return 3 * GYRATION
        if self.mode["first"] == "translate" and pos_err > 25:
            return 0.3 * GYRATION
        return GYRATION

    def _choose(self, pose: np.ndarray, agent: np.ndarray) -> tuple[int, float]:
        """The contact to push next and the push length, px."""
        R = rotation(pose[2])
        com = pose[:2] + R @ TEE_COM
        e_pos = self.goal_com - com
        e_ang = float(wrap(GOAL_POSE[2] - pose[2]))
        w = self._weights(float(np.linalg.norm(e_pos)), e_ang)
        target = np.array([*e_pos, w * e_ang])
        d = -(self.normals @ R.T)  # push directions, world
        r = (self.points - TEE_COM) @ R.T  # levers from the centre of mass, world
        torque = (r[:, 0] * d[:, 1] - r[:, 1] * d[:, 0]) / GYRATION**2
        twist = np.concatenate([d, (w * torque)[:, None]], axis=1)
        s = np.clip(twist @ target / np.einsum("ij,ij->i", twist, twist), 0, None)
        residual = np.linalg.norm(target[None] - s[:, None] * twist, axis=1)
        pre = pose[:2] + self.points @ R.T + (self.normals @ R.T) * (AGENT_RADIUS + 4)
        inside = np.all((pre > LOW) & (pre < HIGH), axis=1)
        tee = tee_polygon(pose)
        sweeps = [np.where(ok, sweep, np.inf) for ok, sweep in self._ways(pose, tee, agent, pre)]
        arc = np.minimum(*sweeps)  # rad around the block by the shorter feasible way
        inside &= np.isfinite(arc)
        travel = np.minimum(np.linalg.norm(pre - agent, axis=1), 95 * arc + 30)
        cost = residual + 0.08 * np.where(inside, travel, 0) + np.where(inside, 0, 1e6) + np.where(s > 0, 0, 1e6)
        cost += np.where(self.banned > 0, 1e5, 0)
        if self.current is not None:  # hysteresis: keep pushing the same face near the same point
            cost[self.current] -= 0.15 * np.linalg.norm(target) + 3
        best = int(np.argmin(cost))
        self.error = float(np.linalg.norm(target))
        return best, float(s[best])

    def _hull(self, pose: np.ndarray, tee):
        """The block's convex hull inflated by the agent's radius: (shapely polygon, vertices (M, 2) px,
        their angles around the centre of mass (M,) rad, whether each lies inside the workspace (M,),
        centre of mass (2,) px)."""
        com = pose[:2] + rotation(pose[2]) @ TEE_COM
        hull = tee.convex_hull.buffer(AGENT_RADIUS + 8, quad_segs=2)
        ring = np.array(hull.exterior.coords)[:-1]
        angles = np.arctan2(ring[:, 1] - com[1], ring[:, 0] - com[0])
        inside = np.all((ring > LOW) & (ring < HIGH), axis=1)
        return hull, ring, angles, inside, com

    def _ways(self, pose: np.ndarray, tee, agent: np.ndarray, goals: np.ndarray):
        """The two ways around the block (counter-clockwise, clockwise) from the agent to each of `goals`
        (N, 2): [(feasible (N,), swept angle (N,) rad)] * 2. A way is feasible when the inflated hull it
        follows stays inside the workspace."""
        _, _, angles, inside, com = self._hull(pose, tee)
        a_from = np.arctan2(*(agent - com)[::-1])
        to = np.arctan2(goals[:, 1] - com[1], goals[:, 0] - com[0])
        result = []
        for sign in (1.0, -1.0):
            sweep = (sign * (to - a_from)) % (2 * np.pi)
            swept = ((sign * (angles - a_from)) % (2 * np.pi))[None, :] <= sweep[:, None]
            result.append((np.all(inside[None, :] | ~swept, axis=1), sweep))
        return result

    def act(self, obs: dict) -> np.ndarray:
        """The next action: the agent's target position (2,), px."""
        state = np.asarray(obs["state"], dtype=float)
        agent = state[:2]
        pose = state[2:5]
        R = rotation(pose[2])
        self.banned = np.maximum(self.banned - 1, 0)
        index, push = self._choose(pose, agent)
        contact = pose[:2] + R @ self.points[index]
        normal = R @ self.normals[index]
        touching = contact + normal * AGENT_RADIUS
        in_contact = np.linalg.norm(agent - touching) < 6
        if index == self.current and in_contact:
            depth = float(np.clip(0.5 * push, 1.0, 12.0))
            goal = touching - normal * depth
        else:
            pre = contact + normal * (AGENT_RADIUS + 4)
            tee = tee_polygon(pose)
            clear = tee.distance(sg.LineString([agent, pre])) >= AGENT_RADIUS + 2
            goal = pre if clear else self._around(agent, pre, pose, tee)
            if np.linalg.norm(agent - pre) < 4 or in_contact:
                self.current = index
            # travelling but not moving: the way to this contact is blocked (by a wall); skip it for a while
            self.still = self.still + 1 if np.linalg.norm(agent - self.last_agent) < 1.0 else 0
            if self.still >= 4:
                self.banned[index], self.still, self.current = 40, 0, None
        self.last_agent = agent
        # committed to a contact that no longer reduces the error (the agent slips off a corner): skip it
        if self.current == index and self.error < self.best_error - 0.3:
            self.best_error, self.stale = self.error, 0
        elif self.current == index:
            self.stale += 1
            if self.stale > 12:
                self.banned[index], self.current = 40, None
        else:
            self.best_error, self.stale = np.inf, 0
        step = goal - agent
        distance = float(np.linalg.norm(step))
        if distance > self.max_step:
            goal = agent + step / distance * self.max_step
        if self.action_noise:
            goal = goal + self.rng.normal(0, self.action_noise, 2)
        return np.clip(goal, LOW, HIGH).astype(np.float32)

    def _around(self, agent: np.ndarray, pre: np.ndarray, pose: np.ndarray, tee) -> np.ndarray:
        """A waypoint around the block towards the pre-contact point `pre`, px.

        Near the block, back off from it; otherwise step along the block's convex hull, inflated by the
        agent's radius, the shorter way whose hull stays inside the workspace (the episode's `orbit` way when
        both are about as long)."""
        if tee.distance(sg.Point(agent)) < AGENT_RADIUS + 3:
            boundary = tee.boundary
            nearest = np.array(boundary.interpolate(boundary.project(sg.Point(agent))).coords[0])
            away = agent - nearest
            return agent + away / max(float(np.linalg.norm(away)), 1e-6) * 12
        hull, _, _, _, com = self._hull(pose, tee)
        a_from = float(np.arctan2(*(agent - com)[::-1]))
        ways = [(bool(ok[0]), float(sweep[0]), sign)
                for (ok, sweep), sign in zip(self._ways(pose, tee, agent, pre[None]), (1.0, -1.0))]
        feasible = [w for w in ways if w[0]] or ways
        if len(feasible) == 2 and abs(feasible[0][1] - feasible[1][1]) < 1.0:
            feasible.sort(key=lambda w: w[2] != self.mode["orbit"])
        else:
            feasible.sort(key=lambda w: w[1])
        _, sweep, sign = feasible[0]
        angle = a_from + sign * min(sweep, 0.6)
        ray = sg.LineString([com, com + 800 * np.array([np.cos(angle), np.sin(angle)])])
        hit = hull.exterior.intersection(ray)
        point = np.array(hit.coords[0]) if hit.geom_type == "Point" else np.array(hit.geoms[0].coords[0])
        return np.clip(point, LOW, HIGH)
