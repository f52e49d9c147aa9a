"""A shared tracking server: a real `mlflow server` on loopback. When it is unreachable as a job ends,
the job's result stays on disk and `python -m src.upload` sends it once the server is back."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from src import PROJECT_ROOT
from src.parent.sweep import PENDING_EXIT
from tests.conftest import (
    QUICK,
    bench_env,
    fault_overrides,
    free_port,
    start_bench,
    start_mlflow_server,
    stop_mlflow_server,
)

pytestmark = pytest.mark.slow


def start_server(db: Path, art: Path, port: int):
    return start_mlflow_server(f"sqlite:///{db}", art, port)


def test_a_server_killed_mid_sweep_loses_nothing(tmp_path: Path) -> None:
    """Job 1 is measuring when the server dies (its run exists; its end cannot be logged); job 2 starts
    with the server down (its run cannot even be created). Both are measured, kept on disk, and uploaded
    once the server is back: every run ends FINISHED with its status and metrics, under the sweep's run.
    The sweep uses the default output folder and says, with its exit status and last line, that results
    wait on disk; the upload command it prints recovers all of them and brings the sweep's run up to
    date, as a person following it would."""
    db, art, port = tmp_path / "mlflow.db", tmp_path / "artifacts", free_port()
    server = start_server(db, art, port)
    env = bench_env({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"})
    args = [
        "-m",
        *fault_overrides("sleepy"),
        *QUICK,
        "measure.min_duration_s=8",
        "gpu=cpu",
        "measure.seed=0,1",
    ]
    args += [f"tracking.uri=http://127.0.0.1:{port}"]
    sweep = start_bench(args, env)
    store = MlflowClient(f"sqlite:///{db}")
    try:
        for _ in range(240):  # wait until job 1's run exists with its params: it is measuring now
            runs = store.search_runs(
                [e.experiment_id for e in store.search_experiments()], "tags.kind = 'job'"
            )
            if runs and "model" in runs[0].data.params:
                break
            time.sleep(0.25)
        assert runs, "job 1's run never appeared: " + (sweep.kill() or sweep.communicate()[0][-3000:])
        time.sleep(3)
        stop_mlflow_server(server)
        out, _ = sweep.communicate(timeout=300)
        assert sweep.returncode == PENDING_EXIT, out[-3000:]
        assert out.count("could not log run") == 2 and "measuring anyway" in out
        command = re.findall(r"`(python -m src\.upload [^`]+)`", out.strip().splitlines()[-1])
        assert command and "2 result(s)" in out.strip().splitlines()[-1], out[-2000:]  # its last line
        folder = PROJECT_ROOT / command[0].split()[-1]
        kept = sorted(folder.rglob("meta/pending.json"))
        assert len(kept) == 2 and (folder / "parent_pending.json").is_file()
        assert {"0", "1"} <= {p.name for p in folder.iterdir()}  # one sweep, one folder

        server = start_server(db, art, port)
        upload = subprocess.run(
            [sys.executable, *command[0].split()[1:]],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert upload.returncode == 0, upload.stderr
        assert "2 uploaded, 0 still pending" in upload.stdout and "ended sweep run" in upload.stdout
    finally:
        if sweep.poll() is None:
            sweep.kill()
        stop_mlflow_server(server)
    exp = [e.experiment_id for e in store.search_experiments()]
    jobs = store.search_runs(exp, "tags.kind = 'job'")
    (parent,) = store.search_runs(exp, "tags.kind = 'sweep'")
    assert sorted(r.data.params["measure.seed"] for r in jobs) == ["0", "1"]
    for run in jobs:
        assert run.info.status == "FINISHED" and run.data.tags["status"] == "ok"
        assert run.data.metrics["throughput_img_s"] > 0
        # as complete as a run logged live: its speed-up and its one-line description
        assert run.data.metrics["speedup_vs_eager_fp32"] > 0
        assert "img/s" in run.data.tags["mlflow.note.content"]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert "latencies_ms.csv" in {a.path for a in store.list_artifacts(run.info.run_id)}
    assert parent.info.status == "FINISHED"
    # the sweep's run brought up to date: its counts, its description and its report
    assert parent.data.metrics["jobs_done"] == 2 and parent.data.tags["jobs_ok"] == "2"
    assert "2 jobs" in parent.data.tags["mlflow.note.content"]
    assert "report/report.html" in {a.path for a in store.list_artifacts(parent.info.run_id, "report")}
    assert all(p.with_name("uploaded.json").is_file() and not p.exists() for p in kept)
