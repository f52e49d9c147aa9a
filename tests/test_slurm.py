"""A real SLURM cluster (CI starts a single-node one: .ci/slurm-up.sh): a CPU sweep submitted through the
`hydra/launcher=slurm` preset, its jobs logging to a real `mlflow server` on loopback."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import QUICK, free_port, run_bench, start_mlflow_server, stop_mlflow_server, sweep_folder


def slurm_missing() -> str | None:
    if not shutil.which("sinfo"):
        return "needs SLURM's client tools (Debian's slurm-wlm) and a running cluster (.ci/slurm-up.sh)"
    up = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    if up.returncode != 0 or not up.stdout.strip():
        return f"no SLURM cluster answers (sinfo: {up.stderr.strip() or 'no nodes'}); CI starts one"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(slurm_missing()), reason=str(slurm_missing()))]


def test_a_sweep_through_slurm_logs_every_job_to_the_tracking_server(tmp_path: Path) -> None:
    db, port = tmp_path / "mlflow.db", free_port()
    server = start_mlflow_server(f"sqlite:///{db}", tmp_path / "artifacts", port)
    try:
        args = ["-m", "hydra/launcher=slurm", "hydra.launcher.gpus_per_node=null", "hydra.launcher.mem_gb=2"]
        args += ["hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=15"]
        args += ["model=segresnet,densenet", "backend=eager", "smoke=true", "batch_size=2", "gpu=cpu", *QUICK]
        args += [f"tracking.uri=http://127.0.0.1:{port}"]
        out = run_bench(args, timeout=900)
        assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    finally:
        stop_mlflow_server(server)
    client = MlflowClient(f"sqlite:///{db}")
    exp = [e.experiment_id for e in client.search_experiments()]
    jobs = client.search_runs(exp, "tags.kind = 'job'")
    (sweep,) = client.search_runs(exp, "tags.kind = 'sweep'")
    assert sorted(r.data.params["model"] for r in jobs) == ["densenet", "segresnet"]
    assert all(r.data.tags["status"] == "ok" and r.info.status == "FINISHED" for r in jobs)
    assert {r.data.tags["mlflow.parentRunId"] for r in jobs} == {sweep.info.run_id}
    assert sweep.info.status == "FINISHED"
    folder = sweep_folder(f"sqlite:///{db}", sweep.info.run_id)
    logs = list((folder / ".submitit").rglob("*_log.out"))
    assert len(logs) == 2  # each job ran as its own SLURM job
    # one sweep, one folder: the jobs' folders and the report beside the sweep's own files
    assert {"0", "1", "report", ".bench_sweep.json"} <= {p.name for p in folder.iterdir()}
