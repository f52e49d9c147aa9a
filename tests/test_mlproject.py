"""`mlflow run . -P overrides="-m ..."`: one project run, every Hydra job its child."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from src import PROJECT_ROOT
from tests.conftest import QUICK

pytestmark = pytest.mark.slow


def test_mlflow_run_passes_a_multirun_through_and_nests_every_job(store: str) -> None:
    overrides = " ".join(
        ["-m", "model=densenet", "backend=eager,torchscript", "smoke=true", "batch_size=2", *QUICK]
    )
    # MLproject's command says `python`: as in an activated virtual environment, this one comes first
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "YOLO_OFFLINE": "1", "PATH": path}
    env.pop("MLFLOW_RUN_ID", None)
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "run",
        ".",
        "--env-manager",
        "local",
        "-P",
        f"overrides={overrides}",
    ]
    out = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    mlflow.set_tracking_uri(store)
    df = mlflow.search_runs(search_all_experiments=True)
    project = df[df["tags.mlflow.project.entryPoint"] == "main"]
    jobs = df[df["tags.kind"] == "job"]
    assert len(project) == 1 and len(df) == 3 and len(jobs) == 2
    assert project.iloc[0]["status"] == "FINISHED"
    assert set(jobs["tags.mlflow.parentRunId"]) == {project.iloc[0]["run_id"]}
    assert set(jobs["tags.status"]) == {"ok"} and set(jobs["params.backend"]) == {"eager", "torchscript"}
