"""The `robolearn` command: each subcommand is a hydra app over the configs in `configs/`.

    robolearn train [key=value ...]             train a Diffusion Policy, evaluate it
    robolearn eval checkpoint=PATH [...]        evaluate a checkpoint in simulation
    robolearn train-value [key=value ...]       offline Q-function (Cal-QL / IQL) for re-ranking
    robolearn deploy checkpoint=PATH [...]      the ROS 2 node graph as processes (no ROS 2 install needed)
    robolearn collect [key=value ...]           run the scripted expert, write a zarr dataset
    robolearn dataset info PATH [key=value ...] describe a replay buffer
    robolearn dataset verify PATH               check every chunk and checksum of a replay buffer
    robolearn dataset import format=F source=PATH [...]   LeRobot / robomimic / ROS 2 bag -> zarr
    robolearn dataset export format=F source=PATH output=PATH   zarr -> LeRobot v3.0 / ROS 2 bag

Hydra overrides follow the subcommand, e.g. `robolearn collect n_episodes=50 seed=1`;
`robolearn <subcommand> --help` shows the config, `--cfg job` prints it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from robolearn.datasets.replay_buffer import DatasetError
from robolearn.errors import CheckpointError, UserError
from robolearn.outputs import is_user_os_error
from robolearn.paths import config_dir

USAGE = """usage: robolearn <command> [hydra overrides ...]

commands:
  train                 train a Diffusion Policy (collects the default dataset if missing), evaluate it
  eval checkpoint=PATH  success rate on fixed seeds, an mp4 and a JSON results file
                        (value=Q_CHECKPOINT rerank.k=16: re-rank K sampled chunks with a Q-function)
  train-value           offline Q-function over action chunks (Cal-QL or IQL) on a zarr dataset
  finetune checkpoint=PATH   DPPO fine-tuning in simulation (policy=gaussian: the Gaussian PPO baseline)
  collect               run the scripted Lift expert and write a zarr demonstration dataset
  record                teleoperate a robot (sim, so101, koch) and record episodes
  calibrate robot=so101 measure a bus arm's zero pose and joint ranges into a calibration YAML
  deploy checkpoint=PATH     run the ROS 2 node graph (graph=sim|robot|teleop_record) as processes over DDS
  replay dataset=PATH   play a recorded episode back on a robot
  sysid dataset=PATH    fit the arm's world parameters (masses, damping, armature, gains, delay) to recordings
  dataset info PATH     print episodes, steps, keys (shape, dtype) and per-key statistics
  dataset verify PATH   check every chunk and recorded checksum (exit 2 if the dataset is damaged)
  dataset import format=lerobot|robomimic|rosbag source=PATH [output=PATH]
                        a dataset from LeRobot (v3.0, v2.x), robomimic HDF5 or a ROS 2 bag -> robolearn zarr
  dataset export format=lerobot|rosbag source=PATH output=PATH
                        a robolearn dataset -> a LeRobot v3.0 folder (parquet + mp4) or a ROS 2 bag (mcap)

Examples:
  robolearn train                        # the main job: dataset, training, evaluation, video
  robolearn eval checkpoint=runs/lift_diffusion_unet/checkpoints/best num_inference_steps=5
  robolearn collect                      # the default dataset: 200 expert episodes
  robolearn collect n_episodes=20 output=data/small.zarr
  robolearn dataset info data/lift_expert.zarr
  robolearn collect failure_rate=0.5 output=data/lift_mixed.zarr     # mixed-quality demonstrations
  robolearn train-value dataset=data/lift_mixed.zarr algorithm=cal_ql
  robolearn eval checkpoint=runs/.../checkpoints/best value=runs/lift_value_cal_ql/checkpoints/latest rerank.k=16
  robolearn train world=randomized       # domain randomization (configs/world); eval world=real_proxy
  robolearn sysid dataset=data/recorded.zarr name=my_arm   # then: robolearn eval world=my_arm ...
  robolearn dataset import format=lerobot source=~/so101_pick output=data/so101_pick.zarr image_size=[96,96]
  robolearn train task=imported dataset=data/so101_pick.zarr   # train on it (features read from the dataset)
  robolearn dataset export format=lerobot source=data/lift_expert.zarr output=exports/lift_expert
"""


#: Errors that describe bad input (a path, a dataset, a checkpoint, an option, a dataset another
#: process is writing): printed as one line, exit code 2.
USER_ERRORS = (UserError, DatasetError, CheckpointError, FileNotFoundError, FileExistsError)


def is_user_error(exc: BaseException) -> bool:
    """One of `USER_ERRORS`, or an OS error the user can fix (permissions, a read-only or full disk, ...)."""
    return isinstance(exc, USER_ERRORS) or is_user_os_error(exc)


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (newlines folded), prefixed by its type unless it is a user error."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if is_user_error(exc) else f"{type(exc).__name__}: {text}"


def config_error(exc: BaseException) -> str | None:
    """One line for an error hydra raised while composing a command's config from its yaml files and the
    command line (an unknown option, a malformed override, an unknown config group option, a yaml file that
    does not parse), or None if `exc` is not one of those."""
    import yaml
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(exc, (HydraException, OmegaConfBaseException, yaml.YAMLError)):
        return None
    parts = [str(exc)]
    if isinstance(exc.__cause__, OmegaConfBaseException):
        parts.append(str(exc.__cause__).split("\n")[0])  # the key it concerns, without omegaconf's object dump
    lines = [line.strip() for part in parts for line in part.splitlines()]
    # hydra's hints point at its own grammar page and at `+key=`, which robolearn's configs do not take
    keep = [line for line in lines if line and not line.startswith(("See https://", "To append to your config",
                                                                     "Set the environment variable HYDRA_FULL"))]
    text = " ".join(" ".join(keep).split()).split(" Config search path:")[0]  # hydra's provider list
    return text or type(exc).__name__


def write_traceback(prog: str) -> Path:
    """Write the current exception's full traceback to a new file in the temp folder; returns its path."""
    name = f"robolearn-{prog.split()[-1]}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    path = Path(tempfile.gettempdir()) / name
    path.write_text(f"{' '.join(sys.argv)}\n\n{traceback.format_exc()}")
    return path


def run_hydra_app(prog: str, config_name: str, task: Callable[[DictConfig], object], args: list[str]) -> None:
    """Run `task` as a hydra app with `args` as its command line (overrides and hydra flags).

    Before the task, the world section is checked (`check_world_choice`).

    Raises:
        SystemExit(2): the config could not be composed from the yaml files and `args` (`config_error`: an
            unknown option or group option, a malformed override, a yaml file that does not parse), or the task
            raised a user error (`is_user_error`); either is printed as one line.
        SystemExit(1): any other exception (an internal error): a one-line message and the path of
            a file holding the full traceback are printed.
    """

    def report(exc: BaseException) -> NoReturn:
        if is_user_error(exc):
            print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
            raise SystemExit(2) from None
        where = write_traceback(prog)
        print(f"{prog}: internal error: {one_line(exc)}\n(full traceback: {where})", file=sys.stderr)
        raise SystemExit(1) from None

    @hydra.main(config_path=str(config_dir()), config_name=config_name, version_base=None)
    def app(cfg: DictConfig):
        _restore_env(saved_env)  # what the task starts (nodes, workers) sees the user's environment
        try:
            check_world_choice(cfg)
            return task(cfg)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - the last resort: no traceback on the user's screen
            report(exc)

    saved = sys.argv
    sys.argv = [prog, *args]
    # ./configs (where sysid writes worlds) is searched when it exists; its absence is normal, not worth a warning
    warnings.filterwarnings("ignore", message=r"provider=hydra\.searchpath in main, path=configs is not available")
    # hydra prints its own composition errors (many lines, exit 1) unless told to raise them
    saved_env = {"HYDRA_FULL_ERROR": os.environ.get("HYDRA_FULL_ERROR")}
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        app()
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - composing the config failed before the task ran
        line = config_error(exc)
        if line is None:
            report(exc)
        print(f"{prog}: error: {line}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        sys.argv = saved
        _restore_env(saved_env)


def _restore_env(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def check_world_choice(cfg: DictConfig) -> None:
    """A command's `world` section by one rule: a world's name is its file's. A world yaml of the working
    directory (`./configs/world/<name>.yaml`, where `robolearn sysid` writes) may not share its name with a
    shipped world (hydra would silently use the shipped one); a yaml without `name:` is named after its file
    (and without `tag:` gets `_<name>`, so its default datasets and runs are its own); a `name:` that differs from
    the file's is refused (results would carry the wrong name).

    Raises:
        UserError: a shadowed shipped world, a mismatched name, or a world the file describes badly (an unknown
            group or parameter, a value out of range), each naming the file.
    """
    from hydra.core.hydra_config import HydraConfig

    if "world" not in cfg or not HydraConfig.initialized():
        return
    choice = HydraConfig.get().runtime.choices.get("world")
    if not choice:
        return
    shipped = config_dir() / "world" / f"{choice}.yaml"
    local = Path("configs") / "world" / f"{choice}.yaml"
    if shipped.is_file() and local.is_file() and not shipped.samefile(local) and \
            _yaml_or_none(local) != _yaml_or_none(shipped):
        raise UserError(f"{local} has the name of a shipped world ({choice}), which would be used instead of it; "
                        f"rename the file (e.g. {local.with_name('my_' + local.name)}) and its `name:`")
    source = local if local.is_file() else shipped
    if not isinstance(cfg.world, DictConfig):
        raise UserError(f"world={choice}: {source} must map `name` and parameter groups to values, got "
                        f"{OmegaConf.to_yaml(cfg.world).strip()!r:.80}")
    name = cfg.world.get("name")
    if name is not None and str(name) != choice and "world.name" not in " ".join(HydraConfig.get().overrides.task):
        raise UserError(f"{source} says `name: {name}`, but a world is named after its file ({choice}); "
                        f"set `name: {choice}` (or rename the file)")
    with open_dict(cfg):
        if name is None:
            cfg.world.name = choice
        if cfg.world.get("tag") is None:  # default datasets and runs of this world never reuse the nominal ones
            cfg.world.tag = f"_{choice}"
    from robolearn.sim.world import World

    try:
        World(OmegaConf.to_container(cfg.world, resolve=True))
    except ValueError as exc:
        raise UserError(f"{source}: {exc}") from None


def _yaml_or_none(path: Path):
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _commands() -> dict[str, tuple[str, Callable[[DictConfig], object]]]:
    from robolearn.calibrate import calibrate
    from robolearn.collect import collect
    from robolearn.convert import dataset_export, dataset_import
    from robolearn.datasets.info import dataset_info, dataset_verify
    from robolearn.deploy import deploy
    from robolearn.evaluate import run_eval
    from robolearn.finetune import finetune
    from robolearn.record import record
    from robolearn.replay import replay
    from robolearn.sysid import sysid
    from robolearn.train import train
    from robolearn.train_value import train_value

    return {"collect": ("collect", collect), "dataset info": ("dataset_info", dataset_info),
            "dataset verify": ("dataset_info", dataset_verify),
            "dataset import": ("dataset_import", dataset_import), "dataset export": ("dataset_export", dataset_export),
            "train": ("train", train), "eval": ("eval", run_eval), "finetune": ("finetune", finetune),
            "record": ("record", record), "replay": ("replay", replay), "calibrate": ("calibrate", calibrate),
            "train-value": ("train_value", train_value),
            "deploy": ("deploy", deploy), "sysid": ("sysid", sysid)}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    commands = _commands()
    name = argv[0]
    rest = argv[1:]
    if name == "dataset":
        if not rest or rest[0] not in ("info", "verify", "import", "export"):
            print("usage: robolearn dataset info|verify PATH [overrides]\n"
                  "       robolearn dataset import|export format=... source=PATH [output=PATH]", file=sys.stderr)
            return 2
        name, rest = f"dataset {rest[0]}", rest[1:]
        # `robolearn dataset info PATH` is shorthand for the override `path=PATH`.
        if name in ("dataset info", "dataset verify") and rest and "=" not in rest[0] and not rest[0].startswith("-"):
            rest = [f"path={_quote_override(rest[0])}", *rest[1:]]
    if name not in commands:
        print(f"robolearn: unknown command {name!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    config_name, task = commands[name]
    if not {"-m", "--multirun"} & set(rest):  # a multirun's `output=a,b` is a sweep: hydra's to read
        rest = [quote_path_override(arg) for arg in rest]
    run_hydra_app(f"robolearn {name}", config_name, task, rest)
    return 0


#: options whose values are paths: given as they are (spaces, non-ASCII letters, parentheses, '=', ','), even where
#: hydra's override grammar would not read them unquoted
PATH_OPTIONS = {"source", "output", "dataset", "checkpoint", "run_dir", "path", "value", "data_dir", "output_dir",
                "report", "calibration"}


def quote_path_override(arg: str) -> str:
    """`key=value` with the value quoted when `key` is a path option (`PATH_OPTIONS`) and hydra's grammar would
    not read the value as the text given (`source=données/x` and `output=run (2)` do not parse; `output=a,b` is a
    sweep, `output=123` a number, `output=a\\ b` loses its backslash); `null`, a value the user quoted and an
    interpolation (`${data_dir}/x.zarr`) stay as they are, and so does any other argument."""
    key, sep, value = arg.partition("=")
    if not sep or arg.startswith("-") or key.lstrip("+~").rsplit(".", 1)[-1] not in PATH_OPTIONS:
        return arg
    if value == "null" or (len(value) >= 2 and value[0] == value[-1] and value[0] in "'\""):
        return arg
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        if OverridesParser.create().parse_override(arg).value() == value:
            return arg
    except HydraException:
        pass
    return f"{key}={_quote_override(value)}"


def _quote_override(value: str) -> str:
    """Quote a path for a hydra override so characters like '=' or ',' survive. In hydra's quoted strings a
    backslash is literal except in a run that ends at a quote or at the string's end, which is doubled."""
    import re

    escaped = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value)
    return f"'{escaped}'"


if __name__ == "__main__":
    sys.exit(main())
