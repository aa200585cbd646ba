"""One train-state helper for `train`, `finetune` and `train-value`: what a resume needs beyond the model
files, saved without pickle (train_state.safetensors for tensors, train_state.json for the rest).

A `TrainState` is given the run's optimizers, lr schedulers, extra modules (e.g. a critic that is not part
of the saved policy), torch generators and numpy generators by name. `pack(**counters)` returns the
(tensors, metadata) that `CheckpointManager.save` writes; `restore(tensors, meta)` puts every state back and
returns the counters (step, best score, EMA step, ...). The process's torch (and CUDA) RNG is saved too.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from robolearn.errors import CheckpointError
from robolearn.policies.checkpoint import (
    numpy_rng_state,
    optimizer_from_safetensors,
    optimizer_to_safetensors,
    restore_numpy_rng,
)

#: the train-state layout this module writes (older checkpoints cannot be resumed)
FORMAT = 2


class TrainState:
    """The resumable state of a training run (see the module docstring).

    Args:
        optimizers: {name: torch optimizer}.
        schedulers: {name: lr scheduler or None}.
        modules: {name: module} whose weights are saved only in the train state.
        generators: {name: torch.Generator}.
        rngs: {name: numpy Generator}; `restore` replaces them, read them back from `self.rngs`.
    """

    def __init__(self, optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
                 schedulers: Mapping[str, object] | None = None,
                 modules: Mapping[str, torch.nn.Module] | None = None,
                 generators: Mapping[str, torch.Generator] | None = None,
                 rngs: Mapping[str, np.random.Generator] | None = None):
        self.optimizers = dict(optimizers or {})
        self.schedulers = dict(schedulers or {})
        self.modules = dict(modules or {})
        self.generators = dict(generators or {})
        self.rngs = dict(rngs or {})

    def pack(self, **counters) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, JSON-ready metadata) of the current state plus `counters` (JSON-ready values)."""
        tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        meta: dict = {"format": FORMAT, "counters": counters, "optimizers": {}, "schedulers": {}, "rngs": {}}
        for name, optimizer in self.optimizers.items():
            opt_tensors, opt_meta = optimizer_to_safetensors(optimizer)
            tensors.update({f"optimizer.{name}.{k}": v for k, v in opt_tensors.items()})
            meta["optimizers"][name] = opt_meta
        for name, scheduler in self.schedulers.items():
            meta["schedulers"][name] = None if scheduler is None else scheduler.state_dict()
        for name, module in self.modules.items():
            tensors.update({f"module.{name}.{k}": v for k, v in module.state_dict().items()})
        for name, generator in self.generators.items():
            tensors[f"generator.{name}"] = generator.get_state()
        for name, rng in self.rngs.items():
            meta["rngs"][name] = numpy_rng_state(rng)
        return tensors, meta

    def restore(self, tensors: Mapping[str, torch.Tensor], meta: Mapping) -> dict:
        """Put the saved state back; returns the counters given to `pack`.

        Raises:
            CheckpointError: a train state of another format, or one that lacks a part this run has.
        """
        if meta.get("format") != FORMAT:
            raise CheckpointError("this checkpoint's train state was written by an older robolearn and cannot be "
                                  "resumed; start a new run (another run_name=)")
        try:
            for name, optimizer in self.optimizers.items():
                prefix = f"optimizer.{name}."
                optimizer_from_safetensors(optimizer, {k[len(prefix):]: v for k, v in tensors.items()
                                                       if k.startswith(prefix)}, meta["optimizers"][name])
            for name, scheduler in self.schedulers.items():
                if scheduler is not None and meta["schedulers"].get(name) is not None:
                    scheduler.load_state_dict(meta["schedulers"][name])
            for name, module in self.modules.items():
                prefix = f"module.{name}."
                module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
            for name, generator in self.generators.items():
                generator.set_state(tensors[f"generator.{name}"])
            for name in self.rngs:
                self.rngs[name] = restore_numpy_rng(meta["rngs"][name])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"the train state does not fit this run ({type(exc).__name__}: {exc})") from None
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors["rng.cuda"])
        return dict(meta["counters"])
