"""Registers robolearn's simulated tasks with gymnasium, from the tasks' own yaml files.

Every `configs/task/<name>.yaml` with an `env_registration:` block ({entry_point, max_episode_steps, ...},
the arguments of `gymnasium.register`) registers its `env_id`, so a new task is a new env module plus a
yaml. Entry points are strings: nothing is imported until an env is made. Gymnasium 1.x has no plugin entry
point any more; `robolearn/_gym_hook.py` (loaded by the installed `robolearn-gymnasium.pth`) calls
`register_envs()` when gymnasium is imported, so `gym.make("robolearn/Lift-v0")` works with no import of
robolearn.
"""

from __future__ import annotations

import yaml

from robolearn.paths import config_dir


def task_registrations() -> dict[str, dict]:
    """{env id: gymnasium.register keyword arguments} of every task yaml that registers an env.

    Raises:
        ValueError: a task yaml whose env_registration is not a mapping with an `entry_point`.
    """
    out = {}
    for path in sorted((config_dir() / "task").glob("*.yaml")):
        task = yaml.safe_load(path.read_text()) or {}
        spec = task.get("env_registration")
        if spec is None:
            continue
        if not isinstance(spec, dict) or not isinstance(spec.get("entry_point"), str):
            raise ValueError(f"{path}: env_registration must be a mapping with an entry_point string")
        out[str(task["env_id"])] = dict(spec)
    return out


def register_envs() -> None:
    """Register every task env that gymnasium does not know yet (idempotent)."""
    from gymnasium.envs.registration import (  # (works while gymnasium is still importing)
        register,
        registry,
    )

    for env_id, spec in task_registrations().items():
        if env_id not in registry:
            register(env_id, **spec)
