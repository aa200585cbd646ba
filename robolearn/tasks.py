"""Tasks as configs: `configs/task/<name>.yaml` names everything task-specific, and this module reads it.

A task yaml holds::

    name: pusht                       # run names, messages
    env_id: robolearn/PushT-v0        # gymnasium id (null: a real robot, no simulator)
    env_kwargs: {...}                 # passed to gymnasium.make
    env_registration: {entry_point: "module:Class", max_episode_steps: 300}   # optional: registers env_id
    expert: {_target_: module.Class, ...}   # the scripted expert (reset(obs, rng), act(obs)); optional
    keep_failed: true                 # collection keeps episodes the expert failed (false: successes only)
    metric: success_rate              # what selects checkpoints: success_rate | mean_score
    obs_features: {key: {shape: [...], type: low_dim | rgb}}   # or from_dataset: every observation key of the
                                      # dataset (`Task.with_dataset_features`), e.g. an imported one
    action_key: action
    dataset: ${data_dir}/pusht_expert.zarr
    ros: {...}                        # the driver's ROS 2 topic map for this task's scene (optional)
    training: {batch_size: 64}        # robolearn train's defaults for this task (optional; the command line wins)

An unknown or misspelled key is an error. Apps read a task through `task_from_config` and never branch on
its name. An app's `world:` section (configs/world/<name>.yaml, `robolearn.sim.world`) reaches the task's env
as the env kwarg `world` (`load_task(section, world)`); the nominal world adds nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from robolearn.errors import UserError
from robolearn.policies.features import ObsFeature, check_features, parse_features

#: the keys a task yaml may hold
TASK_KEYS = {"name", "env_id", "env_kwargs", "env_registration", "expert", "keep_failed", "metric", "obs_features",
             "action_key", "dataset", "ros", "training"}
METRICS = ("success_rate", "mean_score")
#: `obs_features: from_dataset` takes every dataset key except the action and these bookkeeping keys (and *_stamp)
NOT_OBSERVATIONS = {"timestamp", "done", "reward", "success", "sim_state", "world", "task_index"}
FROM_DATASET = "from_dataset"


@dataclass
class Task:
    """A task config, checked (see the module docstring)."""

    name: str
    env_id: str | None
    env_kwargs: dict
    obs_features: dict[str, ObsFeature]
    action_key: str = "action"
    dataset: str | None = None
    expert: dict | None = None
    keep_failed: bool = True
    metric: str = "success_rate"
    ros: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    world: str = "nominal"
    #: the world's config as used ({name, <group>: {parameter: value or range}}; {} for the nominal world): what
    #: results record, so a result says which values it was measured with, not only a name
    world_config: dict = field(default_factory=dict)
    features_from_dataset: bool = False

    def with_world(self, world: Mapping | None) -> Task:
        """This task in `world` (a world config mapping): its env kwargs gain `world` unless the world is
        nominal, and `self.world` names it.

        Raises:
            ValueError: a malformed world (naming the parameter), or a non-nominal world for an env that does not
                take one (e.g. Push-T) or a task without a simulator.
        """
        from robolearn.sim.world import World

        parsed = World(world)
        config = dict(world or {})
        if parsed.is_nominal:
            return replace(self, world=parsed.name, world_config=config)
        if self.env_id is None or "world" not in _env_parameters(self.env_id):
            raise ValueError(f"task {self.name}: its env {self.env_id} has no world parameters; use world=nominal")
        return replace(self, world=parsed.name, world_config=config, env_kwargs={**self.env_kwargs, "world": config})

    def with_dataset_features(self, path) -> Task:
        """This task with its observation features read from the dataset at `path` when its config says
        `obs_features: from_dataset` (every key but the action, `NOT_OBSERVATIONS` and `*_stamp`; uint8
        (H, W, C) keys are rgb, the rest low_dim); otherwise the task itself.

        Raises:
            ValueError: the dataset has no `action_key` or no observation key.
        """
        if not self.features_from_dataset:
            return self
        from robolearn.datasets.replay_buffer import ReplayBuffer

        with ReplayBuffer.open(path) as buffer:
            arrays = {k: buffer.array(k) for k in buffer.keys}
        if self.action_key not in arrays:
            raise ValueError(f"{path} has no `{self.action_key}` key (keys: {sorted(arrays)}); set task.action_key")
        text = sorted(k for k, a in arrays.items() if np.dtype(a.dtype).kind not in "biuf")
        if text:  # a foreign store's text keys (task strings, names): not observations
            print(f"note: {path}: leaving out keys that do not hold numbers: {text}", file=sys.stderr)
        spec = {k: {"shape": list(a.shape[1:]) or [1],
                    "type": "rgb" if a.dtype == np.uint8 and len(a.shape) == 4 else "low_dim"}
                for k, a in arrays.items() if k != self.action_key and k not in NOT_OBSERVATIONS
                and not k.endswith("_stamp") and k not in text}
        if not spec:
            raise ValueError(f"{path} has no observation keys besides {sorted(arrays)}")
        return replace(self, obs_features=parse_features(spec), features_from_dataset=False)

    @property
    def obs_keys(self) -> list[str]:
        return list(self.obs_features)

    @property
    def features_spec(self) -> dict:
        """The yaml-ready feature spec {key: {shape, type}} (what policy configs store)."""
        return {k: {"shape": list(f.shape), "type": f.type} for k, f in self.obs_features.items()}

    def make_expert(self) -> Any:
        """The task's scripted expert, built with hydra from its `_target_`.

        Raises:
            ValueError: the task has no expert.
        """
        if not self.expert:
            raise ValueError(f"task {self.name} has no scripted expert (`expert:` with a `_target_`)")
        from hydra.utils import instantiate

        return instantiate(self.expert)

    def env_shapes(self) -> tuple[dict[str, tuple], tuple]:
        """({observation key: per-step shape}, action shape) of the task's env (made and closed).

        Raises:
            ValueError: the task has no simulator.
        """
        if self.env_id is None:
            raise ValueError(f"task {self.name} has no simulator (env_id: null)")
        import gymnasium as gym

        env = gym.make(self.env_id, **self.env_kwargs)
        try:
            spaces = getattr(env.observation_space, "spaces", {})
            return {k: tuple(s.shape) for k, s in spaces.items()}, tuple(env.action_space.shape)
        finally:
            env.close()

    def check_env(self, action_dim: int | None = None, source: str = "the data") -> None:
        """Check, making the env once, that it provides every observation feature with its shape and, given
        `action_dim` (from `source`, e.g. a dataset), that it takes actions of that size.

        Raises:
            ValueError: a missing key or another shape (naming the key, the shape found and expected), or
                another action size.
        """
        shapes, action_shape = self.env_shapes()
        check_features(self.obs_features, shapes, f"env {self.env_id}")
        expected = int(np.prod(action_shape))
        if action_dim is not None and action_dim != expected:
            raise ValueError(f"{source}: `{self.action_key}` has dimension {action_dim}, but {self.env_id} "
                             f"takes actions of dimension {expected}")


def _env_parameters(env_id: str) -> set[str]:
    """The keyword arguments the env registered as `env_id` takes (empty if unknown)."""
    import inspect

    import gymnasium as gym

    try:
        entry = gym.spec(env_id).entry_point
        if isinstance(entry, str):
            from gymnasium.envs.registration import load_env_creator

            entry = load_env_creator(entry)
        return set(inspect.signature(entry).parameters)
    except Exception:  # noqa: BLE001 - an unknown env takes nothing we know of
        return set()


def task_from_config(cfg: Mapping) -> Task:
    """The `Task` of a hydra `task:` section (resolved).

    Raises:
        ValueError: an unknown key (named), a missing name/obs_features, a bad feature spec, or an unknown
            metric.
    """
    cfg = dict(cfg)
    unknown = set(cfg) - TASK_KEYS
    if unknown:
        raise ValueError(f"task config has unknown keys {sorted(unknown)}; a task takes {sorted(TASK_KEYS)}")
    for key in ("name", "obs_features"):
        if key not in cfg:
            raise ValueError(f"task config needs `{key}`")
    from_dataset = cfg["obs_features"] == FROM_DATASET
    try:
        features = {} if from_dataset else parse_features(cfg["obs_features"])
    except ValueError as exc:
        raise ValueError(f"task {cfg['name']}: {exc}") from None
    metric = cfg.get("metric", "success_rate")
    if metric not in METRICS:
        raise ValueError(f"task {cfg['name']}: metric must be one of {list(METRICS)}, got {metric!r}")
    expert = cfg.get("expert")
    if expert is not None and not (isinstance(expert, Mapping) and "_target_" in expert):
        raise ValueError(f"task {cfg['name']}: expert must be a mapping with a `_target_`, got {expert!r:.80}")
    return Task(name=str(cfg["name"]), env_id=cfg.get("env_id"), env_kwargs=dict(cfg.get("env_kwargs") or {}),
                obs_features=features, action_key=str(cfg.get("action_key", "action")), dataset=cfg.get("dataset"),
                expert=None if expert is None else dict(expert), keep_failed=bool(cfg.get("keep_failed", True)),
                metric=metric, ros=dict(cfg.get("ros") or {}), training=dict(cfg.get("training") or {}),
                features_from_dataset=from_dataset)


def load_task(section, world=None) -> Task:
    """The `Task` of an app's hydra `task:` section (a DictConfig, resolved here), in the app's `world:`
    section (None: the nominal world; see `Task.with_world`).

    Raises:
        UserError: as `task_from_config` and `Task.with_world`, in one line.
    """
    from omegaconf import OmegaConf

    try:
        task = task_from_config(OmegaConf.to_container(section, resolve=True))
        if world is not None:
            task = task.with_world(OmegaConf.to_container(world, resolve=True))
        return task
    except ValueError as exc:
        raise UserError(str(exc)) from None
