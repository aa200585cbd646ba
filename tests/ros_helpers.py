"""Helpers shared by the ROS 2 node tests: an in-process transport and a tiny Lift-shaped checkpoint."""

from pathlib import Path

import numpy as np
import torch

from robolearn.datasets import LinearNormalizer
from robolearn.policies import DiffusionPolicy, DiffusionPolicyConfig
from robolearn.policies.checkpoint import save_policy
from robolearn.policies.features import low_dim_spec
from robolearn.ros.transport import DEFAULT_QOS
from robolearn.sim.lift import HOME_QPOS

OBS_DIMS = {"joint_pos": 6, "gripper_opening": 1, "cube_pos": 3, "cube_quat": 4}


class FakeTransport:
    """In-process stand-in for unit tests: records publishes, delivers messages by hand."""

    def __init__(self):
        self.subs, self.published = {}, []

    def create_publisher(self, topic, msg_type, qos=DEFAULT_QOS):
        transport = self

        class Pub:
            def publish(self, msg):
                transport.published.append((topic, msg))

            def subscription_count(self):
                return 0

        return Pub()

    def create_subscription(self, topic, msg_type, callback, qos=None):
        self.subs.setdefault(topic, []).append(callback)

    def deliver(self, topic, msg):
        for callback in self.subs[topic]:
            callback(msg)

    def spin_once(self):
        return 0


#: the lift_image task's observations: two 96 x 96 cameras and the arm's own state
IMAGE_FEATURES = {"front_image": {"shape": [96, 96, 3], "type": "rgb"},
                  "wrist_image": {"shape": [96, 96, 3], "type": "rgb"}, **low_dim_spec({"joint_pos": 6,
                                                                                        "gripper_opening": 1})}


def tiny_lift_checkpoint(folder, n_action_steps=4, features=None):
    """An untrained Lift-shaped policy (it publishes plausible joint targets; it does not solve Lift), on the
    lift task's state observations or on `features` (e.g. `IMAGE_FEATURES`)."""
    torch.manual_seed(0)
    features = features or low_dim_spec(OBS_DIMS)
    config = DiffusionPolicyConfig(obs_features=features, action_dim=6, horizon=8,
                                   n_obs_steps=2, n_action_steps=n_action_steps, down_dims=[16, 32],
                                   step_embed_dim=16, num_inference_steps=3)
    rng = np.random.default_rng(0)
    data = {k: rng.uniform(-1, 1, (50, f["shape"][0])) for k, f in features.items() if f["type"] == "low_dim"}
    data["action"] = HOME_QPOS + rng.uniform(-0.05, 0.05, (50, 6))
    save_policy(Path(folder), DiffusionPolicy(config, LinearNormalizer.fit(data)))
    return Path(folder)
