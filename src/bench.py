"""Hydra entry point: `python -m src.bench [-m] [overrides]`. Thin: config -> spec -> runner -> MLflow."""

from __future__ import annotations

import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from src import PROJECT_ROOT
from src import config as _config
from src.runner import PARENT_ENV, parent_run_id, run_job

# `mlflow run` exports MLFLOW_RUN_ID for its project run. Left in place, the first job's MLflow call would
# adopt that run and end it; instead it becomes the parent of every job of this invocation.
if os.environ.get("MLFLOW_RUN_ID"):
    os.environ[PARENT_ENV] = os.environ.pop("MLFLOW_RUN_ID")


@hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="config")
def main(cfg: DictConfig) -> str:
    hc = HydraConfig.get()
    sweep_dir = Path(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None
    spec = _config.to_spec(cfg)  # validated already by the callback; cheap, and keeps main usable alone
    result, _ = run_job(cfg, spec, Path(hc.runtime.output_dir) / "job", parent_run_id(sweep_dir))
    return result.status.value


if __name__ == "__main__":
    main()
