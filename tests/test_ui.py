"""The MLflow UI as a user sees it: a real `mlflow server` on loopback over a store filled by a real CPU
sweep, opened in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright; no downloaded
browser). Screenshots go to $BENCH_SCREENSHOT_DIR (CI keeps them) or the test's temporary folder."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest
from mlflow import MlflowClient

from tests.conftest import QUICK, run_bench

CHROMIUM = "/usr/bin/chromium"
EXPANDER = "runnamecellrenderer.tsx_46"  # MLflow 3.17's expand button on a parent run's name cell
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Debian's chromium at {CHROMIUM}"),
]


def as_shown(value: float) -> str:
    """A metric as MLflow's compare page draws it: 4 significant digits, at least 1 decimal, trailing
    zeros dropped (95.998 -> "96", 122.93 -> "122.9", 0.6090 -> "0.609", 1796103877.46 -> "1796103877.5")."""
    decimals = max(1, 4 - len(str(int(abs(value)))))
    return f"{value:.{decimals}f}".rstrip("0").rstrip(".")


FIRST_COLUMNS = ["model", "batch_size", "backend", "precision", "channels_last", "status", "stable"]


def close_the_assistant(page) -> None:
    """MLflow 3.17 opens its assistant panel beside every page; closed, the table has the width."""
    close = page.locator("[data-component-id='mlflow.assistant.chat_panel.close']")
    if close.count():
        close.first.click()


def report_frame(page) -> dict:
    """The HTML report as MLflow's artifact viewer renders it (in a frame): its heading and images."""
    for _ in range(120):
        for frame in page.frames:
            heading = frame.locator("h1")
            if heading.count() and frame.locator("img").count():
                return {"title": heading.first.inner_text(), "images": frame.locator("img").count()}
        page.wait_for_timeout(500)
    return {"title": None, "images": 0}


def test_the_ui_lists_the_sweeps_runs_and_compares_them(
    store: str, mlflow_server: str, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    args = ["-m", "model=segresnet", "backend=eager,torchscript", "smoke=true", "batch_size=2", "gpu=cpu"]
    out = run_bench([*args, *QUICK, f"tracking.uri={store}"])
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(store)
    jobs = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.kind = 'job'")
    exp_id = jobs[0].info.experiment_id
    shots = Path(os.environ.get("BENCH_SCREENSHOT_DIR") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1800, "height": 1100})
        page.goto(f"{mlflow_server}/#/experiments/{exp_id}/runs")
        page.get_by_text("sweep-").first.wait_for(timeout=60_000)  # the sweep's parent run, collapsed
        page.locator(f"button[data-component-id$='{EXPANDER}']").first.click()  # show its child runs
        for run in jobs:
            page.get_by_text(run.info.run_name, exact=True).first.wait_for(timeout=60_000)
        page.screenshot(path=str(shots / "mlflow-runs.png"))
        ids = json.dumps([r.info.run_id for r in jobs])
        page.goto(
            f"{mlflow_server}/#/compare-runs?runs={quote(ids)}&experiments={quote(json.dumps([exp_id]))}"
        )
        page.get_by_text("Metrics", exact=True).last.wait_for(timeout=60_000)
        page.get_by_text("Metrics", exact=True).last.scroll_into_view_if_needed()
        page.get_by_text("build_time_s", exact=True).first.wait_for(timeout=30_000)
        metric = page.get_by_text("throughput_img_s", exact=True)
        box = page.get_by_text("build_time_s", exact=True).first.bounding_box()
        figures = [as_shown(r.data.metrics["throughput_img_s"]) for r in jobs]
        for _ in range(80):  # the metrics table is a virtualised grid, alphabetical: wheel it down until
            # the throughput row and its values are drawn (names and values scroll apart: see the README)
            body = page.inner_text("body")
            if metric.count() and all(f in body for f in figures):
                break
            page.mouse.move(box["x"] + 500, box["y"] + 10)  # over the values, which drive the names
            page.mouse.wheel(0, 30)
            page.wait_for_timeout(250)
        metric.first.scroll_into_view_if_needed(timeout=10_000)
        page.screenshot(path=str(shots / "mlflow-compare.png"))
        # the saved view the sweep printed: the key columns shown without touching the column picker
        link = re.search(r"in the MLflow UI: (\S+)", out.stderr).group(1)
        page.goto(link.replace("http://127.0.0.1:5000", mlflow_server))
        header = page.get_by_text("throughput_img_s", exact=True).first
        header.wait_for(timeout=60_000)
        page.get_by_text("backend", exact=True).first.wait_for(timeout=30_000)
        close_the_assistant(page)
        page.get_by_text("latency_p99_ms", exact=True).first.wait_for(timeout=30_000)
        view = page.inner_text("body")
        page.screenshot(path=str(shots / "mlflow-saved-view.png"))
        order = [page.get_by_text(name, exact=True).first.bounding_box() for name in FIRST_COLUMNS]
        menu = page.locator("[data-testid='saved-views-trigger']").inner_text()
        # its chart tab: the named charts alone, every run of the view in each chart's legend
        page.locator("input[type=radio][value=CHART]").first.dispatch_event("click")
        page.get_by_text("throughput_img_s vs. latency_p99_ms").first.wait_for(timeout=60_000)
        page.wait_for_timeout(2000)
        charts = page.inner_text("body")
        page.screenshot(path=str(shots / "mlflow-view-charts.png"))
        parent = client.search_runs([exp_id], "tags.kind = 'sweep'")[0].info.run_id
        page.goto(f"{mlflow_server}/#/experiments/{exp_id}/runs/{parent}")
        page.get_by_text("Fastest per model and batch size", exact=False).first.wait_for(timeout=60_000)
        close_the_assistant(page)
        sweep_page = page.inner_text("body")
        page.screenshot(path=str(shots / "mlflow-sweep-run.png"))
        page.goto(f"{mlflow_server}/#/experiments/{exp_id}/runs/{parent}/artifacts/report/report.html")
        frame = report_frame(page)
        page.screenshot(path=str(shots / "mlflow-report.png"))
        browser.close()
    assert "Error loading shared view state" not in view
    for run in jobs:  # each job run listed in the view, with its throughput in the table
        assert run.info.run_name in view
    for run in jobs:  # side by side: each run's name and its throughput (MLflow shows 4-5 digits)
        assert run.info.run_name in body
        assert as_shown(run.data.metrics["throughput_img_s"]) in body
    assert (shots / "mlflow-runs.png").stat().st_size > 10_000
    # the view's first columns, left to right, as the README lists them
    assert all(box is not None for box in order), FIRST_COLUMNS
    assert [b["x"] for b in order] == sorted(b["x"] for b in order)
    assert "Benchmark comparison" in menu  # listed in MLflow's Views menu, and open
    for title in ("throughput_img_s", "speedup_vs_eager_fp32", "throughput_img_s vs. latency_p99_ms"):
        assert title in charts
    assert "build_time_s" not in charts and "iterations" not in charts  # not MLflow's chart per metric
    for run in jobs:  # every run in every chart's legend, beside the run list
        assert charts.count(run.info.run_name) >= 4
    assert "2 jobs" in sweep_page and "img/s" in sweep_page  # the sweep's description, its answer
    assert frame["title"] == "Inference benchmark report" and frame["images"] >= 2
    assert shutil.which("chromium") or Path(CHROMIUM).exists()
