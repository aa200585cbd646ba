"""`robolearn record`: teleoperate a robot at a fixed rate and record episodes into a zarr replay buffer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.live import Live

from robolearn.datasets import ReplayBuffer
from robolearn.errors import UserError
from robolearn.hardware.factory import make_device, make_robot
from robolearn.hardware.rate import Rate
from robolearn.hardware.robot import RobotObservation
from robolearn.hardware.teleop import CartesianMapper, KeyboardTeleop
from robolearn.outputs import check_apart, check_writable


def observation_row(obs: RobotObservation, t0: float) -> dict[str, np.ndarray]:
    """The per-step arrays recorded for an observation: joint_pos, joint_vel, the extras, each camera's frame as
    `<camera>_image` (uint8) with its capture time `<camera>_image_stamp`, and `timestamp` (s since `t0`)."""
    row = {"joint_pos": obs.joint_pos.astype(np.float32), "joint_vel": obs.joint_vel.astype(np.float32),
           "timestamp": np.float64(obs.timestamp - t0)}
    row.update({k: np.asarray(v, dtype=np.float32) for k, v in obs.extras.items()})
    for name, frame in obs.images.items():
        row[f"{name}_image"] = frame
        row[f"{name}_image_stamp"] = np.float64(obs.image_stamps.get(name, obs.timestamp) - t0)
    return row


def record(cfg: DictConfig) -> Path:
    """Hydra task `robolearn record` (configs/record.yaml).

    Every tick: read the robot, read the device, send the target through the robot's safety
    filter, and (while an episode is recording) keep the observation and the command sent as
    `action`. Each finished episode is committed atomically, so a crash keeps every finished one.
    """
    output = Path(cfg.output)
    check_apart({"output": output}, {"calibration": cfg.calibration, "leader_calibration": cfg.leader_calibration})
    check_writable(output, "output")
    try:
        robot = make_robot(cfg.robot, port=cfg.port, realtime=cfg.realtime, control_hz=cfg.rate_hz,
                           sim=OmegaConf.to_container(cfg.sim, resolve=True), calibration=cfg.calibration,
                           world=OmegaConf.to_container(cfg.world, resolve=True),
                           cameras=OmegaConf.to_container(cfg.cameras, resolve=True))
        device = make_device(cfg.device, rate_hz=cfg.rate_hz, leader=cfg.leader, leader_port=cfg.leader_port,
                             episodes=cfg.max_episodes or 1, seed=cfg.seed, leader_calibration=cfg.leader_calibration)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    attrs = {"robolearn": {"recorded_with": cfg.device, "robot": cfg.robot, "rate_hz": float(cfg.rate_hz)}}
    output.parent.mkdir(parents=True, exist_ok=True)
    buffer = ReplayBuffer.open_or_create(output, attrs=attrs)
    mapper = CartesianMapper()
    console = Console(stderr=True)
    max_steps = int(cfg.max_episode_seconds * cfg.rate_hz)
    saved, episode, status = 0, None, "idle"
    if isinstance(device, KeyboardTeleop):
        console.print(KeyboardTeleop.HELP)

    def line() -> str:
        state = f"[red]recording[/red] {len(episode)} steps" if episode is not None else status
        return f"{cfg.robot} | {cfg.device} | {state} | saved {saved} (dataset: {buffer.n_episodes}) -> {output}"

    def new_scene() -> None:
        """In simulation, episode i of the dataset starts from scene seed `seed + i` (cube pose, arm home),
        so `robolearn replay` can restore its scene."""
        if cfg.robot == "sim" and cfg.reset_sim_each_episode:
            robot.reset_scene(seed=cfg.seed + buffer.n_episodes)
            mapper.reset(robot.read().joint_pos)

    with buffer, robot, device, Live(line(), console=console, refresh_per_second=4, transient=False) as live:
        new_scene()
        obs = robot.read()
        mapper.reset(obs.joint_pos)
        rate, t0 = Rate(cfg.rate_hz, cfg.realtime), obs.timestamp
        while True:
            obs = robot.read()
            command = device.read(obs)
            events = command.events
            if "quit" in events:
                break
            if "start" in events and episode is None:
                mapper.reset(obs.joint_pos)
                episode, t0 = [], obs.timestamp
            if "discard" in events and episode is not None:
                episode, status = None, "discarded"
                new_scene()
                continue
            target = command.joint_target if command.joint_target is not None else mapper(command)
            sent = robot.send(target)
            if episode is not None:
                episode.append({**observation_row(obs, t0), "action": sent.astype(np.float32)})
                if ("stop" in events or len(episode) >= max_steps) and episode:
                    data = {k: np.stack([row[k] for row in episode]) for k in episode[0]}
                    data["done"] = np.arange(len(episode)) == len(episode) - 1
                    buffer.add_episode(data)
                    saved, episode, status = saved + 1, None, "saved"
                    if cfg.max_episodes and saved >= cfg.max_episodes:
                        break
                    new_scene()
            live.update(line())
            rate.sleep()
        live.update(line())
    print(f"{output}: {saved} episodes recorded this session, {buffer.n_episodes} in the dataset"
                  + (f"; the loop overran its {1000 / cfg.rate_hz:.0f} ms period {rate.overruns} times"
                     if rate.overruns else ""))
    return output
