"""`robolearn dataset info PATH`: describe a replay buffer."""

from __future__ import annotations

import numpy as np
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from robolearn.datasets.replay_buffer import DatasetError, ReplayBuffer, VerifyReport
from robolearn.errors import UserError

STATS_BLOCK = 65536  # steps read at a time, so image datasets need not fit in memory


def key_statistics(buffer: ReplayBuffer, key: str) -> dict[str, np.ndarray]:
    """Per-dimension min, max, mean, std of `data/<key>` over committed steps.

    Dimensions are the flattened per-step shape, except for images (ndim 4), which get
    one value per channel. Returns {stat: (D,) float64}.
    """
    arr = buffer.array(key)
    n = buffer.n_steps
    dims = arr.shape[-1] if arr.ndim == 4 else int(np.prod(arr.shape[1:], dtype=int))
    count, total, total_sq = 0, np.zeros(dims), np.zeros(dims)
    lo, hi = np.full(dims, np.inf), np.full(dims, -np.inf)
    for start in range(0, n, STATS_BLOCK):
        block = np.asarray(arr[start:min(n, start + STATS_BLOCK)], dtype=np.float64).reshape(-1, dims)
        count += len(block)
        total += block.sum(0)
        total_sq += (block**2).sum(0)
        lo, hi = np.minimum(lo, block.min(0)), np.maximum(hi, block.max(0))
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(total_sq / max(count, 1) - mean**2, 0.0))
    return {"min": lo, "max": hi, "mean": mean, "std": std}


def _fmt(values: np.ndarray, limit: int = 8) -> str:
    text = " ".join(f"{v:.3g}" for v in values[:limit])
    return text + (" ..." if len(values) > limit else "")


def verified(buffer: ReplayBuffer, notes: bool) -> VerifyReport:
    """`buffer.verify()`, printing each problem (and each note if `notes`) on a line of its own.

    Raises:
        DatasetError: the dataset is damaged (after the problems are printed).
    """
    report = buffer.verify()
    for line in ([f"note: {n}" for n in report.notes] if notes else []) + [f"problem: {p}" for p in report.problems]:
        print(line)
    if not report.ok:
        raise DatasetError(f"{buffer.path}: {len(report.problems)} problem(s) found; do not train on it")
    return report


def dataset_info(cfg: DictConfig) -> None:
    """Hydra task: print episodes, steps, keys (per-step shape, dtype) and statistics.

    The whole dataset is verified first (`ReplayBuffer.verify`): statistics of a damaged dataset are
    never shown as if it were fine.

    Raises:
        UserError: no path given.
        DatasetError: the dataset is damaged (each problem is printed first).
    """
    if cfg.path is None:
        raise UserError("give the dataset path: robolearn dataset info PATH")
    buffer = ReplayBuffer.open(cfg.path)
    try:
        report = verified(buffer, notes=False)
    except DatasetError:
        buffer.close()
        raise
    console = Console(width=int(cfg.width))
    lengths = buffer.episode_lengths
    fmt = f"zarr format {buffer.root.metadata.zarr_format}"
    console.print(f"[bold]{buffer.path}[/bold] ({fmt})")
    console.print(f"episodes: {buffer.n_episodes}   steps: {buffer.n_steps}")
    if len(lengths):
        console.print(f"episode length: min {lengths.min()}  mean {lengths.mean():.1f}  max {lengths.max()}")
    if "success" in buffer.keys and buffer.n_episodes:
        last = buffer.array("success").get_coordinate_selection(buffer.episode_ends - 1)
        console.print(f"successful episodes: {int(np.sum(last))}/{buffer.n_episodes} ({np.mean(last):.1%})")
    table = Table(title="data/ keys (per-step shape; statistics per dimension, images per channel)")
    for col in ("key", "shape", "dtype", "chunks", "min", "max", "mean", "std"):
        table.add_column(col, overflow="fold")
    for key in buffer.keys:
        arr = buffer.array(key)
        numeric = np.dtype(arr.dtype).kind in "biuf"  # a foreign store may hold text
        stats = key_statistics(buffer, key) if buffer.n_steps and numeric else None
        row = [key, str(tuple(arr.shape[1:])), str(arr.dtype), str(tuple(arr.chunks))]
        row += [_fmt(stats[s]) for s in ("min", "max", "mean", "std")] if stats else ["-"] * 4
        table.add_row(*row)
    console.print(table)
    source = buffer.attrs.get("source")
    if isinstance(source, dict) and "format" in source:
        console.print(f"imported from {source['format']} {source.get('version', '')} {source.get('path', '')} "
                      f"on {source.get('imported_at', '?')}"
                      + (f" at {source['fps']} Hz" if source.get("fps") else ""))
        console.print("key map: " + ", ".join(f"{k} -> {v}" for k, v in source.get("keys", {}).items()))
    if buffer.attrs:
        console.print(f"attributes: {buffer.attrs}")
    console.print(f"integrity: verified, {report.n_checksummed}/{report.n_episodes} episodes against their checksums"
                  + "".join(f"; {note}" for note in report.notes))
    buffer.close()


def dataset_verify(cfg: DictConfig) -> None:
    """Hydra task `robolearn dataset verify PATH`: check every chunk and recorded checksum of a dataset.

    Prints what was checked; each problem on a line of its own.

    Raises:
        UserError: no path given.
        DatasetError: the dataset is damaged (after printing every problem found).
    """
    if cfg.path is None:
        raise UserError("give the dataset path: robolearn dataset verify PATH")
    with ReplayBuffer.open(cfg.path) as buffer:
        report = verified(buffer, notes=True)
    print(f"{cfg.path}: OK, {report.n_episodes} episodes, {report.n_checksummed} verified against their checksums")
