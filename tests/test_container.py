"""The recipe for users with TensorRT (docker/): NVIDIA's PyTorch container, this project installed without
replacing its torch stack. The image cannot be built here (no registry access, no TensorRT); what can be
checked is: the recipe's pins are the project's, and its install step resolves against this environment's
pins without installing (or replacing) torch."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import tomllib

from src import PROJECT_ROOT

DOCKER = PROJECT_ROOT / "docker"
CONTAINER_STACK = {"torch", "torchvision"}  # what the NGC container ships and keeps


def pins(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            out[name.lower()] = version
    return out


def test_the_recipes_pins_are_the_projects_without_the_containers_torch() -> None:
    project = pins(tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    recipe = pins((DOCKER / "requirements-ngc.txt").read_text().splitlines())
    assert recipe == {k: v for k, v in project.items() if k not in CONTAINER_STACK}
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^FROM nvcr\.io/nvidia/pytorch:\$\{NGC_TAG\}$", dockerfile, re.M)
    assert "docker/install.sh" in dockerfile and "import torch_tensorrt" in dockerfile
    script = (DOCKER / "install.sh").read_text()
    assert "--no-deps -e ." in script and '-c "$keep"' in script  # the project alone; the stack pinned


def test_the_install_step_resolves_the_pins_and_keeps_torch() -> None:
    env = {
        **os.environ,
        "PIP_ARGS": "--dry-run --no-index",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    out = subprocess.run(
        ["bash", str(DOCKER / "install.sh"), "deps"], capture_output=True, text=True, env=env, timeout=600
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert re.search(r"install\.sh: keeping .*torch==", out.stdout)  # the environment's torch is pinned
    assert "Would install" not in out.stdout  # every pin is satisfied as is: nothing replaced
