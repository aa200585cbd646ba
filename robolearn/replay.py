"""`robolearn replay`: play a recorded episode's actions back on a robot and report the tracking error."""

from __future__ import annotations

import numpy as np
from omegaconf import DictConfig, OmegaConf

from robolearn.datasets import ReplayBuffer
from robolearn.errors import UserError
from robolearn.hardware.factory import make_robot
from robolearn.hardware.rate import Rate


def replay(cfg: DictConfig) -> dict:
    """Hydra task `robolearn replay dataset=... episode=N` (configs/replay.yaml).

    The robot first moves (rate-limited by its safety filter) to the episode's first joint
    positions for `settle_seconds`, then receives one recorded action per tick at `rate_hz`.
    Returns and prints the joint tracking error against the recorded positions (rad).
    """
    buffer = ReplayBuffer.open(cfg.dataset)
    if not -buffer.n_episodes <= cfg.episode < buffer.n_episodes:
        raise UserError(f"episode {cfg.episode} out of range: {cfg.dataset} has {buffer.n_episodes} episodes")
    ep = buffer.get_episode(cfg.episode, ["action", "joint_pos"])
    robot = make_robot(cfg.robot, port=cfg.port, realtime=cfg.realtime, control_hz=cfg.rate_hz,
                       sim=OmegaConf.to_container(cfg.sim, resolve=True), calibration=cfg.calibration,
                       world=OmegaConf.to_container(cfg.world, resolve=True))
    measured = []
    with robot:
        if cfg.robot == "sim":  # the scene the episode was recorded in (see robolearn record)
            robot.reset_scene(seed=cfg.seed + cfg.episode % buffer.n_episodes)
        rate = Rate(cfg.rate_hz, cfg.realtime)
        for _ in range(int(cfg.settle_seconds * cfg.rate_hz)):
            robot.send(ep["joint_pos"][0])
            rate.sleep()
        for action in ep["action"]:
            robot.send(action)
            rate.sleep()
            measured.append(robot.read().joint_pos)
    measured = np.array(measured[:-1])
    recorded = ep["joint_pos"][1:]
    error = np.abs(measured - recorded)
    result = {"steps": len(ep["action"]), "max_error_rad": float(error.max(initial=0.0)),
              "rms_error_rad": float(np.sqrt(np.mean(error**2))) if error.size else 0.0,
              "per_joint_max_error_rad": error.max(axis=0).tolist() if error.size else []}
    print(f"replayed episode {cfg.episode} ({result['steps']} steps) on {cfg.robot}: joint tracking error "
          f"max {result['max_error_rad']:.4f} rad, rms {result['rms_error_rad']:.4f} rad; per joint max "
          + " ".join(f"{e:.3f}" for e in result["per_joint_max_error_rad"]))
    return result
