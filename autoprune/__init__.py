"""autoprune: search-based structured pruning for PyTorch.

``autoprune.search(model, data, target="latency", budget=0.5)`` finds per-group pruning ratios of
a trained model that meet the budget, and returns the slimmed, fine-tuned model with its policy and
Optuna study (``autoprune.api``); ``apply``, ``export`` and ``load`` go with it. The command line
(``autoprune search``) runs the same function.

Importing the package stays light: torch, ray, stable-baselines3, pymoo and torchvision load on
first use of a function that needs them.
"""

from __future__ import annotations

import os
from typing import Any

# OpenMP's default is to spin at every barrier. When another process holds one of the cores (a
# second worker, a training, the user's browser) a spinning thread starves its partner: 20
# fine-tune steps with 2 threads took 10x longer than with 1 on a 2-core machine with one core busy.
# Passive waiting costs nothing measurable when the cores are free. It must be set before torch
# loads its OpenMP runtime, hence here; worker processes inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
__all__ = ["SearchResult", "__version__", "apply", "export", "export_model", "load", "search"]

_API = {"search": "autoprune.api", "apply": "autoprune.api", "export": "autoprune.api",
        "SearchResult": "autoprune.api", "load": "autoprune.model_io", "export_model": "autoprune.model_io"}


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'autoprune' has no attribute {name!r}")
