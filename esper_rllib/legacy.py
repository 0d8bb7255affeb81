"""The module paths of the flat layout (before the role sub-packages) as aliases of the new
ones: RLlib checkpoints and Tune experiment state pickle classes by module path
(``esper_rllib.module.FactoredLSTMModule``), and those written before the move must still load."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

MOVED = {
    **{f"esper_rllib.{m}": f"esper_rllib.model.{m}"
       for m in ("module", "distribution", "model_config", "value_norm")},
    **{f"esper_rllib.{m}": f"esper_rllib.ppo.{m}"
       for m in ("learner", "loss", "gae", "learner_batch", "minibatches", "telemetry",
                 "metric_names", "callbacks", "env_runner", "collapse")},
    **{f"esper_rllib.{m}": f"esper_rllib.run.{m}"
       for m in ("config", "preflight", "trainer", "checkpoint_policy", "random_actions")},
    **{f"esper_rllib.{m}": f"esper_rllib.analysis.{m}"
       for m in ("stats", "postmortem", "learnability", "audit")},
    "esper_rllib.report": "esper_rllib.analysis.render",
    "esper_rllib.report_plots": "esper_rllib.analysis.plots",
}


class _LegacyFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old path to the module at its new path (one module object, two names)."""

    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(MOVED[spec.name])
        self._spec = module.__spec__  # the import machinery overwrites it with the alias's
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._spec


def install() -> None:
    if not any(isinstance(f, _LegacyFinder) for f in sys.meta_path):
        sys.meta_path.append(_LegacyFinder())
