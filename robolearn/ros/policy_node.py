"""`policy_node`: run a robolearn policy (optionally with value re-ranking) on ROS 2 topics in real time.

Subscribes to the observations the policy needs (see `robolearn.ros.node`: /joint_states reordered by
joint name, /gripper_opening, /cube_pose), to /e_stop (+ /e_stop/reset) and to /robolearn/episode, and
publishes one joint command per control period on `<controller>/commands`
(std_msgs/Float64MultiArray) or `<controller>/joint_trajectory` (a one-point JointTrajectory).

Scheduling by time (`ActionSchedule`): a chunk computed from an observation taken at t_obs (its
header stamp) gives action i the time t_obs + i * period. Inference runs in a worker thread while the current chunk
executes; the next chunk is requested when `replan_margin` actions (plus the ticks inference takes,
measured) are left, so the robot never waits for the network. When the new chunk arrives it
replaces the old one; actions whose time has passed (more than half a period ago) are dropped,
never sent late. Without fresh observations (older than `obs_timeout`), after an e-stop, or with
no valid action, the node publishes nothing and the driver holds, and says why in a rate-limited
log line while it happens (which topic is missing, stale or malformed). Observation stamps that are
more than `obs_timeout` off this machine's clock although the messages arrive fresh mean the
clocks disagree: actions are then timed from the arrival time instead, with a log line.
"""

from __future__ import annotations

import math
import queue
import sys
import threading
import time
from collections import deque

import numpy as np
import torch

from robolearn.policies.history import ObsHistory
from robolearn.ros.msgs import (
    Bool,
    Duration,
    Float64MultiArray,
    JointTrajectory,
    JointTrajectoryPoint,
    String,
)
from robolearn.ros.node import (
    TOPIC_DEFAULTS,
    ObservationInbox,
    RateLimitedLog,
    TimingStats,
    check_timing,
    episode_reset_stamp,
    run,
    stamp,
)
from robolearn.ros.transport import DEFAULT_QOS, ESTOP_QOS, LATCHED_QOS, Transport
from robolearn.sim.arm import JOINT_NAMES

PARAMETERS = {
    "checkpoint": "", "value": "", "rerank_k": 16, "rerank_temperature": 0.0, "num_inference_steps": 0,
    "inference": "",
    "device": "cpu", "threads": 1, "control_hz": 20.0, "controller": "position_controller",
    "command_interface": "commands", "joint_names": list(JOINT_NAMES), **TOPIC_DEFAULTS, "obs_timeout": 0.25,
    "replan_margin": 1, "estop_topic": "/e_stop", "episode_topic": "/robolearn/episode", "seed": 0,
}


class ActionSchedule:
    """Timestamped actions of the current chunk (see the module docstring).

    Times are monotonic seconds; `period` is the control period, s.
    """

    def __init__(self, period: float):
        self.period = period
        self.actions: deque = deque()  # (time, action)

    def replace(self, chunk: np.ndarray, t_obs: float) -> None:
        """Schedule chunk (Ta, Da) computed from the observation at t_obs: action i at t_obs + i * period."""
        self.actions = deque((t_obs + i * self.period, a) for i, a in enumerate(chunk))

    def clear(self) -> None:
        self.actions.clear()

    def pop_due(self, now: float) -> tuple[np.ndarray | None, int]:
        """(the action for the tick at `now` or None, how many stale actions were dropped)."""
        dropped = 0
        while self.actions and self.actions[0][0] < now - self.period / 2:
            self.actions.popleft()
            dropped += 1
        if self.actions and self.actions[0][0] <= now + self.period / 2:
            return self.actions.popleft()[1], dropped
        return None, dropped

    def __len__(self) -> int:
        return len(self.actions)


class InferenceWorker:
    """One background thread that turns observation histories into action chunks, one request at a time."""

    def __init__(self, policy, seed: int = 0):
        self.policy = policy
        self.generator = torch.Generator(device=policy.device).manual_seed(seed)
        self.requests: queue.Queue = queue.Queue(maxsize=1)
        self.results: queue.Queue = queue.Queue()
        self.busy = False
        self.seconds: deque = deque(maxlen=50)
        self.thread = threading.Thread(target=self._loop, daemon=True, name="inference")
        self.thread.start()

    def submit(self, history: dict[str, np.ndarray], t_obs: float, generation: int) -> None:
        self.busy = True
        self.requests.put((history, t_obs, generation))

    def _loop(self) -> None:
        while True:
            item = self.requests.get()
            if item is None:
                return
            history, t_obs, generation = item
            t0 = time.perf_counter()
            with torch.no_grad():
                obs = {k: torch.from_numpy(v[None] if v.dtype == np.uint8 else v[None].astype(np.float32))
                       for k, v in history.items()}  # camera frames stay uint8 (the encoder maps them)
                chunk = self.policy.predict_action(obs, generator=self.generator)[0].cpu().numpy()
            self.seconds.append(time.perf_counter() - t0)
            self.results.put((chunk.astype(np.float64), t_obs, generation))

    def poll(self):
        """A finished (chunk, t_obs, generation), or None."""
        try:
            result = self.results.get_nowait()
        except queue.Empty:
            return None
        self.busy = False
        return result

    def latency_ticks(self, period: float) -> int:
        """Control periods a request takes (p90 of recent ones)."""
        return int(math.ceil(np.percentile(self.seconds, 90) / period)) if self.seconds else 1

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for it (up to `timeout` s), so no inference runs while the process exits
        (with rclpy, a thread still in torch at exit aborts the process)."""
        while True:
            try:
                self.requests.put_nowait(None)
                break
            except queue.Full:  # a request is pending: take it back, then ask the thread to stop
                try:
                    self.requests.get_nowait()
                except queue.Empty:
                    pass
        self.thread.join(timeout)


def load_deployed_policy(params: dict):
    """The policy of `checkpoint`, wrapped in value re-ranking when `value` is given.

    Raises:
        ValueError: no checkpoint given, an unknown `inference`, or a Q-function that does not fit the policy.
        FileNotFoundError, CheckpointError: as `load_policy` / `load_q_function`.
    """
    from robolearn.policies.checkpoint import load_policy

    if not params["checkpoint"]:
        raise ValueError("policy_node needs the parameter checkpoint (a checkpoint folder)")
    policy = load_policy(params["checkpoint"], device=params["device"],
                         num_inference_steps=int(params["num_inference_steps"]) or None,
                         inference=params["inference"] or None)
    if params["value"]:
        from robolearn.value import ValueGuidedPolicy, load_q_function

        policy = ValueGuidedPolicy(policy, load_q_function(params["value"], device=params["device"]),
                                   k=int(params["rerank_k"]), temperature=float(params["rerank_temperature"]))
    if params["inference"] == "compiled":  # compile now (tens of seconds on a CPU), not at the first observation
        obs = {key: torch.zeros((1, policy.n_obs_steps, *f.shape), device=policy.device,
                                dtype=torch.uint8 if f.type == "rgb" else torch.float32)
               for key, f in policy.obs_features.items()}
        policy.predict_action(obs)
    return policy


class PolicyNode:
    """The policy node (see the module docstring). `policy` defaults to `load_deployed_policy(params)`."""

    def __init__(self, transport: Transport, params: dict, policy=None):
        if params["command_interface"] not in ("commands", "joint_trajectory"):
            raise ValueError(f"command_interface must be commands or joint_trajectory, got {params['command_interface']!r}")
        check_timing(params, durations=("obs_timeout",))
        if isinstance(params["replan_margin"], bool) or not isinstance(params["replan_margin"], int) \
                or params["replan_margin"] < 0:
            raise ValueError(f"replan_margin must be an integer >= 0 (actions), got {params['replan_margin']!r}")
        torch.set_num_threads(int(params["threads"]))
        self.p = params
        self.policy = policy if policy is not None else load_deployed_policy(params)
        self.rate_hz = float(params["control_hz"])
        self.period = 1.0 / self.rate_hz
        self.joint_names = list(params["joint_names"])
        self.log = RateLimitedLog("policy_node")
        self.inbox = ObservationInbox(transport, list(self.policy.obs_features), params, self.joint_names, log=self.log)
        controller = params["controller"].strip("/")
        if params["command_interface"] == "commands":
            self.pub = transport.create_publisher(f"/{controller}/commands", Float64MultiArray, DEFAULT_QOS)
        else:
            self.pub = transport.create_publisher(f"/{controller}/joint_trajectory", JointTrajectory, DEFAULT_QOS)
        transport.create_subscription(params["estop_topic"], Bool, self._on_estop, ESTOP_QOS)
        transport.create_subscription(params["estop_topic"] + "/reset", Bool, self._on_reset, ESTOP_QOS)
        transport.create_subscription(params["episode_topic"], String, self._on_episode, LATCHED_QOS)
        self.schedule = ActionSchedule(self.period)
        self.history = ObsHistory(self.policy.n_obs_steps, keys=list(self.policy.obs_features))
        self.stats = TimingStats(self.period)
        self.worker = InferenceWorker(self.policy, seed=int(params["seed"]))
        self.generation = 0
        self.stopped = False

    def _on_estop(self, msg: Bool) -> None:
        if msg.data and not self.stopped:
            self.stopped = True
            self._restart()
            print("[policy_node] e-stop: commands paused until a reset", flush=True)

    def _on_reset(self, msg: Bool) -> None:
        if msg.data and self.stopped:
            self.stopped = False
            print("[policy_node] e-stop reset", flush=True)

    def _on_episode(self, msg: String) -> None:
        reset_stamp = episode_reset_stamp(msg.data)
        if reset_stamp is not None:
            self._restart()
            self.inbox.reset(reset_stamp)  # observations taken before the scene reset are stale

    def _restart(self) -> None:
        """Forget the observation history and planned actions; a chunk still being computed is discarded."""
        self.history.reset()
        self.schedule.clear()
        self.generation += 1
        self.stats.restart()

    def step(self, now: float) -> bool:
        result = self.worker.poll()
        if result is not None and result[2] == self.generation:
            self.schedule.replace(result[0], result[1])
        if self.stopped:
            self.stats.count("ticks_estopped")
            return True
        timeout = float(self.p["obs_timeout"])
        obs = self.inbox.fresh(time.monotonic(), timeout)
        if obs is None:
            self.stats.count("ticks_without_fresh_observations")
            self.log("no-obs", "sending nothing: " + self.inbox.why_not_fresh(time.monotonic(), timeout))
            return True
        self.history.push(obs)
        action, dropped = self.schedule.pop_due(now)
        self.stats.count("stale_actions_dropped", dropped)
        if dropped and action is None and not len(self.schedule):
            self.log("stale", f"dropped {dropped} action(s) whose time had passed and had none left to send: "
                              "inference is slower than the chunk lasts, or the observation times are wrong")
        if action is not None:
            self._publish(action, now)
        else:
            self.stats.count("ticks_without_action")
        if not self.worker.busy and len(self.schedule) <= int(self.p["replan_margin"]) + self.worker.latency_ticks(self.period) - 1:
            history = self.history.stacked()
            # the chunk's first action belongs to the instant the newest observation was taken
            taken, offset = self.inbox.observation_time(max_age=timeout)
            if offset is not None:
                self.stats.count("untrusted_observation_stamps")
                self.log("clock", f"observation stamps are {abs(offset):.3f} s {'behind' if offset > 0 else 'ahead of'} "
                                  f"this machine's clock although they arrive fresh (more than obs_timeout {timeout:g} s): "
                                  "timing actions from their arrival instead; synchronize the clocks (chrony, PTP)")
            self.worker.submit(history, now if taken is None else min(taken, now), self.generation)
        return True

    def _publish(self, action: np.ndarray, tick: float) -> None:
        values = [float(v) for v in action]
        if self.p["command_interface"] == "commands":
            self.pub.publish(Float64MultiArray(data=values))
        else:
            point = JointTrajectoryPoint(positions=values, time_from_start=Duration.from_seconds(self.period))
            self.pub.publish(JointTrajectory(header=stamp(0.0), joint_names=self.joint_names, points=[point]))
        wall = time.time()
        newest = self.inbox.newest_stamp()
        self.stats.publish(tick, time.monotonic(), None if newest is None else wall - newest)

    def report(self) -> str:
        text = self.stats.report("policy_node")
        if self.worker.seconds:
            s = np.array(self.worker.seconds) * 1e3
            text += f"\n  inference: median {np.median(s):.1f} ms, p90 {np.percentile(s, 90):.1f} ms (last {len(s)})"
        return text

    def close(self) -> None:
        self.worker.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run(lambda transport: PolicyNode(transport, transport.parameters(PARAMETERS)), "policy_node", argv)
