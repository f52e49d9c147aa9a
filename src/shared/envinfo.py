"""Where a number was measured: device, driver, library versions, host and source revision (MLflow tags)."""

from __future__ import annotations

import functools
import importlib.util
import platform
import re
import socket
import subprocess
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

LIBRARIES = (
    "torch",
    "torchvision",
    "monai",
    "ultralytics",
    "mlflow",
    "hydra-core",
    "omegaconf",
    "nvidia-ml-py",
)


def library_versions(names: Iterable[str] = LIBRARIES) -> dict[str, str]:
    """Each distribution's installed version, as this process first read it (a sweep's jobs share it)."""
    return dict(_versions(tuple(names)))


@functools.cache
def _versions(names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    versions = []
    for name in names:
        try:
            versions.append((f"version.{name}", metadata.version(name)))
        except metadata.PackageNotFoundError:
            versions.append((f"version.{name}", "not installed"))
    return tuple(versions)


def git_info(root: Path) -> dict[str, str]:
    """Commit and dirty flag of the project checkout; 'unknown' outside git. Read once per process: the
    checkout whose code this process loaded as it started (two `git` commands per job otherwise)."""
    return dict(_git_info(root))


@functools.cache
def _git_info(root: Path) -> tuple[tuple[str, str], ...]:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return (("git_commit", "unknown"),)
    return (("git_commit", commit), ("git_dirty", str(dirty).lower()), ("mlflow.source.git.commit", commit))


def host_tags() -> dict[str, str]:
    return {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
    }


def torch_build() -> dict[str, str]:
    """torch's `__version__` and `version.cuda`, read from its `version.py` without importing torch (the
    Hydra process never imports it)."""
    spec = importlib.util.find_spec("torch")
    folders = spec.submodule_search_locations if spec else None
    try:
        text = (Path(folders[0]) / "version.py").read_text(encoding="utf-8") if folders else ""
    except OSError:
        text = ""
    found = dict(re.findall(r"^(__version__|cuda)(?:: [^=]+)? = '([^']*)'", text, re.MULTILINE))
    return {"torch_version": found.get("__version__", "unknown"), "cuda_version": found.get("cuda", "None")}


def device_tags(device: torch.device) -> dict[str, str]:
    """Tags that need torch (called in the measuring child, where torch is imported anyway)."""
    import torch

    tags = {"device": str(device), "torch_version": torch.__version__}
    if device.type != "cuda":
        tags["gpu_name"] = "none (CPU)"
        return tags
    props = torch.cuda.get_device_properties(device)
    tags.update(
        {
            "gpu_name": props.name,
            "gpu_memory_mib": str(props.total_memory // 2**20),
            "gpu_compute_capability": f"{props.major}.{props.minor}",
            "cuda_version": str(torch.version.cuda),
            "cudnn_version": str(torch.backends.cudnn.version()),
            "driver_version": _nvidia_driver(),
        }
    )
    return tags


def _nvidia_driver() -> str:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception as exc:  # NVML missing or not initialisable: say so rather than guess
        return f"unknown ({type(exc).__name__})"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
