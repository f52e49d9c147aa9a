"""`mlflow run . -P overrides="-m ..."`: one project run, every Hydra job its child."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from src import PROJECT_ROOT
from tests.conftest import QUICK

pytestmark = pytest.mark.slow


def mlflow_run(store: str, overrides: str, *extra: str) -> subprocess.CompletedProcess:
    # MLproject's command says `python`: as in an activated virtual environment, this one comes first
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "YOLO_OFFLINE": "1", "PATH": path}
    env.pop("MLFLOW_RUN_ID", None)
    cmd = [sys.executable, "-m", "mlflow", "run", ".", "--env-manager", "local", *extra]
    cmd += ["-P", f"overrides={overrides}"]
    return subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_mlflow_run_passes_a_multirun_through_and_nests_every_job(store: str) -> None:
    """`mlflow run` files its project run where it is told (MLflow's Default experiment unless
    --experiment-name says otherwise); the sweep and its jobs always go to the configured experiment."""
    overrides = " ".join(
        ["-m", "model=densenet", "backend=eager,torchscript", "smoke=true", "batch_size=2", *QUICK]
    )
    out = mlflow_run(store, overrides)
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("inference-bench")
    mlflow.set_tracking_uri(store)
    df = mlflow.search_runs(search_all_experiments=True)
    project = df[df["tags.mlflow.project.entryPoint"] == "main"]
    assert len(project) == 1 and project.iloc[0]["status"] == "FINISHED"
    ours = mlflow.search_runs([exp.experiment_id])
    jobs, sweeps = ours[ours["tags.kind"] == "job"], ours[ours["tags.kind"] == "sweep"]
    assert len(jobs) == 2 and len(sweeps) == 1 and len(df) == 4
    sweep = sweeps.iloc[0]
    assert set(jobs["tags.mlflow.parentRunId"]) == {sweep["run_id"]} and sweep["status"] == "FINISHED"
    assert sweep["tags.mlflow_project_run"] == project.iloc[0]["run_id"]
    assert project.iloc[0]["tags.sweep_run_id"] == sweep["run_id"]
    assert set(jobs["tags.status"]) == {"ok"} and set(jobs["params.backend"]) == {"eager", "torchscript"}

    # told the experiment, the project run is the sweep itself; the jobs, measured already, are linked
    again = mlflow_run(store, overrides, "--experiment-name", "inference-bench")
    assert again.returncode == 0, again.stderr[-3000:]
    ours = mlflow.search_runs([exp.experiment_id])
    project = ours[ours["tags.mlflow.project.entryPoint"] == "main"]
    assert len(project) == 1 and project.iloc[0]["tags.kind"] == "sweep"
    under = ours[ours["tags.mlflow.parentRunId"] == project.iloc[0]["run_id"]]
    assert sorted(under["tags.status"]) == ["skipped", "skipped"]
    assert set(under["tags.measured_in"]) == set(jobs["run_id"])
