"""Jobs decided without a measuring child: an unavailable backend or one unsupported on the device is
recorded by the Hydra process with the status, reason and tags the child would have given, without
starting a process or waiting for the device lock."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from src.parent import early
from src.parent.launch import run_in_child
from src.shared.errors import Status
from src.shared.progress import CHILD_LOG
from tests.conftest import QUICK, make_spec, run_bench, sweep_folder

CPU_CASES = [
    ("backend=cudagraphs",),  # unsupported on the CPU
    ("backend=tensorrt",),  # unavailable on the CPU (and without torch_tensorrt)
    ("backend=onnxruntime", "precision=fp16"),  # the CPU provider runs fp32 only
]


@pytest.mark.parametrize("overrides", CPU_CASES, ids=lambda o: "-".join(o))
def test_the_parent_decides_what_the_child_would(overrides: tuple[str, ...], tmp_path: Path) -> None:
    spec = make_spec(*overrides, "gpu=cpu", "smoke=true", "batch_size=2", *QUICK)
    decided = early.decide(spec)
    assert decided is not None, "the parent should settle this job without a child"
    assert decided.status in (Status.UNSUPPORTED, Status.UNAVAILABLE)
    child = run_in_child(spec, tmp_path / "job")  # what the measuring child says about the same job
    assert (decided.status, decided.reason) == (child.status, child.reason)
    assert decided.phase == child.phase
    assert decided.params == {"device": child.params["device"]}
    expected = {k: child.tags[k] for k in ("device", "torch_version", "gpu_name", "backend_version", "task")}
    assert decided.tags == expected


def test_a_job_that_can_run_here_is_left_to_the_child() -> None:
    assert early.device_type(make_spec("gpu=cpu")) == "cpu"
    assert early.decide(make_spec("backend=eager", "gpu=cpu")) is None
    assert early.decide(make_spec("backend=compile", "gpu=cpu")) is None
    assert early.decide(make_spec("backend=tensorrt", "gpu=l4")) is None  # the child checks the preset first


NO_TORCH = """
import sys
from tests.conftest import make_spec
from src.parent import early
for backend in ("cudagraphs", "tensorrt"):
    assert early.decide(make_spec(f"backend={backend}", "gpu=cpu")) is not None
print("torch" in sys.modules)
"""


def test_the_decision_never_imports_torch() -> None:
    out = subprocess.run(
        [sys.executable, "-c", NO_TORCH], cwd=Path(__file__).parents[1], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


HOLD = """
import sys
from src.shared.locks import device_lock
with device_lock("cpu"):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes stdin
"""


@pytest.mark.slow
def test_a_sweep_records_them_at_once_while_another_process_holds_the_device(
    store: str, tmp_path: Path
) -> None:
    env = {"BENCH_LOCK_DIR": str(tmp_path / "locks")}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD],
        cwd=Path(__file__).parents[1],
        env={**os.environ, **env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        args = ["-m", "backend=cudagraphs,tensorrt", "gpu=cpu", "smoke=true", "batch_size=2", *QUICK]
        # a job that waited for the lock would wait for ever: the sweep would run past this timeout
        out = run_bench([*args, f"tracking.uri={store}"], env=env, timeout=240)
        assert out.returncode == 0, out.stderr[-3000:]
        assert holder.poll() is None, "the lock was held throughout"
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    client = MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.kind = 'job'")
    statuses = {r.data.params["backend"]: r.data.tags["status"] for r in runs}
    assert statuses == {"cudagraphs": "unsupported", "tensorrt": "unavailable"}
    for run in runs:
        assert "lock_wait_s" not in run.data.metrics and "child_exit_code" not in run.data.tags
        assert run.data.metrics["job_wall_s"] > 0  # the time the decision took
        assert run.data.tags["gpu_name"] == "none (CPU)" and run.data.params["device"] == "cpu"
    assert not list(sweep_folder(store).rglob(CHILD_LOG)), "no measuring child was started"
