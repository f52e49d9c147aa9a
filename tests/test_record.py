"""Nothing lost, nothing misleading: resumed and concurrent sweeps, runs left RUNNING by a killed sweep,
broken stores and folders, wrong weights, exit codes. Real subprocess sweeps over real store files."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import mlflow
import pytest
import torch
import torchvision
from mlflow import MlflowClient

from src import report
from src.parent.sweep import FAILED_EXIT, REFUSED_EXIT
from tests.conftest import QUICK, TEST_CONF, free_port, run_bench, start_bench, user_folders

pytestmark = pytest.mark.slow
SLEEPY = [f"hydra.searchpath=[file://{TEST_CONF}]", "plugins=[tests.plugins.fault_models]", "model=sleepy"]
SLEEPY += [*QUICK, "measure.parity_samples=0", "gpu=cpu"]


def all_runs(store: str):
    mlflow.set_tracking_uri(store)
    return mlflow.search_runs(search_all_experiments=True)


def refused(out: subprocess.CompletedProcess, *expected: str) -> None:
    assert out.returncode == REFUSED_EXIT, out.stderr[-2000:]
    assert "nothing was run" in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
    for text in expected:
        assert text in out.stderr, out.stderr[-2000:]


def test_a_resumed_sweep_shows_every_job_of_its_grid(store: str, tmp_path: Path) -> None:
    """Its skipped jobs link to the runs that hold their figures: under its parent run, in its summary
    table and in `src.report --sweep latest`; a sweep with nothing new still reports its whole grid."""
    first = run_bench(["-m", *SLEEPY, "batch_size=2", f"tracking.uri={store}"])
    assert first.returncode == 0, first.stderr[-3000:]
    measured = all_runs(store).query("`tags.kind` == 'job'").iloc[0]
    for name in ("b", "c"):  # grown by one job, then run again with nothing new
        args = [
            "-m",
            *SLEEPY,
            "batch_size=2,3",
            f"tracking.uri={store}",
        ]
        out = run_bench(args)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "sleepy-eager-fp32-bs2  skipped" in out.stderr  # the summary's row, with the figure:
        assert f"{measured['metrics.throughput_img_s']:.1f}" in out.stderr
        assert (
            report.main(["--uri", store, "--sweep", "latest", "--out", str(tmp_path / name), "--no-log"]) == 0
        )
        wide = (tmp_path / name / "wide.csv").read_text()
        assert measured["run_id"] in wide and wide.count("\n") == 3  # header + both batch sizes
    df = all_runs(store)
    latest = df[df["tags.kind"] == "sweep"].sort_values("start_time").iloc[-1]
    under = df[df["tags.mlflow.parentRunId"] == latest["run_id"]]
    assert sorted(under["tags.status"]) == ["skipped", "skipped"] and set(under["tags.kind"]) == {"link"}
    assert set(under["tags.measured_in"]) == set(df.query("`tags.kind` == 'job'")["run_id"])
    assert len(df.query("`tags.kind` == 'job'")) == 2  # each job measured once


def test_two_identical_sweeps_started_together_measure_each_job_once(store: str, tmp_path: Path) -> None:
    env = {"BENCH_LOCK_DIR": str(tmp_path / "locks")}
    args = ["-m", *SLEEPY, "batch_size=2,3", f"tracking.uri={store}"]
    procs = [start_bench(args, env) for _ in ("a", "b")]
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
    df = all_runs(store)
    jobs, links = df[df["tags.kind"] == "job"], df[df["tags.kind"] == "link"]
    assert len(jobs) == 2 and set(jobs["tags.status"]) == {"ok"}
    assert df[df["tags.kind"] == "sweep"]["tags.mlflow.runName"].nunique() == 2  # two names
    assert len(links) == 2 and set(links["tags.measured_in"]) == set(jobs["run_id"])


def start_hanging_sweep(store: str) -> subprocess.Popen:
    """A sweep whose job hangs in its first call, returned once that job's child is measuring."""
    args = ["-m", f"hydra.searchpath=[file://{TEST_CONF}]", "plugins=[tests.plugins.fault_models]"]
    args += [
        "model=hang",
        *QUICK,
        "measure.timeout_s=300",
        f"tracking.uri={store}",
    ]
    proc = start_bench(args, env={"PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:
        if "measuring in a child process" in line:
            break
    return proc


def test_runs_left_running_by_a_killed_sweep_are_ended_by_the_next(store: str, tmp_path: Path) -> None:
    proc = start_hanging_sweep(store)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    running = all_runs(store).query("status == 'RUNNING'")
    assert set(running["tags.kind"]) == {"sweep", "job"}  # what kill -9 leaves
    out = run_bench(["-m", *SLEEPY, "batch_size=2", f"tracking.uri={store}"])
    assert out.returncode == 0, out.stderr[-3000:]
    df = all_runs(store).set_index("run_id")
    ended = df.loc[running["run_id"]]
    assert set(ended["status"]) == {"KILLED"}
    assert all("no longer" in r or "ended without closing" in r for r in ended["tags.reason"])
    assert ended.query("`tags.kind` == 'job'")["tags.status"].tolist() == ["failed"]
    assert "RUNNING" not in set(df["status"])


def test_an_unreachable_tracking_server_is_refused_within_seconds(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    before = user_folders()
    start = time.monotonic()
    out = run_bench([*SLEEPY, f"tracking.uri={uri}"], timeout=120)
    assert time.monotonic() - start < 60  # not MLflow's minutes of retries
    refused(out, uri, "tracking.uri")
    assert user_folders() == before


def test_a_broken_store_is_refused_before_anything_runs(tmp_path: Path) -> None:
    good = tmp_path / "good" / "mlflow.db"
    good.parent.mkdir()
    MlflowClient(f"sqlite:///{good}").search_experiments()  # a real store, its tables created
    truncated = tmp_path / "truncated" / "mlflow.db"
    truncated.parent.mkdir()
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    garbage = tmp_path / "garbage" / "mlflow.db"
    garbage.parent.mkdir()
    garbage.write_bytes(os.urandom(8192))
    before = user_folders()
    for db in (truncated, garbage):  # sqlite: "database disk image is malformed", "file is not a database"
        expected = "cannot be used: it is not a readable SQLite database"
        out = run_bench([*SLEEPY, f"tracking.uri=sqlite:///{db}"])
        refused(out, str(db), expected)
    typo = tmp_path / "no-such-folder" / "x.db"
    out = run_bench(["-m", *SLEEPY, f"tracking.uri=sqlite:///{typo}"])
    refused(out, "does not exist")
    assert not typo.parent.exists() and user_folders() == before
    with sqlite3.connect(good) as con:
        assert con.execute("select count(*) from runs").fetchone() == (0,)


@pytest.fixture
def read_only(tmp_path: Path):
    """A real read-only file system (root ignores file modes): a tmpfs mounted read-only."""
    folder = tmp_path / "ro"
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_output_folder_or_store_is_refused(store: str, tmp_path: Path, read_only: Path) -> None:
    out = run_bench(["-m", *SLEEPY, f"tracking.uri={store}", f"hydra.sweep.dir={read_only / 'sweep'}"])
    refused(out, "cannot be written", str(read_only))
    assert not Path(store.removeprefix("sqlite:///")).exists()  # no parent run, not even a store
    before = user_folders()
    out = run_bench([*SLEEPY, f"tracking.uri=sqlite:///{read_only}/mlflow.db"])
    refused(out, "cannot be written")
    assert user_folders() == before


def test_weights_that_are_not_the_models_are_refused_in_one_paragraph(tmp_path: Path) -> None:
    garbage = tmp_path / "random.pt"
    garbage.write_bytes(os.urandom(4096))
    resnet = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), resnet)
    before = user_folders()
    for path, expected in ((garbage, "weights_only=True failed"), (resnet, "does not fit densenet201")):
        out = run_bench(["model=densenet", f"model.weights={path}"])
        refused(out, str(path), expected)
        assert len(out.stderr.strip().splitlines()) == 2 and len(out.stderr) < 1000  # not a key dump
        assert "weights_only=False" not in out.stderr  # never the unsafe advice
    assert user_folders() == before


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("+foo=1", "unknown setting 'foo'; allowed at the top level: model, backend"),
        ("+measure.warmup=1", "unknown setting 'measure.warmup'; allowed at measure: warmup_iters"),
        ("measure.timeout_s=nan", "measure.timeout_s must be a finite number, got nan"),
        ("measure.min_duration_s=inf", "measure.min_duration_s must be a finite number, got inf"),
    ],
)
def test_unknown_keys_and_non_finite_numbers_are_refused(
    override: str, expected: str, tmp_path: Path
) -> None:
    before = user_folders()
    out = run_bench([*SLEEPY, override])
    refused(out, expected)
    assert user_folders() == before


def test_exit_codes_say_whether_every_job_ended_with_a_result(store: str, tmp_path: Path) -> None:
    crash = [f"hydra.searchpath=[file://{TEST_CONF}]", "plugins=[tests.plugins.fault_models]", "model=crash"]
    out = run_bench([*crash, *QUICK, f"tracking.uri={store}"])
    assert out.returncode == FAILED_EXIT, out.stderr[-2000:]
    out = run_bench([*SLEEPY, f"tracking.uri={store}"])
    assert out.returncode == 0, out.stderr[-2000:]
    unsupported = [
        "-m",
        *SLEEPY,
        "backend=cudagraphs",
        f"tracking.uri={store}",
    ]
    out = run_bench(unsupported)
    assert out.returncode == 0 and "unsupported" in out.stderr, out.stderr[-2000:]


def test_sigterm_ends_a_sweep_with_one_line_and_no_traceback(store: str, tmp_path: Path) -> None:
    proc = start_hanging_sweep(store)
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in rest and "interrupted by SIGTERM" in rest
