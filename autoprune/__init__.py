"""autoprune: search-based structured pruning for PyTorch.

Importing the package stays light; ray, stable-baselines3, pymoo and torchvision load lazily.
"""

from __future__ import annotations

__version__ = "0.1.0"
