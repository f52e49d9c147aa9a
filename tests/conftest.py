"""Shared helpers: real Hydra composition, tiny CPU settings, and the GPU marker's skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from src import PROJECT_ROOT
from src.config import to_spec  # also registers the schema with Hydra's ConfigStore
from src.spec import JobSpec

TEST_CONF = Path(__file__).parent / "conf"
FAULTS = "tests.plugins.fault_models"
# Tiny, quick measurement for CPU tests (numbers from these settings are not benchmarks).
QUICK = ["measure.warmup_iters=1", "measure.min_iters=3", "measure.min_duration_s=0", "measure.timeout_s=120"]


def compose_cfg(*overrides: str) -> DictConfig:
    with initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base="1.3"):
        return compose("config", list(overrides))


def make_spec(*overrides: str) -> JobSpec:
    return to_spec(compose_cfg(*overrides))


def fault_overrides(model: str) -> list[str]:
    """Select a test-only model: its YAML from tests/conf, its class from the plugin module."""
    return [f"hydra.searchpath=[file://{TEST_CONF}]", f"plugins=[{FAULTS}]", f"model={model}"]


def run_bench(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess:
    """`python -m src.bench ARGS` in a real subprocess, from the project root."""
    full_env = {**os.environ, "YOLO_OFFLINE": "1", **(env or {})}
    full_env.pop("MLFLOW_RUN_ID", None)
    return subprocess.run(
        [sys.executable, "-m", "src.bench", *args],
        cwd=PROJECT_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A fresh SQLite MLflow store in a temporary folder (its URI)."""
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False on this machine")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)
