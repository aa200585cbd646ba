"""robomimic HDF5 datasets (the files the Diffusion Policy and DPPO papers train on) into robolearn replay buffers.

robomimic layout (Mandlekar et al. 2021, `robomimic` docs "Dataset Structure")::

    data/                    attrs: total (steps), env_args (JSON: env_name, type, env_kwargs)
      demo_0/                attrs: num_samples; model_file (MJCF, optional)
        actions  (T, A)      rewards (T,)  dones (T,)  states (T, S) (simulator states)
        obs/<key>  (T, ...)  e.g. robot0_eef_pos (T, 3), agentview_image (T, 84, 84, 3) uint8
        next_obs/<key>       the observation after each step (not imported by default)
    mask/<filter>  (N,)      demo names in a filter, e.g. train, valid, 20_percent

Demos are taken in robomimic's order (by the number after `demo_`). Each mask becomes a list of episode indices in
the dataset attribute `splits` ({filter: [episode, ...]}); training uses `splits.valid` as its validation episodes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from robolearn.datasets.formats.common import (
    FormatError,
    resize_frames,
    resolve_key_map,
)
from robolearn.datasets.formats.schema import RobomimicDemo, RobomimicEnvArgs, validated
from robolearn.datasets.replay_buffer import is_image


def default_key(name: str) -> str | None:
    """robolearn's name for a robomimic array: obs/<k> -> k, actions -> action, rewards -> reward,
    dones -> done, states -> sim_state; next_obs/* is left out."""
    if name.startswith("obs/"):
        return name.removeprefix("obs/").replace("/", "_")
    return {"actions": "action", "rewards": "reward", "dones": "done", "states": "sim_state"}.get(name)


class RobomimicSource:
    """A robomimic HDF5 file, read demo by demo.

    Args:
        path: the .hdf5 file.
        keys: {robomimic array ("actions", "obs/<key>", ...): robolearn key or None (drop)} overriding the defaults.
        image_size: (height, width) to resize image observations to, or None.

    Attributes:
        demos: the demo names in order; key_map; splits {filter: [episode indices]}; env_args (dict or None);
        n_episodes, n_frames.

    Raises:
        FormatError: not an HDF5 file or truncated, no `data` group, a demo that is not a group, a scalar array,
            demos with different keys, a demo whose arrays disagree in length or whose num_samples differs or is not
            a positive integer, `env_args` that is not a JSON object, a mask that is not a 1-D array of demo names or
            names a missing demo, a key map naming a missing array.
    """

    def __init__(self, path: str | os.PathLike, keys: Mapping[str, str | None] | None = None,
                 image_size: tuple[int, int] | None = None):
        import h5py

        self.path = Path(path)
        if not self.path.is_file():
            raise FormatError(f"robomimic file {self.path} is missing")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise FormatError(f"{self.path} is not a readable HDF5 file, or it is truncated ({exc})") from None
        try:
            self._read_layout(keys)
        except BaseException:
            self.close()
            raise
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))

    def _read_layout(self, keys: Mapping[str, str | None] | None) -> None:
        """The demos, their attributes, the key map, env_args and the masks, each validated (`schema`)."""
        import h5py

        data = self._file.get("data")
        if not isinstance(data, h5py.Group):
            raise FormatError(f"{self.path}: no `data` group; a robomimic file keeps its demos in data/demo_N")
        self.demos = sorted((k for k in data if k.startswith("demo_")), key=_demo_number)
        if not self.demos:
            raise FormatError(f"{self.path}: data/ holds no demo_N groups")
        for demo in self.demos:
            group = data[demo]
            if not isinstance(group, h5py.Group):
                raise FormatError(f"{self.path}: data/{demo} is a {type(group).__name__}, not a group of arrays")
            validated(RobomimicDemo, dict(group.attrs), f"{self.path}: data/{demo} attributes")
            for name in self._array_names(demo):
                if group[name].ndim == 0:
                    raise FormatError(f"{self.path}: data/{demo}/{name} is a scalar; robomimic arrays have one row "
                                      "per step (T, ...)")
        self.arrays = self._array_names(self.demos[0])
        first = data[self.demos[0]]
        storable = {n for n in self.arrays if first[n].dtype.kind in "biuf" and 0 not in first[n].shape[1:]}
        # text and zero-width arrays are left out by default (a replay buffer stores neither); keys= may still name
        # them, and the writer then refuses them with its reason
        self.key_map = resolve_key_map(self.arrays, lambda n: default_key(n) if n in storable else None, keys,
                                       str(self.path))
        env_args = data.attrs.get("env_args")
        self.env_args = None
        if env_args is not None:
            where = f"{self.path}: data attribute env_args"
            try:
                parsed = json.loads(env_args.decode() if isinstance(env_args, bytes) else str(env_args))
            except (ValueError, UnicodeDecodeError):
                raise FormatError(f"{where} is not JSON (robomimic stores the environment's arguments as a JSON "
                                  f"object), got {str(env_args)[:60]!r}") from None
            self.env_args = validated(RobomimicEnvArgs, parsed, where).model_dump()
        self.splits = self._splits()
        self.n_episodes = len(self.demos)
        self.n_frames = int(sum(self._length(d) for d in self.demos))

    def _array_names(self, demo: str) -> list[str]:
        group = self._file["data"][demo]
        names = []
        group.visit(lambda name: names.append(name) if hasattr(group[name], "shape") else None)
        return sorted(names, key=lambda n: (n.count("/"), n))

    def _length(self, demo: str) -> int:
        group = self._file["data"][demo]
        if "num_samples" in group.attrs:
            return int(group.attrs["num_samples"])
        return len(group["actions"]) if "actions" in group else 0

    def _splits(self) -> dict[str, list[int]]:
        import h5py

        if "mask" not in self._file:
            return {}
        index = {name: i for i, name in enumerate(self.demos)}
        splits = {}
        for name, names in self._file["mask"].items():
            if not isinstance(names, h5py.Dataset) or names.ndim != 1 or names.dtype.kind not in "SOU":
                raise FormatError(f"{self.path}: mask/{name} must be a 1-D array of demo names (e.g. b'demo_0'), got "
                                  f"{getattr(names, 'dtype', type(names).__name__)} {getattr(names, 'shape', '')}")
            demos = [n.decode() if isinstance(n, bytes) else str(n) for n in names[()]]
            missing = [d for d in demos if d not in index]
            if missing:
                raise FormatError(f"{self.path}: mask/{name} names demos {missing[:5]} that data/ does not hold")
            splits[name] = sorted(index[d] for d in demos)
        return splits

    def episodes(self) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Yields (-1, {robolearn key: (T, ...)}) for each demo in order (robomimic has no task strings)."""
        for demo in self.demos:
            group = self._file["data"][demo]
            names = self._array_names(demo)
            if set(self.key_map) - set(names):
                raise FormatError(f"{self.path}: data/{demo} lacks {sorted(set(self.key_map) - set(names))}, "
                                  f"which {self.demos[0]} has")
            try:
                data = {key: np.asarray(group[name][()]) for name, key in self.key_map.items()}
            except OSError as exc:
                raise FormatError(f"{self.path}: data/{demo} cannot be read; the file is damaged or truncated "
                                  f"({exc})") from None
            lengths = {key: len(v) for key, v in data.items()}
            expected = self._length(demo)
            if set(lengths.values()) != {expected}:
                raise FormatError(f"{self.path}: data/{demo} has arrays of lengths {lengths}; num_samples says "
                                  f"{expected}")
            for key, values in data.items():
                if is_image(values):
                    data[key] = resize_frames(values, self.image_size)
            yield -1, data

    def close(self) -> None:
        self._file.close()


def _demo_number(name: str) -> int:
    try:
        return int(name.removeprefix("demo_"))
    except ValueError:
        return 1 << 62

