"""Checkpoints without pickle: safetensors weights, YAML config, JSON normalizer and train state.

A checkpoint is a folder::

    config.yaml          policy class and its config, with the observation feature spec (+ the training
                         config, for reference)
    normalizer.json      per-key normalization statistics
    model.safetensors    raw weights of every module of the policy (denoiser, observation encoder, ...)
    ema.safetensors      EMA weights (what evaluation and deployment use)
    ft_model.safetensors the DPPO-fine-tuned denoiser for the last denoising steps, raw weights, and
    ft_ema.safetensors   its weight average (what evaluation and deployment use) (fine-tuned checkpoints only)
    train_state.safetensors / train_state.json   optimizer, scheduler, step, RNG states (for resume)

`CheckpointManager` writes each checkpoint into a fresh folder, reads it back (`check_files`), and only then
atomically repoints the `latest` (and `best`) symlink at it; the checkpoint `latest` pointed at before stays as
`previous`, so a crash at any moment, or a `latest` damaged later (a full disk, a copy cut short), leaves an
intact checkpoint to resume from (`resume_from=previous`).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from robolearn.datasets.normalizer import LinearNormalizer
from robolearn.errors import CheckpointError
from robolearn.policies.config import CONFIG_CLASSES
from robolearn.policies.diffusion import DiffusionPolicyConfig
from robolearn.policies.gaussian import GaussianPolicyConfig

REQUIRED_FILES = ("config.yaml", "normalizer.json", "model.safetensors", "ema.safetensors")
#: the most parameters a checkpoint's config may describe (4 GB of float32), checked before allocating
MAX_PARAMETERS = 1_000_000_000


def contiguous_cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict as safetensors wants it: detached, on the CPU, contiguous."""
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def optimizer_to_safetensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON-ready metadata."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{name}"] = value
            else:
                scalars[f"{pid}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_safetensors(optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    """Inverse of `optimizer_to_safetensors`: load the state into `optimizer`."""
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for key, value in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# -- validated loading (shared by policy and Q-function checkpoints) -------------------------
def read_config_yaml(folder: Path) -> dict:
    """config.yaml of a checkpoint as a mapping.

    Raises:
        CheckpointError: not valid YAML, or not a mapping.
    """
    try:
        config = yaml.safe_load((folder / "config.yaml").read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"checkpoint {folder}: config.yaml is not valid YAML ({first})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint {folder}: config.yaml must be a mapping, got {type(config).__name__}")
    return config


def config_section(config_cls, config: dict, section: str, folder: Path):
    """`config_cls.from_dict(config[section])`, with every problem a CheckpointError naming the section."""
    values = config.get(section)
    if not isinstance(values, dict):
        raise CheckpointError(f"checkpoint {folder}: config.yaml needs a mapping `{section}:`, got {values!r:.80}")
    try:
        return config_cls.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {folder}: config.yaml `{section}` is invalid ({exc})") from None


def load_normalizer(folder: Path, config, section: str) -> LinearNormalizer:
    """normalizer.json of a checkpoint, checked against `config` (a policy or Q-function config with
    `obs_features` and `action_dim`; `section` names it in messages): finite statistics, positive
    scales, one vector per low-dim observation key of its size and one of `action_dim` for "action".

    Raises:
        CheckpointError: missing statistics, unreadable JSON, non-finite values, a scale <= 0, or a key whose
            size differs from the config's.
    """
    dims = {key: f.size for key, f in config.features.items() if f.type == "low_dim"}
    dims["action"] = int(config.action_dim)
    path = folder / "normalizer.json"
    try:
        normalizer = LinearNormalizer.load(path)
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint {folder}: normalizer.json is invalid ({' '.join(str(exc).split())[:200]})") \
            from None
    for key, dim in dims.items():
        if key not in normalizer.params:
            raise CheckpointError(f"checkpoint {folder}: normalizer.json has no statistics for `{key}`")
        for name, values in normalizer.params[key].items():
            if values.shape != (dim,):
                raise CheckpointError(f"checkpoint {folder}: normalizer.json `{key}.{name}` has shape "
                                      f"{values.shape}, the config expects ({dim},)")
            if not np.all(np.isfinite(values)):
                raise CheckpointError(f"checkpoint {folder}: normalizer.json `{key}.{name}` holds NaN or inf")
        if np.any(normalizer.params[key]["scale"] <= 0):
            raise CheckpointError(f"checkpoint {folder}: normalizer.json `{key}.scale` must be > 0 "
                                  f"(got {normalizer.params[key]['scale'].tolist()})")
    return normalizer


def build_checked(folder: Path, factory: Callable[[], torch.nn.Module],
                  weights: Callable[[torch.nn.Module], Mapping[Path, torch.nn.Module]]) -> torch.nn.Module:
    """Build a model from a checkpoint's config and load its weight files, checking before allocating.

    The model is first built on the `meta` device (no memory): its parameter count must be at most
    `MAX_PARAMETERS` and each file's tensor names and shapes (read from the safetensors header) must
    match it. Only then is it built for real and loaded; every loaded tensor must be finite.

    Args:
        factory: builds the model from the config.
        weights: for a model, {weight file: (module, prefixes)}: the file holds the module's state except
            the keys starting with one of `prefixes`. A file written before the observation encoder was
            saved with its owner (its keys lack the module's first prefix, e.g. "model.") is read too.

    Raises:
        CheckpointError: a config that builds no model, too many parameters, a file that is not
            safetensors or whose tensors differ from the config's, or NaN/inf weights.
    """
    try:
        with torch.device("meta"):
            meta = factory()
    except (TypeError, ValueError, RuntimeError, IndexError, KeyError, ZeroDivisionError) as exc:
        raise CheckpointError(f"checkpoint {folder}: config.yaml does not describe a model that can be built "
                              f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
    n_params = sum(p.numel() for p in meta.parameters())
    if n_params > MAX_PARAMETERS:
        raise CheckpointError(f"checkpoint {folder}: config.yaml describes {n_params:.3g} parameters, more than "
                              f"the limit of {MAX_PARAMETERS:.0e}; refusing to allocate")
    renames = {}
    for path, (module, skip) in weights(meta).items():
        expected = {k: tuple(v.shape) for k, v in module.state_dict().items() if not k.startswith(tuple(skip))}
        try:
            with safe_open(str(path), framework="pt") as f:
                found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (not a dict)
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"checkpoint {folder}: {path.name} is not a readable safetensors file ({exc})") \
                from None
        prefix = _legacy_prefix(found, expected)
        renames[path] = prefix
        if {prefix + k: v for k, v in found.items()} != expected:
            diff = sorted(set(found.items()) ^ set(expected.items()))[:3]
            raise CheckpointError(f"checkpoint {folder}: {path.name} does not match config.yaml (first differences, "
                                  f"name and shape: {diff})")
    model = factory()
    for path, (module, skip) in weights(model).items():
        state = {renames[path] + k: v for k, v in load_file(path).items()}
        bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            raise CheckpointError(f"checkpoint {folder}: {path.name} holds NaN or inf in {bad[:3]}")
        missing, unexpected = module.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if not k.startswith(tuple(skip))]:
            raise CheckpointError(f"checkpoint {folder}: {path.name} does not match the model "
                                  f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model


def _legacy_prefix(found: dict, expected: dict) -> str:
    """"" for a current file; the prefix (e.g. "model.") whose addition to every key of an older file gives
    the expected keys (files that held only the denoiser or the critics); "" when none does."""
    prefixes = {k.split(".", 1)[0] + "." for k in expected}
    for prefix in sorted(prefixes):
        if found and not any(k.startswith(prefix) for k in found) and \
                {prefix + k: v for k, v in found.items()} == expected:
            return prefix
    return ""


#: the state-dict prefixes that model.safetensors / ema.safetensors leave out (the DPPO-fine-tuned denoiser
#: has files of its own)
FT_PREFIXES = ("ft_model.",)


def _policy_config_class(name: object, folder: Path) -> type:
    """The config class named by a checkpoint's `config_class` (or, before it existed, `policy_class`)."""
    legacy = {"DiffusionPolicy": DiffusionPolicyConfig, "GaussianChunkPolicy": GaussianPolicyConfig}
    cls = legacy.get(name) or CONFIG_CLASSES.get(name)
    if cls is None or not hasattr(cls, "build"):
        known = sorted(n for n, c in CONFIG_CLASSES.items() if hasattr(c, "build") and n.endswith("PolicyConfig"))
        raise CheckpointError(f"checkpoint {folder}: unknown policy config class {name!r}; known: {known}")
    return cls


def _without(state: dict, prefixes: tuple[str, ...]) -> dict:
    return {k: v for k, v in state.items() if not k.startswith(prefixes)}


def save_policy(folder: Path, policy, ema_policy=None, extra_config: dict | None = None) -> None:
    """Write config.yaml, normalizer.json, model.safetensors and ema.safetensors (and, after DPPO,
    ft_model.safetensors and ft_ema.safetensors) into `folder`. `policy` is any robolearn policy (its
    config class is recorded); `ema_policy` (same class and config) holds the averaged weights, or None for
    `policy`'s own. Every module of the policy is saved (denoiser or MLP, observation encoder)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {"config_class": type(policy.config).__name__, "policy_class": type(policy).__name__,
              "policy": policy.config.to_dict()}
    if extra_config:
        config["train"] = extra_config
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    policy.normalizer.save(folder / "normalizer.json")
    save_file(contiguous_cpu(_without(policy.state_dict(), FT_PREFIXES)), folder / "model.safetensors")
    save_file(contiguous_cpu(_without((ema_policy or policy).state_dict(), FT_PREFIXES)), folder / "ema.safetensors")
    if getattr(policy, "ft_model", None) is not None:
        save_file(contiguous_cpu(policy.ft_model.state_dict()), folder / "ft_model.safetensors")
        save_file(contiguous_cpu((ema_policy or policy).ft_model.state_dict()), folder / "ft_ema.safetensors")


def load_policy(folder: str | os.PathLike, use_ema: bool = True, device: str | torch.device = "cpu",
                sampler: str | None = None, num_inference_steps: int | None = None, inference: str | None = None):
    """Rebuild the policy of a checkpoint folder (the `build` of its config class), without pickle.

    Args:
        use_ema: load the EMA weights (default; after DPPO also the fine-tuned denoiser's average) or
            the raw ones.
        sampler, num_inference_steps: override the saved sampling settings.
        inference: override the sampling loop ("eager" | "fast" | "compiled", `DiffusionPolicy.set_inference`).

    Raises:
        FileNotFoundError: the folder does not exist.
        CheckpointError: a required file is missing or does not match the config.
        ValueError: an unknown sampler or inference mode, or steps out of range.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder not found: {folder}")
    missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {folder} is missing {missing}")
    config = read_config_yaml(folder)
    config_cls = _policy_config_class(config.get("config_class", config.get("policy_class")), folder)
    policy_config = config_section(config_cls, config, "policy", folder)
    normalizer = load_normalizer(folder, policy_config, "policy")

    def weights(policy) -> dict[Path, tuple]:
        out = {folder / ("ema.safetensors" if use_ema else "model.safetensors"): (policy, FT_PREFIXES)}
        if getattr(policy, "ft_model", None) is not None:
            ft = folder / ("ft_ema.safetensors" if use_ema else "ft_model.safetensors")
            if not ft.is_file():
                raise CheckpointError(f"checkpoint {folder} has ft_denoising_steps="
                                      f"{policy_config.ft_denoising_steps} but no {ft.name}")
            out[ft] = (policy.ft_model, ())
        return out

    policy = build_checked(folder, lambda: policy_config.build(normalizer), weights)
    if (sampler or num_inference_steps) and hasattr(policy, "set_sampler"):
        policy.set_sampler(sampler or policy_config.sampler, num_inference_steps or policy_config.num_inference_steps)
    if inference and hasattr(policy, "set_inference"):
        policy.set_inference(inference)
    return policy.to(device).eval()


def check_files(folder: Path) -> None:
    """Read back every file of a checkpoint folder: each `.safetensors` file's header and coverage (a file cut
    short fails here), each `.json` and `.yaml` file's syntax; the train state must be there.

    Raises:
        CheckpointError: naming the folder, the file and what is wrong.
    """
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint {folder} is missing")
    missing = [f for f in ("train_state.safetensors", "train_state.json") if not (folder / f).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {folder} is missing {missing}")
    for path in sorted(folder.iterdir()):
        try:
            if path.suffix == ".safetensors":
                with safe_open(str(path), framework="pt") as f:
                    f.keys()
            elif path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".yaml":
                yaml.safe_load(path.read_text())
        except (SafetensorError, OSError, ValueError, yaml.YAMLError) as exc:
            raise CheckpointError(f"checkpoint {folder}: {path.name} is damaged or cut short "
                                  f"({type(exc).__name__}: {' '.join(str(exc).split())[:120]})") from None


class CheckpointManager:
    """`latest`, `previous` and best-by-success checkpoints under `root`, each swapped in atomically.

    Folders are named by step (`step_0001000`); `latest`, `previous` (what `latest` was before the last save)
    and `best` are symlinks to them. Folders no longer pointed at are removed.
    """

    #: the checkpoints a run can resume from (`resume_from=`), besides a step folder's name
    POINTS = ("latest", "previous", "best")

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)  # made by the first save

    @property
    def has_checkpoints(self) -> bool:
        """Whether the run saved a checkpoint (its `latest` link exists, even if what it points at is damaged)."""
        return (self.root / "latest").is_symlink()

    @property
    def latest(self) -> Path | None:
        link = self.root / "latest"
        return link if link.exists() else None

    @property
    def best(self) -> Path | None:
        link = self.root / "best"
        return link if link.exists() else None

    def save(self, step: int, write_model: Callable[[Path], None], train_tensors: dict, train_meta: dict,
             is_best: bool = False) -> Path:
        """Write a complete checkpoint for `step`, then point `latest` (and `best`) at it.

        `write_model(folder)` writes the model files (e.g. `save_policy`); the training state goes
        to train_state.safetensors / train_state.json beside them.
        """
        name = f"step_{step:07d}"
        tmp = self.root / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            write_model(tmp)
            save_file(contiguous_cpu(train_tensors), tmp / "train_state.safetensors")
            (tmp / "train_state.json").write_text(json.dumps(train_meta, indent=1, allow_nan=True))
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            check_files(tmp)  # read back before it replaces anything
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a failed save leaves nothing behind
            raise
        final = self.root / name
        before = os.readlink(self.root / "latest") if (self.root / "latest").is_symlink() else None
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(self.root)
        if before is not None and before != name and self._intact(self.root / before):  # a damaged one goes
            self._point("previous", before)
        self._point("latest", name)
        if is_best:
            self._point("best", name)
        self._prune()
        return final

    def resume_point(self, which: str = "latest") -> Path | None:
        """The checkpoint a run resumes from, read back first (`check_files`): `which` is "latest", "previous",
        "best" or a step folder's name (`step_0004000`). None when the run has no checkpoint at all (a new run).

        Raises:
            CheckpointError: the chosen checkpoint is missing or damaged; the message names it, what is wrong, and
                the intact checkpoint to resume from instead (`resume_from=...`) when there is one.
        """
        if not self.has_checkpoints:
            return None
        if which not in self.POINTS and not (which.startswith("step_") and "/" not in which):
            raise CheckpointError(f"resume_from={which!r}: expected one of {list(self.POINTS)} or a step folder of "
                                  f"{self.root} ({self._steps()})")
        folder = self.root / which
        try:
            check_files(folder)
        except CheckpointError as exc:
            target = os.readlink(folder) if folder.is_symlink() else which
            others = [p for p in ("previous", "best") if p != which and (self.root / p).is_symlink()
                      and os.readlink(self.root / p) != target]
            good = next((p for p in others if self._intact(self.root / p)), None)
            hint = (f"; resume from the intact `{good}` ({os.readlink(self.root / good)}) with resume_from={good}"
                    if good else "; no intact checkpoint is left to resume from: start a new run (another run_name=)")
            raise CheckpointError(f"cannot resume from `{which}` ({target}): {exc}{hint}") from None
        return folder

    @staticmethod
    def _intact(folder: Path) -> bool:
        try:
            check_files(folder)
            return True
        except CheckpointError:
            return False

    def _steps(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.name.startswith("step_"))

    def _point(self, link: str, target: str) -> None:
        tmp = self.root / f".{link}-{uuid.uuid4().hex[:8]}"
        os.symlink(target, tmp)
        os.replace(tmp, self.root / link)  # atomic on POSIX
        _fsync_dir(self.root)

    def _prune(self) -> None:
        keep = {os.readlink(self.root / link) for link in self.POINTS if (self.root / link).is_symlink()}
        for path in self.root.iterdir():
            if path.name not in keep and (path.name.startswith("step_") or path.name.startswith(".tmp-")):
                shutil.rmtree(path, ignore_errors=True)

    @staticmethod
    def load_train_state(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, metadata) of a checkpoint's training state (optimizer, RNG, step...)."""
        tensors = load_file(folder / "train_state.safetensors")
        meta = json.loads((folder / "train_state.json").read_text())
        return tensors, meta


def numpy_rng_state(rng: np.random.Generator) -> dict:
    """JSON-ready state of a numpy Generator."""
    return rng.bit_generator.state


def restore_numpy_rng(state: dict) -> np.random.Generator:
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    return rng
