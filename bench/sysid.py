"""System identification on a synthetic "real arm": record it, fit it, compare with the truth.

    python bench/sysid.py [--episodes 20] [--workdir /tmp/robolearn_sysid]

1. Writes a world config `sysid_truth` with known perturbed parameters (masses x1.2, damping x1.5, armature x1.3,
   servo gain x0.85, a 30 ms command delay) into <workdir>/configs/world.
2. Records --episodes episodes of the scripted expert on the simulated arm in that world, as a user records a real
   arm (`robolearn record device=expert world=sysid_truth realtime=false`).
3. Fits them (`robolearn sysid`), and prints each fitted parameter against the truth (targets: within 10%; the
   delay within one physics step, 2 ms), the tracking RMS before and after, and the time taken.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

TRUTH = {"name": "sysid_truth", "tag": "_sysid_truth",
         "physics": {"mass_scale": 1.2, "damping_scale": 1.5, "armature_scale": 1.3, "kp_scale": 0.85},
         "latency": {"action_delay": 0.03}}


def robolearn(*args: str, cwd: Path) -> str:
    print("$ robolearn " + " ".join(args), flush=True)
    proc = subprocess.run([sys.executable, "-m", "robolearn", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stdout + proc.stderr)
    return proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--workdir", default="/tmp/robolearn_sysid")
    args = parser.parse_args()
    work = Path(args.workdir)
    (work / "configs" / "world").mkdir(parents=True, exist_ok=True)
    (work / "configs" / "world" / "sysid_truth.yaml").write_text(yaml.safe_dump(TRUTH))
    recording = work / "recording.zarr"
    if not recording.exists():
        robolearn("record", "device=expert", "world=sysid_truth", f"max_episodes={args.episodes}", "realtime=false",
                  f"output={recording}", cwd=work)
    t0 = time.perf_counter()
    robolearn("sysid", f"dataset={recording}", "name=sysid_fitted", "overwrite=true", f"report={work}/report.json",
              cwd=work)
    seconds = time.perf_counter() - t0
    report = json.loads((work / "report.json").read_text())
    truth = {**TRUTH["physics"], **TRUTH["latency"]}
    print(f"\n{report['episodes']} episodes; tracking RMS {report['rms_before_rad']:.2e} rad (nominal model) -> "
          f"{report['rms_after_rad']:.2e} rad (fitted); {seconds:.0f} s")
    print(f"{'parameter':16s}{'truth':>9s}{'fitted':>10s}{'error':>9s}")
    for key, value in report["values"].items():
        error = (f"{1e3 * (value - truth[key]):+.2f} ms" if key == "action_delay"
                 else f"{100 * (value / truth[key] - 1):+.1f}%")
        print(f"{key:16s}{truth[key]:9.3f}{value:10.4f}{error:>9s}")


if __name__ == "__main__":
    main()
