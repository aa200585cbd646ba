"""`robolearn collect`: run the task's scripted expert and write demonstrations to a zarr replay buffer."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from robolearn.config_checks import Bool, Int, check_config
from robolearn.datasets.collection import collect_dataset
from robolearn.outputs import check_writable
from robolearn.tasks import load_task

#: types and ranges of the values `robolearn collect` takes (configs/collect.yaml)
COLLECT_RULES = {"n_episodes": Int(min=1), "seed": Int(), "image_obs": Bool(), "overwrite": Bool()}


def collect(cfg: DictConfig) -> Path:
    """Hydra task `robolearn collect` (see `collect_dataset` and configs/collect.yaml); the expert and its
    settings come from the task (`task.expert`, e.g. `task.expert.failure_rate=0.3`).

    Raises:
        UserError: a value of the wrong type or range (`COLLECT_RULES`), a bad task config, or as
            `collect_dataset`.
    """
    check_config(cfg, COLLECT_RULES)
    check_writable(cfg.output, "output")
    return collect_dataset(cfg.output, load_task(cfg.task, cfg.world), n_episodes=int(cfg.n_episodes), seed=int(cfg.seed),
                           image_obs=bool(cfg.image_obs), overwrite=bool(cfg.overwrite))
