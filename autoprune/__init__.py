"""autoprune: search-based structured pruning for PyTorch.

Importing the package stays light; ray, stable-baselines3, pymoo and torchvision load lazily, and so
do ``autoprune.load`` (a slimmed model from its file) and ``autoprune.export_model`` (to torch,
ONNX or TorchScript), which need torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "export_model", "load"]


def __getattr__(name: str) -> Any:
    if name in ("load", "export_model"):
        from autoprune import export

        return getattr(export, name)
    raise AttributeError(f"module 'autoprune' has no attribute {name!r}")
