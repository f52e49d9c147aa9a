"""Answers, not only figures: the best available configuration, spread and `stable`, the plots and
their notes, the report logged as a sweep ends, the MLflow UI's saved views, speed-ups and descriptions, and
a sweep a person can follow. One real CPU sweep (three plugin backends on the `sleepy` model) is read back
through MLflow's client; the search preset and a single run are run for real too."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from mlflow import MlflowClient

from src import PROJECT_ROOT
from src.parent import answers
from src.parent.follow import Position, duration
from src.report_plots import pareto
from src.shared.results import Stability
from tests.conftest import TEST_CONF, run_bench, sweep_folder

PLUGINS = "plugins=[tests.plugins.fault_models,tests.plugins.narrow_backend]"
SLEEPY = [f"hydra.searchpath=[file://{TEST_CONF}]", PLUGINS, "model=sleepy", "gpu=cpu", "batch_size=2"]
WINDOWS = [
    "measure.stop=fixed",
    "measure.warmup_iters=1",
    "measure.min_iters=3",
    "measure.min_duration_s=0.4",
    "measure.timeout_s=120",
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """eager (20 ms a call), memo (1 ms, right) and fast_but_wrong (no wait, zeros) on the sleepy model."""
    tmp = tmp_path_factory.mktemp("answers")
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    args = ["-m", *SLEEPY, "backend.name=eager,memo,fast_but_wrong", "progress_every_s=1", *WINDOWS]
    out = run_bench([*args, f"tracking.uri={store}"])
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(store)
    (parent,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.kind = 'sweep'"
    )
    exp_id = parent.info.experiment_id
    jobs = {
        r.data.params["backend"]: r
        for r in client.search_runs([exp_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    }
    folder = sweep_folder(store, parent.info.run_id)
    return {"out": out, "client": client, "parent": parent, "jobs": jobs, "dir": folder, "exp": exp_id}


pytestmark = pytest.mark.slow


def test_the_best_available_is_the_fastest_run_whose_output_passed_parity(sweep: dict) -> None:
    jobs = sweep["jobs"]
    assert {b: r.data.tags["status"] for b, r in jobs.items()} == dict.fromkeys(jobs, "ok")
    assert jobs["fast_but_wrong"].data.tags["parity"] == "fail"
    figures = {b: r.data.metrics["throughput_img_s"] for b, r in jobs.items()}
    assert figures["fast_but_wrong"] > figures["memo"] > figures["eager"]  # the wrong one is the fastest
    with (sweep["dir"] / "report" / "best.csv").open() as f:
        (best,) = csv.DictReader(f)
    assert best["configuration"] == "memo fp32" and best["run_id"] == jobs["memo"].info.run_id
    assert float(best["speedup_vs_eager_fp32"]) == pytest.approx(figures["memo"] / figures["eager"], rel=1e-6)
    with (sweep["dir"] / "report" / "study_0.csv").open() as f:
        (row,) = csv.DictReader(f)
    assert row["Best available"] == "memo fp32" and row["Best speed-up"].endswith("x")
    tags = {b: sweep["client"].get_run(r.info.run_id).data.tags.get(answers.BEST) for b, r in jobs.items()}
    assert tags == {"eager": None, "memo": "true", "fast_but_wrong": None}


def test_every_ok_run_carries_its_spread_and_whether_it_is_stable(sweep: dict) -> None:
    for run in sweep["jobs"].values():
        assert run.data.metrics["repeats"] == 3
        assert run.data.metrics["throughput_spread_pct"] >= 0
        assert run.data.metrics["cpu_probe_before_ms"] > 0 and run.data.metrics["cpu_probe_after_ms"] > 0
        assert run.data.tags["stable"] in ("true", "false")
        assert (run.data.tags["stable"] == "false") == ("unstable_reason" in run.data.tags)
    wide = (sweep["dir"] / "report" / "wide.csv").read_text().splitlines()[0].split(",")
    assert {"img_s_min", "img_s_max", "runs", "spread_pct", "stable"} <= set(wide)
    assert "stable" in sweep["out"].stderr.split("run ", 1)[1].splitlines()[0]  # the summary's header


def test_stability_thresholds_and_smoke_runs() -> None:
    assert Stability(spread_pct=1.0, cov_pct=2.0, gpu_busy_pct=95.0).tags() == {"stable": "true"}
    launch_bound = Stability(spread_pct=1.0, cov_pct=2.0, gpu_busy_pct=40.0).tags()
    assert launch_bound["stable"] == "false" and "launch-bound" in launch_bound["unstable_reason"]
    wobbly = Stability(spread_pct=Stability.SPREAD_PCT + 0.1, cov_pct=Stability.COV_PCT + 0.1).tags()
    assert "spread" in wobbly["unstable_reason"] and "CoV" in wobbly["unstable_reason"]
    assert Stability(spread_pct=0, cov_pct=0, smoke=True).tags()["stable"] == "false"
    steady_host = Stability(spread_pct=1.0, cov_pct=2.0, cpu_probe_ms=(6.0, 6.5))
    assert steady_host.tags() == {"stable": "true"}
    slowed = Stability(spread_pct=1.0, cov_pct=2.0, cpu_probe_ms=(6.0, 12.0))
    assert slowed.cpu_change_pct == pytest.approx(100.0)
    assert "host CPU speed changed 100%" in slowed.tags()["unstable_reason"]
    sped_up = Stability(spread_pct=1.0, cov_pct=2.0, cpu_probe_ms=(13.0, 6.5)).tags()
    assert sped_up["stable"] == "false" and "13.00 -> 6.50 ms" in sped_up["unstable_reason"]


def test_each_job_logs_its_speedup_and_a_one_line_description(sweep: dict) -> None:
    client, jobs = sweep["client"], sweep["jobs"]
    eager, memo = (client.get_run(jobs[b].info.run_id).data for b in ("eager", "memo"))
    assert eager.metrics[answers.SPEEDUP] == pytest.approx(1.0)
    gain = memo.metrics["throughput_img_s"] / eager.metrics["throughput_img_s"]
    assert memo.metrics[answers.SPEEDUP] == pytest.approx(gain)
    note = memo.tags[answers.NOTE]
    assert re.match(r"^[\d.]+ img/s \([\d.]+x eager fp32\), p99 [\d.e+-]+ ms, parity pass", note), note
    assert "parity fail" in client.get_run(jobs["fast_but_wrong"].info.run_id).data.tags[answers.NOTE]


def test_the_report_is_logged_to_the_parent_run_as_the_sweep_ends(sweep: dict) -> None:
    client, parent = sweep["client"], sweep["parent"]
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {
        "report/report.md",
        "report/best.csv",
        "report/wide.csv",
        "report/p99_vs_throughput.png",
    } <= logged
    assert parent.data.metrics["jobs_total"] == 3 and parent.data.metrics["jobs_done"] == 3


def test_the_plots_are_drawn_per_model_and_left_out_plots_say_why(sweep: dict) -> None:
    folder = sweep["dir"] / "report"
    for png in ("throughput_vs_batch", "p99_vs_throughput", "speedup_heatmap", "speedup_vs_eager_fp32"):
        assert (folder / f"{png}.png").stat().st_size > 5000
        assert f"![{png}]({png}.png)" in (folder / "report.md").read_text()
    md = (folder / "report.md").read_text()
    assert not (folder / "images_per_joule.png").exists()  # no energy counter on this CPU
    assert "### Images per joule against throughput\n\nleft out: no run has a measured energy" in md


def test_pareto_front_keeps_what_no_other_point_beats() -> None:
    points = [(100.0, 10.0), (200.0, 20.0), (150.0, 30.0), (50.0, 5.0), (200.0, 25.0)]
    assert pareto(points) == [3, 0, 1]


def test_the_experiment_has_saved_views_with_the_key_columns(sweep: dict) -> None:
    tags = sweep["client"].get_experiment(sweep["exp"]).tags
    assert tags[answers.KIND_TAG] == "custom_model_development"
    for key in ("bench-compare", "bench-compare-sleepy"):
        view = answers.saved_view(tags[answers.VIEW_TAG + key])
        assert "metrics.`throughput_img_s`" in view["selectedColumns"]
        assert "params.`backend`" in view["selectedColumns"] and "tags.`stable`" in view["selectedColumns"]
    assert (
        "params.model = 'sleepy'"
        in answers.saved_view(tags[answers.VIEW_TAG + "bench-compare-sleepy"])["searchFilter"]
    )


def test_a_sweep_a_person_can_follow(sweep: dict) -> None:
    err = sweep["out"].stdout + sweep["out"].stderr  # Hydra logs to stdout, the summary goes to stderr
    for k in (1, 2, 3):
        assert re.search(rf"\[{k}/3\] sleepy-\S+: measuring in a child process .*\(elapsed (\d+m)?\d+s", err)
    assert re.search(r"\[2/3\] .*~(\d+m)?\d+s left\)", err)  # an estimate (1m05s on a busy host)
    assert re.search(r"\[\d/3\] sleepy-\S+: (starting|building the model|measuring|[a-z ]+) for \d+s", err)
    parent = sweep["parent"]
    assert f"sweep {parent.info.run_name} ({parent.info.run_id}): 3 jobs, 3 ok" in err
    assert "?viewStateShareKey=bench-compare" in err
    assert f"report: {sweep['dir'].relative_to(PROJECT_ROOT) / 'report' / 'report.md'}" in err


def test_progress_line_format() -> None:
    where = Position(3, 10, started=1000.0)
    assert where.line("x", now=1060.0) == "[3/10] x (elapsed 1m00s, ~4m00s left)"
    assert where.line("x", now=1060.0, finished=True) == "[3/10] x (elapsed 1m00s, ~2m20s left)"
    assert Position(1, None, 0.0).line("y", now=5.0) == "[1/?] y (elapsed 5s)"
    assert duration(3725) == "1h02m"


def test_the_estimate_counts_measured_jobs_only(tmp_path: Path) -> None:
    """A resumed sweep's skipped jobs take no time: what is left follows the jobs that were measured."""
    Position(1, 5, 1000.0, tmp_path).note(10.0, measured=True)
    Position(2, 5, 1000.0, tmp_path).note(0.1, measured=False)  # already measured: a link
    where = Position(3, 5, 1000.0, tmp_path)
    where.note()  # started
    assert where.line("x", now=1011.0) == "[3/5] x (elapsed 11s, ~30s left)"
    where.note(10.0, measured=True)
    assert where.line("x", now=1021.0, finished=True) == "[3/5] x (elapsed 21s, ~20s left)"
    Position(4, 5, 1000.0, tmp_path).note()  # two jobs at once (a parallel launcher): half the wait
    Position(5, 5, 1000.0, tmp_path).note()
    assert where.line("x", now=1021.0) == "[3/5] x (elapsed 21s, ~10s left)"


def test_a_single_run_says_where_its_result_is(store: str, tmp_path: Path) -> None:
    out = run_bench([*SLEEPY, "backend.name=memo", *WINDOWS, f"tracking.uri={store}"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.search(r"\[1/1\] sleepy-memo-fp32-bs2: ok", out.stdout + out.stderr)
    assert re.search(r"run sleepy-memo-fp32-bs2 \([0-9a-f]{32}\): [\d.]+ img/s", out.stderr)
    assert "in the MLflow UI: http" in out.stderr and "viewStateShareKey=bench-compare" in out.stderr


def test_the_search_preset_stops_a_model_at_its_budget(store: str, tmp_path: Path) -> None:
    """Cheap candidates first; once a row's jobs used its share of search.budget_s, its other jobs are
    `skipped` (its eager fp32 reference is always measured)."""
    args = [
        "+experiment=best",
        *SLEEPY,
        "batch_index=null",
        "+candidate=eager_fp32,compile_fp16_cl,tensorrt_fp16",
    ]
    out = run_bench([*args, *WINDOWS, "search.budget_s=0.5", f"tracking.uri={store}"])
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.kind = 'job'")
    status = {r.data.params["backend"]: r.data.tags["status"] for r in runs}
    assert status == {"eager": "ok", "compile": "skipped", "tensorrt": "skipped"}
    reason = next(r for r in runs if r.data.params["backend"] == "compile").data.tags["reason"]
    assert "used its share of the search budget" in reason and "search.budget_s=0.5" in reason
    (best,) = [r for r in runs if r.data.tags.get(answers.BEST) == "true"]
    assert best.data.params["backend"] == "eager"
