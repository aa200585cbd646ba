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
from collections.abc import Callable
from pathlib import Path

import hydra
from omegaconf import DictConfig

from robolearn.datasets.replay_buffer import DatasetError
from robolearn.errors import CheckpointError, UserError
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


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (newlines folded), prefixed by its type unless it is a user error."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, USER_ERRORS) else f"{type(exc).__name__}: {text}"


def write_traceback(prog: str) -> Path:
    """Write the current exception's full traceback to a new file in the temp folder; returns its path."""
    name = f"robolearn-{prog.split()[-1]}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    path = Path(tempfile.gettempdir()) / name
    path.write_text(f"{' '.join(sys.argv)}\n\n{traceback.format_exc()}")
    return path


def run_hydra_app(prog: str, config_name: str, task: Callable[[DictConfig], object], args: list[str]) -> None:
    """Run `task` as a hydra app with `args` as its command line (overrides and hydra flags).

    Raises:
        SystemExit(2): the task raised one of `USER_ERRORS`; its message is printed as one line.
        SystemExit(1): any other exception (an internal error): a one-line message and the path of
            a file holding the full traceback are printed.
    """

    @hydra.main(config_path=str(config_dir()), config_name=config_name, version_base=None)
    def app(cfg: DictConfig):
        try:
            return task(cfg)
        except USER_ERRORS as exc:
            print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
            raise SystemExit(2) from None
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - the last resort: no traceback on the user's screen
            where = write_traceback(prog)
            print(f"{prog}: internal error: {one_line(exc)}\n(full traceback: {where})", file=sys.stderr)
            raise SystemExit(1) from None

    saved = sys.argv
    sys.argv = [prog, *args]
    try:
        app()
    finally:
        sys.argv = saved


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
    run_hydra_app(f"robolearn {name}", config_name, task, rest)
    return 0


def _quote_override(value: str) -> str:
    """Quote a path for a hydra override so characters like '=' or ',' survive."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


if __name__ == "__main__":
    sys.exit(main())
