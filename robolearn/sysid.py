"""`robolearn sysid`: fit world parameters to a recorded dataset and write the fitted world config."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from robolearn.datasets.replay_buffer import ReplayBuffer
from robolearn.errors import UserError
from robolearn.sim.sysid import Recording, identify

#: the first words of every world config `robolearn sysid` writes (overwrite=true replaces only such a file)
HEADER = "# Fitted by `robolearn sysid`"


def load_recordings(path: str | Path, episodes: int | None = None) -> tuple[list[Recording], float | None]:
    """The episodes of a `robolearn record` dataset as `Recording`s, and its `rate_hz` attribute (None if absent).

    Raises:
        UserError: the dataset lacks `joint_pos` or `action`, or has no episodes.
    """
    buffer = ReplayBuffer.open(path)
    with buffer:
        missing = {"joint_pos", "action"} - set(buffer.keys)
        if missing:
            raise UserError(f"{path}: system identification needs {sorted(missing)} (measured joint positions and "
                            "the commands sent, as `robolearn record` stores them)")
        n = buffer.n_episodes if episodes is None else min(int(episodes), buffer.n_episodes)
        if n < 1:
            raise UserError(f"{path} has no episodes")
        cube = {"cube_pos", "cube_quat"} <= set(buffer.keys)
        recordings = []
        for i in range(n):
            ep = buffer.get_episode(i, ["joint_pos", "action", *(["cube_pos", "cube_quat"] if cube else [])])
            recordings.append(Recording(ep["joint_pos"], ep["action"], ep["cube_pos"][0] if cube else None,
                                        ep["cube_quat"][0] if cube else None))
        rate = buffer.attrs.get("robolearn", {}).get("rate_hz")
    return recordings, rate


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder, so no half-written file remains."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sysid(cfg: DictConfig) -> Path:
    """Hydra task `robolearn sysid` (configs/sysid.yaml). Returns the written world config's path.

    Raises:
        UserError: a missing or unsuitable dataset, an existing output without overwrite=true, or a bad
            parameter/joint name.
    """
    output = Path(cfg.output)
    if output.exists() and not cfg.overwrite:
        raise UserError(f"{output} exists; pass overwrite=true or another name=/output=")
    if output.exists() and not (output.is_file() and output.read_text(errors="replace").startswith(HEADER)):
        raise UserError(f"{output} was not written by robolearn sysid; overwrite=true replaces only a fitted world "
                        "(nothing was changed)")
    if not Path(cfg.dataset).exists():
        raise UserError(f"dataset not found: {cfg.dataset}")
    recordings, rate = load_recordings(cfg.dataset, cfg.episodes)
    rate_hz = float(cfg.rate_hz or rate or 20.0)
    bar = tqdm(total=int(cfg.max_iter), desc="sysid", unit="it")

    def progress(iteration: int, rms: float) -> None:
        bar.n = min(iteration, bar.total)
        bar.set_postfix(rms_rad=f"{rms:.2e}")
        bar.refresh()

    print(f"robolearn sysid: {len(recordings)} episodes of {cfg.dataset} at {rate_hz:g} Hz; fitting "
          f"{list(cfg.parameters)} (a delay scan, then least squares)", flush=True)
    try:
        result = identify(recordings, rate_hz, list(cfg.parameters), list(cfg.joints), int(cfg.max_iter), progress)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    finally:
        bar.close()
    world = result.world_config(str(cfg.name))
    header = (f"{HEADER} to {len(recordings)} episodes of {cfg.dataset}: joint tracking RMS "
              f"{result.residual_before:.2e} rad (nominal) -> {result.residual_after:.2e} rad (fitted)\n")
    write_atomic(output, header + yaml.safe_dump(world, sort_keys=False))
    report = {"dataset": str(cfg.dataset), "episodes": len(recordings), "rate_hz": rate_hz, "values": result.values,
              "rms_before_rad": result.residual_before, "rms_after_rad": result.residual_after,
              "per_joint_before_rad": result.per_joint_before, "per_joint_after_rad": result.per_joint_after,
              "iterations": result.iterations, "seconds": result.seconds, "world": world,
              "config": OmegaConf.to_container(cfg, resolve=True)}
    write_atomic(Path(cfg.report), json.dumps(report, indent=1))
    print(f"tracking RMS {result.residual_before:.2e} -> {result.residual_after:.2e} rad over {list(cfg.joints)}")
    for key, value in result.values.items():
        print(f"  {key:16s} {value:.4f}")
    print(f"wrote {output} (use world={cfg.name}) and {cfg.report} in {result.seconds:.0f} s")
    return output
