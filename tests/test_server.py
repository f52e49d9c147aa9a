"""A shared tracking server: a real `mlflow server` on loopback. When it is unreachable as a job ends,
the job's result stays on disk and `python -m src.upload` sends it once the server is back."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from src import PROJECT_ROOT
from tests.conftest import QUICK, fault_overrides

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db: Path, art: Path, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}"]
    cmd += [
        "--default-artifact-root",
        art.as_uri(),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(120):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except OSError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail("mlflow server did not come up within 60 s")


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_a_result_the_server_could_not_take_is_kept_and_uploaded_later(tmp_path: Path) -> None:
    db, art, port = tmp_path / "mlflow.db", tmp_path / "artifacts", free_port()
    server = start_server(db, art, port)
    env = {**os.environ, "YOLO_OFFLINE": "1", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}
    env["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    env.pop("MLFLOW_RUN_ID", None)
    args = [*fault_overrides("sleepy"), *QUICK, "measure.min_duration_s=8", "gpu=cpu", "telemetry.lock=false"]
    args += [f"tracking.uri=http://127.0.0.1:{port}", f"hydra.run.dir={tmp_path / 'run'}"]
    job = subprocess.Popen(
        [sys.executable, "-m", "src.bench", *args],
        cwd=PROJECT_ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    store = MlflowClient(f"sqlite:///{db}")
    try:
        for _ in range(240):  # wait until the job's run exists, then take the server away mid-measurement
            runs = store.search_runs(
                [e.experiment_id for e in store.search_experiments()], "tags.kind = 'job'"
            )
            if runs and "model" in runs[0].data.params:  # created and its params logged: now measuring
                break
            time.sleep(0.25)
        assert runs, "the job's run never appeared: " + (job.kill() or job.communicate()[0][-3000:])
        time.sleep(3)  # the child is starting or measuring (an 8 s window)
        stop(server)
        out, _ = job.communicate(timeout=300)
        assert job.returncode == 0, out[-3000:]
        assert "could not log run" in out and "python -m src.upload" in out
        pending = tmp_path / "run" / "job" / "meta" / "pending.json"
        assert pending.is_file()
        assert store.get_run(runs[0].info.run_id).info.status == "RUNNING"  # nothing was logged at the end

        server = start_server(db, art, port)
        upload = subprocess.run(
            [sys.executable, "-m", "src.upload", str(tmp_path / "run")],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert upload.returncode == 0, upload.stderr
        assert "1 uploaded, 0 still pending" in upload.stdout
    finally:
        if job.poll() is None:
            job.kill()
        stop(server)
    run = store.get_run(runs[0].info.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "ok"
    assert run.data.metrics["throughput_img_s"] > 0
    assert "latencies_ms.csv" in {a.path for a in store.list_artifacts(run.info.run_id)}
    assert not pending.exists() and pending.with_name("uploaded.json").is_file()
