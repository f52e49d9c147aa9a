"""The comparisons people make next: two sweeps compared cell by cell (`--compare`, `--fail-on-slower`),
the best configuration within a latency budget (`--max-p99-ms`), and the cost of a million images."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from src import PROJECT_ROOT
from tests.conftest import TEST_CONF, run_bench, sweep_folder

pytestmark = pytest.mark.slow
PLUGINS = "plugins=[tests.plugins.fault_models,tests.plugins.narrow_backend]"
SLEEPY = [f"hydra.searchpath=[file://{TEST_CONF}]", PLUGINS, "model=sleepy", "gpu=cpu", "batch_size=2"]
QUICK = ["measure.stop=fixed", "measure.warmup_iters=1", "measure.min_iters=3", "measure.min_duration_s=0.4"]


def report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "src.report", *args], cwd=PROJECT_ROOT, capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def two_sweeps(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The same sleepy model measured twice, its call made twice as slow in the second sweep (a
    constructed slowdown); one backend on each side only."""
    store = f"sqlite:///{tmp_path_factory.mktemp('compare') / 'mlflow.db'}"
    first = run_bench(["-m", *SLEEPY, "backend.name=eager,memo", *QUICK, f"tracking.uri={store}"])
    assert first.returncode == 0, first.stderr[-3000:]
    slower = ["backend.name=eager,fast_but_wrong", "model.options.sleep_ms=40"]
    second = run_bench(["-m", *SLEEPY, *slower, *QUICK, f"tracking.uri={store}"])
    assert second.returncode == 0, second.stderr[-3000:]
    return store


def test_two_sweeps_compared_name_the_slower_cell_and_what_differs(two_sweeps: str, tmp_path: Path) -> None:
    out = report("--uri", two_sweeps, "--compare", "previous", "latest", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "1 cells on both sides: 0 faster, 1 slower, 0 same" in out.stdout
    assert "slower: eager fp32 sleepy b2" in out.stdout
    text = (tmp_path / "compare.md").read_text()
    assert "| model.sleep_ms | 20 | 40 |" in text  # the one setting that differs, listed once
    assert "BASE only (1)" in text and "memo" in text and "NEW only (1)" in text and "fast_but_wrong" in text
    assert (tmp_path / "compare_ratios.png").stat().st_size > 0
    ratio = float((tmp_path / "compare.csv").read_text().splitlines()[1].split(",")[7])
    assert 0.4 < ratio < 0.6  # 20 ms -> 40 ms a call
    client = MlflowClient(two_sweeps)
    exp = [e.experiment_id for e in client.search_experiments()]
    (newest, _) = client.search_runs(exp, "tags.kind = 'sweep'", order_by=["start_time DESC"])
    logged = {a.path for a in client.list_artifacts(newest.info.run_id, "compare")}
    assert "compare/compare.md" in logged  # beside NEW's sweep's own report


def test_fail_on_slower_exits_non_zero_on_a_slowdown_beyond_noise(two_sweeps: str, tmp_path: Path) -> None:
    args = ["--uri", two_sweeps, "--out", str(tmp_path), "--no-log", "--fail-on-slower"]
    slower = report(*args, "10", "--compare", "previous", "latest")
    assert slower.returncode == 5, slower.stdout + slower.stderr
    assert "1 cell(s) slower by more than 10% beyond their noise" in slower.stdout
    assert report(*args, "60", "--compare", "previous", "latest").returncode == 0  # a 50% drop is within 60%
    same = report(*args, "10", "--compare", "latest", "latest")
    assert same.returncode == 0 and "0 slower, 2 same" in same.stdout


def test_a_latency_budget_names_another_best_configuration(store: str, tmp_path: Path) -> None:
    """DenseNet201 at batch 1 and 64 on the CPU, priced at 3.60 USD an hour: batch 64 is faster, and its
    p99 is over a budget set between the two; the budget's best is batch 1."""
    args = ["-m", "model=densenet", "smoke=true", "batch_size=1,64", "gpu=cpu", "cost.usd_per_hour=3.6"]
    out = run_bench([*args, *QUICK, f"tracking.uri={store}"])
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.kind = 'job'")
    by_batch = {int(r.data.params["batch_size"]): r.data.metrics for r in runs}
    assert by_batch[64]["throughput_img_s"] > by_batch[1]["throughput_img_s"]
    for m in by_batch.values():  # 3.60 USD an hour = 0.001 USD a second
        assert m["usd_per_million_images"] == pytest.approx(1e3 / m["throughput_img_s"])
    budget = (by_batch[1]["latency_p99_ms"] + by_batch[64]["latency_p99_ms"]) / 2
    free, within = tmp_path / "free", tmp_path / "within"
    assert report("--uri", store, "--out", str(free)).returncode == 0
    assert report("--uri", store, "--out", str(within), "--max-p99-ms", f"{budget:.3f}").returncode == 0
    with (free / "best.csv").open() as f:
        best_free = max(csv.DictReader(f), key=lambda r: float(r["img_s"]))  # one row per batch without it
    with (within / "best.csv").open() as f:
        (best_within,) = csv.DictReader(f)  # one row per model and GPU with it, at any batch
    assert best_free["batch"] == "64" and best_within["batch"] == "1"
    assert best_within["configuration"] == "eager fp32 (batch 1)"
    assert float(best_within["p99_ms"]) <= budget < float(best_free["p99_ms"])
    assert "Latency budget: p99 <=" in (within / "report.md").read_text()
    assert "usd_per_million_images" in (free / "wide.csv").read_text().splitlines()[0]
    assert "Best USD/M img" in (free / "report.md").read_text()


def test_without_a_price_the_cost_column_is_absent(two_sweeps: str) -> None:
    client = MlflowClient(two_sweeps)
    exp = [e.experiment_id for e in client.search_experiments()]
    (newest, _) = client.search_runs(exp, "tags.kind = 'sweep'", order_by=["start_time DESC"])
    text = (sweep_folder(two_sweeps, newest.info.run_id) / "report" / "report.md").read_text()
    assert "Best available" in text and "USD" not in text and "usd_per_million_images" not in text


def test_two_smoke_sweeps_of_real_models_compared_as_the_readme_says(store: str, tmp_path: Path) -> None:
    """DenseNet201 and YOLO at their smoke shapes, swept twice with one setting changed, then the README's
    `--compare previous latest`: every cell on both sides with a verdict, the setting listed once."""
    args = ["-m", "model=densenet,yolo", "smoke=true", "batch_size=2", *QUICK, f"tracking.uri={store}"]
    for samples in ("2", "1"):
        out = run_bench([*args, f"measure.parity_samples={samples}"])
        assert out.returncode == 0, out.stderr[-3000:]
    out = report("--uri", store, "--compare", "previous", "latest", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 cells on both sides:" in out.stdout
    with (tmp_path / "compare.csv").open() as f:
        cells = list(csv.DictReader(f))
    assert {c["model"] for c in cells} == {"densenet", "yolo"}
    assert all(c["verdict"] in ("faster", "slower", "same") and float(c["ratio"]) > 0 for c in cells)
    assert "| measure.parity_samples | 2 | 1 |" in (tmp_path / "compare.md").read_text()
