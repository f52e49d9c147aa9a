"""Shared helpers: real Hydra composition, tiny CPU settings, real `src.bench` processes, a real
`mlflow server` on loopback, and the GPU marker's skip."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from src import PROJECT_ROOT
from src.parent.config import shorthands, to_spec  # also registers the schema with Hydra's ConfigStore
from src.shared.spec import JobSpec

TEST_CONF = Path(__file__).parent / "conf"
FAULTS = "tests.plugins.fault_models"
# Tiny, quick measurement for CPU tests (numbers from these settings are not benchmarks).
QUICK = [
    "measure.stop=fixed",
    "measure.warmup_iters=1",
    "measure.min_iters=3",
    "measure.min_duration_s=0",
    "measure.timeout_s=120",
]


def compose_cfg(*overrides: str) -> DictConfig:
    with initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base="1.3"):
        return compose("config", shorthands(list(overrides)))


def make_spec(*overrides: str) -> JobSpec:
    return to_spec(compose_cfg(*overrides))


def fault_overrides(model: str) -> list[str]:
    """Select a test-only model: its YAML from tests/conf, its class from the plugin module. Their faults
    fire when called, so the parity reference (an eager call before the job's own) is off for them."""
    return [
        f"hydra.searchpath=[file://{TEST_CONF}]",
        f"plugins=[{FAULTS}]",
        f"model={model}",
        "measure.parity_samples=0",
    ]


USER_FOLDERS = (PROJECT_ROOT / "multirun", PROJECT_ROOT / "outputs")  # Hydra's default output folders


def user_folders() -> set[Path]:
    """The run and sweep folders under the default output folders (`outputs|multirun/<date>/<time>`)."""
    return {p for root in USER_FOLDERS if root.is_dir() for p in root.glob("*/*")}


@pytest.fixture(scope="session", autouse=True)
def _remove_the_tests_folders() -> Iterator[None]:
    """The tests run `src.bench` as a user does, into the default output folders; what they made there
    is removed once they are done (a user's own folders stay)."""
    before = user_folders()
    yield
    for path in user_folders() - before:
        shutil.rmtree(path, ignore_errors=True)
    for root in USER_FOLDERS:
        for day in root.glob("*") if root.is_dir() else ():
            if day.is_dir() and not any(day.iterdir()):
                day.rmdir()


def sweep_folder(store: str, parent: str | None = None) -> Path:
    """A sweep's folder as its parent run records it (`sweep_dir`): the newest sweep's, or `parent`'s."""
    from mlflow import MlflowClient

    client = MlflowClient(store)
    if parent is None:
        exp = [e.experiment_id for e in client.search_experiments()]
        found = client.search_runs(exp, "tags.kind = 'sweep'", order_by=["attributes.start_time DESC"])
        parent = found[0].info.run_id
    return Path(client.get_run(parent).data.tags["sweep_dir"])


def bench_env(env: dict[str, str] | None = None) -> dict[str, str]:
    full_env = {**os.environ, "YOLO_OFFLINE": "1", **(env or {})}
    full_env.pop("MLFLOW_RUN_ID", None)
    return full_env


def run_bench(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess:
    """`python -m src.bench ARGS` in a real subprocess, from the project root."""
    return subprocess.run(
        [sys.executable, "-m", "src.bench", *args],
        cwd=PROJECT_ROOT,
        env=bench_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_bench(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m src.bench ARGS` started in the background; its output (stderr too) on `stdout`, as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "src.bench", *args],
        cwd=PROJECT_ROOT,
        env=bench_env(env),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_server(store: str, artifacts: Path, port: int) -> subprocess.Popen:
    """A real `mlflow server` on loopback over `store`, once its /health answers (60 s at most)."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store, "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--workers", "1", "--default-artifact-root", artifacts.as_uri()]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(120):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except OSError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail("mlflow server did not come up within 60 s")


def stop_mlflow_server(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    os.killpg(proc.pid, sig)
    proc.wait(timeout=30)


@pytest.fixture
def mlflow_server(store: str, tmp_path: Path) -> Iterator[str]:
    """A real `mlflow server` over the test's store; yields its URL."""
    port = free_port()
    proc = start_mlflow_server(store, tmp_path / "art", port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_mlflow_server(proc, signal.SIGTERM)


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A fresh SQLite MLflow store in a temporary folder (its URI)."""
    (tmp_path / "mlruns").mkdir(exist_ok=True)  # an explicit store's folder must exist
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


def tensorrt_missing() -> str | None:
    """Why the real TensorRT tests cannot run here, or None."""
    import torch

    if not torch.cuda.is_available():
        return "needs a CUDA GPU: torch.cuda.is_available() is False on this machine"
    try:
        import tensorrt  # noqa: F401
        import torch_tensorrt  # noqa: F401
    except Exception as exc:
        return (
            f"needs torch_tensorrt and tensorrt, which cannot be imported here ({type(exc).__name__}: {exc})"
        )
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    no_gpu = None if torch.cuda.is_available() else "needs a CUDA GPU: torch.cuda.is_available() is False"
    no_trt = tensorrt_missing() if any(i.get_closest_marker("tensorrt") for i in items) else None
    for item in items:
        why = (
            no_trt
            if item.get_closest_marker("tensorrt")
            else no_gpu
            if item.get_closest_marker("gpu")
            else None
        )
        if why:
            item.add_marker(pytest.mark.skip(reason=why))
