"""Real `python -m src.bench -m ...` sweeps in a subprocess, read back with `mlflow.search_runs`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from src.parent.sweep import FAILED_EXIT, REFUSED_EXIT
from tests.conftest import QUICK, TEST_CONF, run_bench, start_bench, sweep_folder, user_folders

pytestmark = pytest.mark.slow


def runs(store: str):
    mlflow.set_tracking_uri(store)
    return mlflow.search_runs(search_all_experiments=True)


def test_sweep_over_three_models_and_two_backends(store: str, tmp_path: Path) -> None:
    args = ["-m", "model=densenet,yolo,segresnet", "backend=eager,torchscript", "smoke=true", "batch_size=2"]
    out = run_bench([*args, *QUICK, f"tracking.uri={store}"])
    assert out.returncode == 0, out.stderr[-3000:]
    df = runs(store)
    jobs, parents = df[df["tags.kind"] == "job"], df[df["tags.kind"] == "sweep"]
    assert len(parents) == 1 and len(jobs) == 6
    parent = parents.iloc[0]
    assert parent["status"] == "FINISHED" and parent["tags.jobs_ok"] == "6"
    assert set(jobs["tags.mlflow.parentRunId"]) == {parent["run_id"]}
    assert set(jobs["tags.status"]) == {"ok"} and set(jobs["status"]) == {"FINISHED"}
    pairs = set(zip(jobs["params.model"], jobs["params.backend"], strict=True))
    assert pairs == {(m, b) for m in ("densenet", "yolo", "segresnet") for b in ("eager", "torchscript")}
    assert set(jobs["params.input_shape"]) == {"3x32x32", "3x64x64", "4x16x16x16"}
    assert (jobs["metrics.throughput_img_s"] > 0).all() and (jobs["metrics.latency_p99_ms"] > 0).all()
    assert (jobs["metrics.iterations"] >= 3).all()
    ts = jobs[jobs["params.backend"] == "torchscript"]
    assert (ts["metrics.artifact_size_mib"] > 0).all() and set(ts["tags.torchscript_method"]) == {"trace"}
    assert "densenet-eager-fp32-bs2" in out.stderr  # the summary table printed at the end


def test_failures_are_results_and_the_sweep_goes_on(store: str, tmp_path: Path) -> None:
    args = ["-m", f"hydra.searchpath=[file://{TEST_CONF}]", "plugins=[tests.plugins.fault_models]"]
    args += ["model=hang,crash,oom,sleepy", "batch_size=2", *QUICK, "measure.timeout_s=10"]
    out = run_bench([*args, f"tracking.uri={store}"])
    assert out.returncode == FAILED_EXIT, out.stderr[-3000:]  # the sweep went on, and says jobs failed
    df = runs(store)
    jobs = df[df["tags.kind"] == "job"].set_index("params.model")
    assert jobs.loc["hang", "tags.status"] == "timeout" and jobs.loc["hang", "status"] == "FAILED"
    assert jobs.loc["crash", "tags.status"] == "failed" and "SIGSEGV" in jobs.loc["crash", "tags.reason"]
    assert jobs.loc["oom", "tags.status"] == "oom" and jobs.loc["oom", "status"] == "FINISHED"
    assert jobs.loc["sleepy", "tags.status"] == "ok" and jobs.loc["sleepy", "metrics.throughput_img_s"] > 0
    assert df[df["tags.kind"] == "sweep"].iloc[0]["tags.jobs_timeout"] == "1"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["batch_size=0"], "batch_size must be a positive integer, got 0"),
        (["-m", "model=densenet,segresnet", "batch_size=4,0"], "in 2 of 4 jobs"),
        (["-m", "model=segresnet", "model.input_shape=[4,20,20,20]"], "divisible by 8, got 20, 20, 20"),
        (["-m", "model=densenet,foo"], "Available options in 'model': densenet, segresnet, yolo"),
        (["model=foo"], "Available options in 'model'"),
        (["precision=fp8"], "Available options in 'precision'"),
    ],
)
def test_bad_input_exits_non_zero_before_anything_is_written(
    args: list[str], expected: str, tmp_path: Path
) -> None:
    db = tmp_path / "mlruns" / "mlflow.db"
    before = user_folders()
    out = run_bench([*args, f"tracking.uri=sqlite:///{db}"], timeout=120)
    assert out.returncode != 0
    assert expected in out.stderr
    assert not db.exists() and user_folders() == before


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["batch_size=3", "batch_index=1"], "batch_size=3 and batch_index=1 (batch 256 for densenet)"),
        (["backend=cudagraphs", "gpu=cpu"], "CUDA graphs need a CUDA GPU; this job runs on cpu; allowed:"),
        (["gpu=7"], "gpu.index=7: this host has"),
        (["gpu.index=7"], "gpu.index=7: this host has"),
    ],
)
def test_alone_what_cannot_run_is_refused_with_status_2(args: list[str], expected: str, store: str) -> None:
    """Inside a sweep such a job is a result (unsupported, unavailable); asked for alone, it is bad input."""
    from src.parent.early import visible_gpus

    if "7" in args[-1] and (visible_gpus() or 0) > 7:
        pytest.skip("this host has a GPU 7")
    before = user_folders()
    out = run_bench([*args, f"tracking.uri={store}"], timeout=120)
    assert out.returncode == REFUSED_EXIT, out.stderr[-2000:]
    assert expected in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 2  # one paragraph
    assert user_folders() == before and not Path(store.removeprefix("sqlite:///")).exists()


@pytest.mark.parametrize("start", ["fresh", "template"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_ends_the_running_job_and_the_sweep_with_a_status(
    signum: int, start: str, store: str, tmp_path: Path
) -> None:
    args = ["-m", f"hydra.searchpath=[file://{TEST_CONF}]", "plugins=[tests.plugins.fault_models]"]
    args += [f"child_start={start}"]
    args += ["model=hang,sleepy", *QUICK, "measure.timeout_s=300", f"tracking.uri={store}"]
    proc = start_bench(args, env={"PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:  # wait until the hanging job's child is measuring
        if "hang-eager-fp32-bs32: measuring" in line:
            break
    sweep_dir = sweep_folder(store)
    named = f"{sweep_dir.parent.name}/{sweep_dir.name}"  # in a process's arguments, relative or not
    time.sleep(3)
    proc.send_signal(signum)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    df = runs(store)
    jobs, parent = df[df["tags.kind"] == "job"], df[df["tags.kind"] == "sweep"].iloc[0]
    assert len(jobs) == 1 and jobs.iloc[0]["tags.status"] == "failed"
    assert jobs.iloc[0]["tags.reason"].startswith("interrupted")
    # what the child had reported by then is kept: the device it identified, the phase it was in
    assert jobs.iloc[0]["params.device"] == "cpu" and jobs.iloc[0]["tags.gpu_name"] != ""
    assert jobs.iloc[0]["tags.phase"] == "parity_reference"
    assert parent["status"] == "KILLED"
    leftover = subprocess.run(["pgrep", "-f", named], capture_output=True, text=True)
    assert leftover.stdout == ""  # the measuring child was killed with the sweep
    for _ in range(20):  # and the sweep's template process ended with it (this process's own may live on)
        templates = subprocess.run(["pgrep", "-f", "-P", "1", "src.child.template"], capture_output=True)
        if not templates.stdout:
            break
        time.sleep(0.5)
    assert templates.stdout == b""


@pytest.mark.slow
def test_a_rerun_sweep_measures_only_what_is_missing_unless_forced(store: str, tmp_path: Path) -> None:
    base = ["-m", "model=segresnet", "smoke=true", "gpu=cpu", *QUICK, "telemetry.sample_hz=0"]
    base += [f"tracking.uri={store}", "measure.parity_samples=0"]
    first = run_bench([*base, "batch_size=1,2"])
    assert first.returncode == 0, first.stderr[-3000:]
    assert len(runs(store).query("`tags.kind` == 'job'")) == 2
    # the same sweep grown by one job (as after an interruption): only the missing job is measured
    second = run_bench([*base, "batch_size=1,2,3"])
    assert second.returncode == 0, second.stderr[-3000:]
    assert (second.stdout + second.stderr).count("skipped, identical to finished run") == 2
    jobs = runs(store).query("`tags.kind` == 'job'")
    assert sorted(jobs["params.batch_size"]) == ["1", "2", "3"]
    assert jobs["tags.config_key"].nunique() == 3
    forced = run_bench([*base, "batch_size=1,2,3", "force=true"])
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert len(runs(store).query("`tags.kind` == 'job'")) == 6


def test_a_stopped_parallel_sweep_ends_every_job_run_with_a_status(store: str, tmp_path: Path) -> None:
    """SIGTERM to a hydra/launcher=gpus sweep: joblib kills its workers (and their measuring children) before
    their jobs can record it, so the sweep ends the runs they left RUNNING (once, both stayed RUNNING)."""
    args = ["-m", "hydra/launcher=gpus", "hydra.launcher.n_jobs=2", "gpu=any", "measure.seed=0,1"]
    args += [f"hydra.searchpath=[file://{TEST_CONF}]", "plugins=[tests.plugins.fault_models]", "model=hang"]
    args += [*QUICK, "measure.timeout_s=300", "measure.parity_samples=0", f"tracking.uri={store}"]
    proc = start_bench(args, env={"PYTHONUNBUFFERED": "1"})
    started = 0
    for line in proc.stdout:  # both jobs have their run: one measures, the other waits for the CPU's lock
        started += "measuring in a child process" in line
        if started == 2:
            break
    sweep_dir = sweep_folder(store)
    named = f"{sweep_dir.parent.name}/{sweep_dir.name}"  # in a process's arguments, relative or not
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    df = runs(store)
    jobs, parent = df[df["tags.kind"] == "job"], df[df["tags.kind"] == "sweep"].iloc[0]
    assert len(jobs) == 2 and set(jobs["status"]) == {"FAILED"} and set(jobs["tags.status"]) == {"failed"}
    assert all(reason.startswith("interrupted") for reason in jobs["tags.reason"])
    assert parent["status"] == "KILLED"
    for _ in range(20):  # the measuring children end within a second of their killed launcher
        leftover = subprocess.run(["pgrep", "-af", named], capture_output=True, text=True).stdout
        if not leftover:
            break
        time.sleep(0.5)
    assert leftover == ""


@pytest.mark.slow
def test_the_parallel_launcher_never_measures_two_jobs_on_one_device(store: str, tmp_path: Path) -> None:
    """hydra/launcher=gpus runs jobs at once (here 2 workers); gpu=any claims a free device per job. On this
    CPU-only host every job claims the CPU, so the two windows must follow each other."""
    args = ["-m", "hydra/launcher=gpus", "hydra.launcher.n_jobs=2", "gpu=any"]
    args += [f"hydra.searchpath=[file://{TEST_CONF}]", "plugins=[tests.plugins.fault_models]", "model=sleepy"]
    args += [*QUICK, "measure.min_duration_s=3", "measure.seed=0,1", "measure.parity_samples=0"]
    out = run_bench([*args, f"tracking.uri={store}"])
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = runs(store).query("`tags.kind` == 'job'").sort_values("metrics.window_start_unix")
    assert list(jobs["tags.status"]) == ["ok", "ok"]
    assert set(jobs["params.gpu"]) == {"any"} and set(jobs["params.device"]) == {"cpu"}
    first, second = jobs.iloc[0], jobs.iloc[1]
    assert first["metrics.window_end_unix"] <= second["metrics.window_start_unix"]
    assert max(jobs["metrics.lock_wait_s"]) > 1  # the second job waited for the first's lock


def test_runs_given_one_output_folder_never_share_a_jobs_files(store: str, tmp_path: Path) -> None:
    """Two runs started at once with the same output folder (as Hydra's by-the-second folders once gave two
    sweeps started in the same second): each child measures its own spec (its run's artifact spec.json)."""
    # unlocked, as two jobs on two GPUs are: they overlap
    args = ["model=densenet", "smoke=true", *QUICK, "measure.min_duration_s=4", "telemetry.lock=false"]
    args += [f"tracking.uri={store}", f"hydra.run.dir={tmp_path / 'same'}"]
    procs = [start_bench([f"batch_size={batch}", *args]) for batch in (1, 3)]
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-3000:]
    df = runs(store)
    assert sorted(df["params.batch_size"]) == ["1", "3"] and set(df["tags.status"]) == {"ok"}
    for _, run in df.iterrows():
        path = mlflow.artifacts.download_artifacts(
            run_id=run["run_id"], artifact_path="spec.json", tracking_uri=store, dst_path=str(tmp_path)
        )
        assert json.loads(Path(path).read_text())["batch_size"] == int(run["params.batch_size"])


def test_sweep_time_with_nothing_to_run_or_print_refuses(tmp_path: Path) -> None:
    """The benchmark script's bad input: no sweep asked for and no store that records one."""
    store = tmp_path / "store"
    script = Path(__file__).parents[1] / "benchmarks" / "sweep_time.py"
    out = subprocess.run(
        [sys.executable, str(script), "--sweeps", "", "--store", str(store)], capture_output=True, text=True
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert "--sweeps names none of cold, warm, old" in out.stderr and "records none" in out.stderr
    assert not store.exists()
