"""`robolearn sysid`: fit world parameters to a recorded dataset and write the fitted world config."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from robolearn.config_checks import Bool, Float, Int, check_config
from robolearn.datasets.replay_buffer import ReplayBuffer
from robolearn.errors import UserError
from robolearn.outputs import check_apart, check_writable, write_text_or_keep
from robolearn.paths import config_dir
from robolearn.sim.arm import JOINT_NAMES
from robolearn.sim.sysid import Recording, identify

#: the first words of every world config `robolearn sysid` writes (overwrite=true replaces only such a file)
HEADER = "# Fitted by `robolearn sysid`"


def load_recordings(path: str | Path, episodes: int | None = None) -> tuple[list[Recording], float | None]:
    """The episodes of a `robolearn record` dataset as `Recording`s, and its `rate_hz` attribute (None if absent).
    Episodes of a single step (nothing to replay) are left out, and said so.

    Raises:
        UserError: the dataset lacks `joint_pos` or `action`, has no episode of two steps or more, or records
            another number of joints than the simulated arm has (naming the episode and the shapes).
    """
    buffer = ReplayBuffer.open(path)
    with buffer:
        missing = {"joint_pos", "action"} - set(buffer.keys)
        if missing:
            raise UserError(f"{path}: system identification needs {sorted(missing)} (measured joint positions and "
                            "the commands sent, as `robolearn record` stores them)")
        n = buffer.n_episodes if episodes is None else min(int(episodes), buffer.n_episodes)
        cube = {"cube_pos", "cube_quat"} <= set(buffer.keys)
        recordings, short = [], []
        for i in range(n):
            if buffer.episode_lengths[i] < 2:
                short.append(i)
                continue
            ep = buffer.get_episode(i, ["joint_pos", "action", *(["cube_pos", "cube_quat"] if cube else [])])
            try:
                recordings.append(Recording(ep["joint_pos"], ep["action"], ep["cube_pos"][0] if cube else None,
                                            ep["cube_quat"][0] if cube else None))
            except ValueError as exc:
                raise UserError(f"{path} episode {i}: {exc} (the simulated arm's joints: {list(JOINT_NAMES)})") \
                    from None
        if short:
            print(f"robolearn sysid: left out {len(short)} episode(s) of one step (nothing to replay): {short[:10]}")
        if not recordings:
            raise UserError(f"{path} has no episode of two steps or more to fit to ({n} episode(s) read)")
        rate = buffer.attrs.get("robolearn", {}).get("rate_hz")
    return recordings, rate


#: what `robolearn sysid` takes (configs/sysid.yaml)
SYSID_RULES = {"episodes": Int(min=1, optional=True), "rate_hz": Float(min=0, min_open=True, optional=True),
               "max_iter": Int(min=1, max=100000), "overwrite": Bool()}
#: a fitted world's name: a file name in configs/world (no folders)
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def check_world_name(name: object) -> str:
    """A name `robolearn sysid` may give a world: a plain file name, not a shipped world's.

    Raises:
        UserError: a name with a folder part or odd characters, or a shipped world's name (its file would be
            shadowed by the shipped one, so the fit would be silently ignored).
    """
    name = str(name)
    if not NAME.fullmatch(name) or name.endswith(".yaml"):
        raise UserError(f"name={name!r}: a world's name is a plain file name (letters, digits, _ . -), e.g. my_arm")
    shipped = sorted(p.stem for p in (config_dir() / "world").glob("*.yaml"))
    if name in shipped:
        raise UserError(f"name={name}: {shipped} are robolearn's shipped worlds; give the fitted world a name of its "
                        "own, e.g. name=my_arm")
    return name


def sysid(cfg: DictConfig) -> Path:
    """Hydra task `robolearn sysid` (configs/sysid.yaml). Returns the written world config's path.

    Raises:
        UserError: a missing or unsuitable dataset, an existing output without overwrite=true, or a bad
            parameter/joint name.
    """
    check_config(cfg, SYSID_RULES)
    check_world_name(cfg.name)
    output = Path(cfg.output)
    if output.exists() and not cfg.overwrite:
        raise UserError(f"{output} exists; pass overwrite=true or another name=/output=")
    if output.exists() and not (output.is_file() and output.read_text(errors="replace").startswith(HEADER)):
        raise UserError(f"{output} was not written by robolearn sysid; overwrite=true replaces only a fitted world "
                        "(nothing was changed)")
    if not Path(cfg.dataset).exists():
        raise UserError(f"dataset not found: {cfg.dataset}")
    check_apart({"output": output, "report": cfg.report}, {"dataset": cfg.dataset})
    check_writable(output, "output")  # before the fit: its result is never lost to an unwritable folder
    check_writable(cfg.report, "report")
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
    write_text_or_keep(output, header + yaml.safe_dump(world, sort_keys=False), "fitted world")
    report = {"dataset": str(cfg.dataset), "episodes": len(recordings), "rate_hz": rate_hz, "values": result.values,
              "rms_before_rad": result.residual_before, "rms_after_rad": result.residual_after,
              "per_joint_before_rad": result.per_joint_before, "per_joint_after_rad": result.per_joint_after,
              "iterations": result.iterations, "seconds": result.seconds, "world": world,
              "config": OmegaConf.to_container(cfg, resolve=True)}
    write_text_or_keep(Path(cfg.report), json.dumps(report, indent=1), "sysid report")
    print(f"tracking RMS {result.residual_before:.2e} -> {result.residual_after:.2e} rad over {list(cfg.joints)}")
    for key, value in result.values.items():
        print(f"  {key:16s} {value:.4f}")
    print(f"wrote {output} (use world={cfg.name}) and {cfg.report} in {result.seconds:.0f} s")
    return output
