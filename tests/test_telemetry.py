"""The trace summary on recorded samples, the per-device lock with real processes, and the CPU path."""

from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from src import PROJECT_ROOT
from src.parent.telemetry import Sample, Trace, step_metrics, summarize, write_csv
from tests.conftest import QUICK, TEST_CONF, run_bench


def sample(t: float, watts: float, events: int = 0, pids: dict[int, float] | None = None) -> Sample:
    values = {
        "power_w": watts,
        "gpu_util_pct": 100.0 if watts > 100 else 0.0,
        "mem_util_pct": 40.0,
        "sm_clock_mhz": 1980.0 if watts > 100 else 345.0,
        "mem_clock_mhz": 3201.0,
        "temperature_c": 30 + watts / 20,
        "mem_used_mib": 7000.0,
        "clock_events": events,
        "pids": pids or {},
    }
    return Sample(t, values)


RECORDED = Trace(
    samples=[
        sample(99.9, 80.0, events=0x1),  # idle, before the window: gpu_idle is not a throttle
        sample(100.0, 600.0, pids={4242: 7000.0}),
        sample(100.1, 650.0, events=0x4, pids={4242: 7000.0, 999: 300.0}),  # power cap; a stranger
        sample(100.2, 700.0, pids={4242: 7000.0}),
        sample(100.35, 90.0),  # after the window
    ],
    power_source="instant",
)


def test_the_trace_is_cut_to_the_timed_window_and_summarised(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        metrics, tags = summarize(RECORDED, 100.0, 100.3, own_pids={4242})
    assert metrics["trace_samples"] == 3
    assert metrics["power_peak_w"] == 700 and metrics["power_trace_mean_w"] == pytest.approx(650)
    assert metrics["sm_clock_min_mhz"] == 1980 and metrics["temperature_max_c"] == pytest.approx(65)
    assert tags["clock_event_reasons"] == "sw_power_cap"
    assert tags["other_gpu_processes"] == "999:300MiB"
    assert tags["trace_power_source"] == "instant"
    assert "sw_power_cap" in caplog.text and "999:300MiB" in caplog.text


def test_a_window_without_samples_is_said_not_zeroed() -> None:
    metrics, tags = summarize(RECORDED, 200.0, 201.0, own_pids=set())
    assert metrics == {} and tags["trace_status"] == "no samples inside the timed window"


def test_trace_csv_and_mlflow_steps(tmp_path: Path) -> None:
    path = tmp_path / "power_trace.csv"
    write_csv(RECORDED, path, 100.0, 100.3)
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 5 and [r["in_window"] for r in rows] == ["0", "1", "1", "1", "0"]
    assert rows[2]["clock_events"] == "0x4" and rows[2]["pids"] == "999 4242"
    steps = step_metrics(RECORDED, 100.0, 100.3)
    power = [(v, ts, step) for key, v, ts, step in steps if key == "trace_power_w"]
    assert power == [(600.0, 100000, 0), (650.0, 100100, 1), (700.0, 100200, 2)]


HOLD = (
    "import sys, time; from src.shared.locks import device_lock\n"
    "with device_lock(sys.argv[1]) as waited:\n"
    "    print(f'{time.time()} {waited}', flush=True); time.sleep(float(sys.argv[2]))\n"
    "print(time.time(), flush=True)\n"
)


def test_the_device_lock_makes_a_second_process_wait(tmp_path: Path) -> None:
    env = {"BENCH_LOCK_DIR": str(tmp_path), "PYTHONPATH": str(PROJECT_ROOT)}

    def hold(key: str, seconds: float) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", HOLD, key, str(seconds)], stdout=subprocess.PIPE, text=True, env=env
        )

    first = hold("GPU-abc", 1.5)
    first_acquired = first.stdout.readline()  # the first holds the lock from here on
    second, other = hold("GPU-abc", 0), hold("GPU-xyz", 0)
    released = float(first.communicate(timeout=30)[0].split()[0])
    acquired, waited = (float(v) for v in second.communicate(timeout=30)[0].split()[:2])
    assert float(first_acquired.split()[1]) < 0.5  # nobody held it before
    assert acquired >= released - 0.05 and waited >= 0.5  # the second got the card only after the first
    assert float(other.communicate(timeout=30)[0].split()[1]) < 0.5  # another device's lock is independent


@pytest.mark.slow
def test_two_sweeps_at_once_never_measure_on_one_device_together(store: str, tmp_path: Path) -> None:
    args = [f"hydra.searchpath=[file://{TEST_CONF}]", "plugins=[tests.plugins.fault_models]", "model=sleepy"]
    args += [*QUICK, "measure.min_duration_s=2", "gpu=cpu", f"tracking.uri={store}"]
    args += ["force=true"]  # the same job twice on purpose: else the second finds the first's result
    env = {"BENCH_LOCK_DIR": str(tmp_path / "locks")}
    first = subprocess.Popen(
        [sys.executable, "-m", "src.bench", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
    )
    second = run_bench(args, env=env)
    assert first.wait(timeout=300) == 0 and second.returncode == 0, second.stderr[-2000:]
    mlflow.set_tracking_uri(store)
    df = mlflow.search_runs(search_all_experiments=True).sort_values("metrics.window_start_unix")
    assert len(df) == 2 and set(df["tags.status"]) == {"ok"}
    first_end, second_start = df["metrics.window_end_unix"].iloc[0], df["metrics.window_start_unix"].iloc[1]
    assert first_end <= second_start  # the windows do not overlap
    assert df["metrics.lock_wait_s"].max() > 0.5


def test_a_cpu_run_has_no_gpu_energy_metrics_and_says_why(store: str, tmp_path: Path) -> None:
    from src.parent.config import to_job
    from src.parent.runner import run_job
    from tests.conftest import compose_cfg

    cfg = compose_cfg(*QUICK, "smoke=true", "batch_size=2", "gpu=cpu", f"tracking.uri={store}")
    _, run_id = run_job(to_job(cfg), tmp_path / "job", parent=None)
    run = mlflow.MlflowClient(store).get_run(run_id)
    m, t = run.data.metrics, run.data.tags
    assert "power_mean_w" not in m and "power_peak_w" not in m and "idle_power_w" not in m
    assert t["trace_status"] == "no GPU trace (CPU or no NVML)"
    assert t["nameplate_source"].startswith("none")
    if "energy_j" in m:  # a machine whose RAPL counters are readable
        assert (
            t["energy_status"] == "measured" and t["energy_source"].startswith("rapl:") and m["energy_j"] > 0
        )
    else:
        assert t["energy_status"].startswith("unavailable: CPU package energy (RAPL) cannot be read")
    assert m["window_end_unix"] > m["window_start_unix"] and m["lock_wait_s"] >= 0
