"""One job -> exactly one MLflow run, read back through MLflow's own client, whatever the job's outcome."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow

from src import PROJECT_ROOT
from src.parent import tracking
from src.parent.config import to_job
from src.parent.runner import run_job
from tests.conftest import QUICK, compose_cfg, fault_overrides


def job(store: str, tmp_path: Path, *overrides: str):
    cfg = compose_cfg(*QUICK, "batch_size=2", f"tracking.uri={store}", *overrides)
    result, run_id = run_job(to_job(cfg), tmp_path / "job", parent=None)
    return result, mlflow.MlflowClient(store).get_run(run_id)


def artifacts(store: str, run_id: str, path: str = "") -> set[str]:
    return {a.path for a in mlflow.MlflowClient(store).list_artifacts(run_id, path)}


def test_an_ok_run_holds_params_metrics_tags_and_artifacts(store: str, tmp_path: Path) -> None:
    _, run = job(store, tmp_path, "backend=torchscript", "smoke=true")
    p, m, t = run.data.params, run.data.metrics, run.data.tags
    assert run.info.status == "FINISHED" and t["status"] == "ok" and t["kind"] == "job"
    assert run.info.run_name == "densenet-torchscript-fp32-bs2"
    assert p["model"] == "densenet" and p["variant"] == "densenet201" and p["backend"] == "torchscript"
    assert p["precision"] == "fp32" and p["batch_size"] == "2" and p["input_shape"] == "3x32x32"
    assert p["device"] == "cpu" and p["measure.min_iters"] == "3" and p["measure.timeout_s"] == "120.0"
    for key in ("throughput_img_s", "latency_mean_ms", "latency_p50_ms", "latency_p90_ms", "latency_p95_ms"):
        assert m[key] > 0
    for key in ("latency_p99_ms", "latency_std_ms", "latency_cov_pct", "build_time_s", "first_call_ms"):
        assert key in m
    assert m["iterations"] >= 3 and m["peak_rss_mib"] > 0 and m["artifact_size_mib"] > 1
    assert t["gpu_name"] == "none (CPU)" and t["version.torch"] and t["version.mlflow"] == mlflow.__version__
    assert t["torchscript_method"] == "trace" and t["host"] and t["git_commit"]
    assert {"config.yaml", "spec.json", "child.log", "latencies_ms.csv", "engine"} <= artifacts(
        store, run.info.run_id
    )
    assert artifacts(store, run.info.run_id, "engine") == {"engine/model.torchscript.pt"}
    assert "reason" not in t


def test_a_failed_job_still_leaves_one_run_with_its_reason(store: str, tmp_path: Path) -> None:
    _, run = job(store, tmp_path, *fault_overrides("crash"))
    assert run.info.status == "FAILED" and run.data.tags["status"] == "failed"
    assert "SIGSEGV" in run.data.tags["reason"]
    assert "reason.txt" in artifacts(store, run.info.run_id)
    assert run.data.tags["child_exit_code"] == "-11"


def test_the_default_store_is_sqlite_under_the_projects_mlruns(monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking.tracking_uri(None)
    assert uri.startswith("sqlite:///") and uri.endswith("/mlruns/mlflow.db")
    assert tracking.sqlite_path(uri).parent.name == "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri(None) == "http://127.0.0.1:5000"
    assert tracking.tracking_uri("sqlite:////x/y.db") == "sqlite:////x/y.db"


def test_experiments_get_artifacts_next_to_their_sqlite_store(store: str) -> None:
    client = tracking.open_client(store)
    exp = client.get_experiment(tracking.experiment_id(client, "my bench"))
    assert exp.name == "my bench"
    assert exp.artifact_location.endswith("/mlruns/artifacts/my-bench")
    assert tracking.experiment_id(client, "my bench") == exp.experiment_id  # found, not created twice


def test_a_fresh_store_opened_by_several_processes_at_once_is_created_once(tmp_path: Path) -> None:
    """Without the lock around the first use, this fails in table creation (alembic errors)."""
    store = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    code = (
        "import sys; from src.parent import tracking; "
        "tracking.experiment_id(tracking.open_client(sys.argv[1]), 'x')"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, store], cwd=PROJECT_ROOT) for _ in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    assert [e.name for e in mlflow.MlflowClient(store).search_experiments()].count("x") == 1


def test_jobs_logging_at_once_to_a_store_made_once_lose_no_run(store: str) -> None:
    """As a sweep does: the store and experiment are made once, then several processes log together."""
    client = tracking.open_client(store)
    exp_id = tracking.experiment_id(client, "concurrent")
    code = (
        "import sys; from src.parent import tracking; c = tracking.open_client(sys.argv[1]);"
        "r = tracking.start_run(c, sys.argv[2], 'w' + sys.argv[3], None, {'kind': 'job'});"
        "tracking.log_all(c, r, params={'i': sys.argv[3]}, metrics={f'm{k}': k for k in range(200)},"
        " tags={'status': 'ok'}); c.set_terminated(r, 'FINISHED')"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, store, exp_id, str(i)], cwd=PROJECT_ROOT)
        for i in range(4)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    found = client.search_runs([exp_id])
    assert sorted(r.data.params["i"] for r in found) == ["0", "1", "2", "3"]
    assert all(len(r.data.metrics) == 200 and r.info.status == "FINISHED" for r in found)
