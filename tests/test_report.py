"""The study preset as one command, and the report read back from MLflow: tables, CSV, plots, artifacts."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from mlflow import MlflowClient

from src import PROJECT_ROOT, report
from tests.conftest import QUICK, TEST_CONF, run_bench, sweep_folder

pytestmark = pytest.mark.slow


def test_the_study_preset_runs_its_grid_and_the_report_shows_it(store: str, tmp_path: Path) -> None:
    """The study preset sweeps batch_index over the longest list of study rows (SegResNet's six); a model with
    two rows gets two: the other combinations are no job (no run, no folder)."""
    args = ["+experiment=study", "hydra.sweeper.params.model=densenet", "smoke=true", "gpu=cpu", *QUICK]
    out = run_bench([*args, f"tracking.uri={store}"])
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(store)
    (sweep,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.kind = 'sweep'"
    )
    jobs = client.search_runs([sweep.info.experiment_id], "tags.kind = 'job'")
    cells = {
        (r.data.params["backend"], r.data.params["precision"], r.data.params["batch_size"]) for r in jobs
    }
    assert cells == {(b, p, n) for b, p in report.STUDY_COLUMNS.values() for n in ("32", "256")}
    assert len(jobs) == 8 and sweep.data.metrics["jobs_total"] == 8
    folder = sweep_folder(store, sweep.info.run_id)
    assert len([d for d in folder.iterdir() if d.is_dir() and d.name.isdigit()]) == 8
    assert "[8/8]" in out.stdout

    assert report.main(["--uri", store, "--sweep", "latest", "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## none (CPU)" in md
    header = "| Task | Batch Size | Native PyTorch | Torch Script | TensorRT-FP32 | TensorRT-FP16 |"
    assert header in md
    with (tmp_path / "rep" / "study_0.csv").open() as f:
        rows = {row["Batch Size"]: row for row in csv.DictReader(f)}
    eager = next(
        r for r in jobs if r.data.params["backend"] == "eager" and r.data.params["batch_size"] == "256"
    )
    figure = eager.data.metrics["throughput_img_s"]  # the cell is the run's figure, rounded for reading
    assert float(rows["256"]["Native PyTorch"].split()[0]) == pytest.approx(figure, abs=0.5)
    assert rows["256"]["Native PyTorch"].endswith(report.UNSTABLE_MARK)  # a smoke run is never stable
    assert rows["256"]["TensorRT-FP16"] == "UNAVAILABLE" and rows["32"]["Improvement (TRT vs PT)"] == "-"
    for png in ("throughput_vs_batch.png", "speedup_vs_eager_fp32.png"):
        assert (tmp_path / "rep" / png).stat().st_size > 5000
    assert not (tmp_path / "rep" / "images_per_joule.png").exists()  # no energy counter on this CPU
    logged = {a.path for a in client.list_artifacts(sweep.info.run_id, "report")}
    assert {"report/report.md", "report/wide.csv", "report/throughput_vs_batch.png"} <= logged


def test_a_plugin_model_appears_in_the_report_with_no_edit_of_the_report(store: str, tmp_path: Path) -> None:
    """The report takes its columns from conf/study/ and each model's task from the model registry: a model
    registered by a plugin shows up under its own task name, in the study's columns."""
    import tests.plugins.tiny_model  # noqa: F401  (registers `tinynet` in this process, as the sweep does)

    args = ["-m", f"hydra.searchpath=[file://{TEST_CONF}]", "plugins=[tests.plugins.tiny_model]"]
    args += ["model=tinynet", "+study=pytorch,torchscript,tensorrt_fp16", "gpu=cpu", "batch_index=1", *QUICK]
    out = run_bench([*args, f"tracking.uri={store}"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert report.main(["--uri", store, "--sweep", "latest", "--out", str(tmp_path / "rep"), "--no-log"]) == 0
    with (tmp_path / "rep" / "study_0.csv").open() as f:
        (row,) = csv.DictReader(f)
    assert row["Task"] == "Keypoint estimation (tinynet, 3x16x16)" and row["Batch Size"] == "4"
    assert float(row["Native PyTorch"].split()[0]) > 0 and float(row["Torch Script"].split()[0]) > 0
    assert row["TensorRT-FP16"] == "UNAVAILABLE" and list(row)[2:6] == list(report.STUDY_COLUMNS)
    assert "tinynet" not in (PROJECT_ROOT / "src" / "report.py").read_text()


def test_a_job_interrupted_then_measured_again_shows_once_as_its_newer_run(store: str) -> None:
    """A resumed sweep measures an interrupted job again: the interrupted run (which may not have named its
    card) is no result of the configuration, so the report's cell is the newer run of the same config key;
    a job that failed and was not run again stays."""
    client = MlflowClient(store)
    exp = client.create_experiment("resumed")
    params = {"model": "densenet", "input_shape": "3x224x224", "batch_size": "256", "backend": "compile"}
    params |= {"precision": "bf16", "channels_last": "true", "backend.mode": "default"}

    def job(key: str, tags: dict[str, str], metrics: dict[str, float]) -> str:
        run = client.create_run(exp, tags={"kind": "job", "config_key": key, **tags})
        for name, value in {**params, "precision": "fp16" if key == "other" else "bf16"}.items():
            client.log_param(run.info.run_id, name, value)
        for name, value in metrics.items():
            client.log_metric(run.info.run_id, name, value)
        client.set_terminated(run.info.run_id)
        return run.info.run_id

    job("k1", {"status": "failed", "reason": "interrupted: the sweep was stopped while this job ran"}, {})
    newer = job("k1", {"status": "ok", "gpu_name": "NVIDIA H200"}, {"throughput_img_s": 10283.0})
    failed = job("other", {"status": "failed", "gpu_name": "NVIDIA H200"}, {})
    t = report.tidy(report.load_runs(store, "resumed", None, None))
    assert sorted(t["run_id"]) == sorted([newer, failed])
    assert t.set_index("run_id").loc[newer, "img_s"] == 10283.0
