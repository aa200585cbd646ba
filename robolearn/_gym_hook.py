"""Registers robolearn's envs with gymnasium as gymnasium is imported, without importing gymnasium earlier.

Loaded at interpreter start by `robolearn-gymnasium.pth` (installed beside the package). It adds a one-shot
import finder that waits for `gymnasium.envs` and, once that module has run, calls
`robolearn.registration.register_envs()`. Processes that never import gymnasium pay only this module's import.
"""

from __future__ import annotations

import importlib.util
import sys

TARGET = "gymnasium.envs"


class _RegisterAfterGymnasium:
    """A meta path finder (importlib's protocol) for `gymnasium.envs` only."""

    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET:
            return None
        sys.meta_path.remove(self)  # one shot; the real finders locate the module
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            try:
                from robolearn.registration import register_envs

                register_envs()
            except Exception as exc:  # never break `import gymnasium` for the user
                print(f"robolearn: could not register its gymnasium envs: {exc}", file=sys.stderr)

        spec.loader.exec_module = exec_module
        return spec


if TARGET not in sys.modules and not any(isinstance(f, _RegisterAfterGymnasium) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterGymnasium())
