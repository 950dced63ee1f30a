"""autoprune: search-based structured pruning for PyTorch.

``autoprune.search(model, data, target="latency", budget=0.5)`` finds per-group pruning ratios of
a trained model that meet the budget, and returns the slimmed, fine-tuned model with its policy and
Optuna study (``autoprune.api``); ``apply``, ``export`` and ``load`` go with it. The command line
(``autoprune search``) runs the same function.

Importing the package stays light: torch, ray, stable-baselines3, pymoo and torchvision load on
first use of a function that needs them.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["SearchResult", "__version__", "apply", "export", "export_model", "load", "search"]

_API = {"search": "autoprune.api", "apply": "autoprune.api", "export": "autoprune.api",
        "SearchResult": "autoprune.api", "load": "autoprune.model_io", "export_model": "autoprune.model_io"}


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'autoprune' has no attribute {name!r}")
