"""The machine and software a bench ran on: recorded in results.json and under every table."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any


def package_versions() -> dict[str, str]:
    """Installed versions of the packages the numbers depend on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("torch", "torch-pruning", "optuna", "pymoo", "autoprune"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    return {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "cores": os.cpu_count() or 1, "cpu": cpu_model(),
            "platform": platform.platform(), "versions": package_versions()}
