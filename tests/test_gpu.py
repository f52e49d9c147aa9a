"""CUDA GPU only (skipped, with the reason, elsewhere): device choice, event timing, real GPU jobs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from src.errors import Status, Unavailable
from src.isolation import run_in_child
from src.job import resolve_device
from src.measure import LoopSettings, summarize, timed_loop
from tests.conftest import QUICK, make_spec

pytestmark = pytest.mark.gpu


def test_auto_takes_the_first_gpu_and_a_missing_index_is_unavailable() -> None:
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(Unavailable, match="was asked for"):
        resolve_device(str(torch.cuda.device_count()))


def test_cuda_event_timing_agrees_with_the_synchronised_host_clock() -> None:
    device = torch.device("cuda", 0)
    spin = 20_000_000  # GPU clock cycles: about 10 ms at 2 GHz

    def fn(_: object) -> None:
        torch.cuda._sleep(spin)

    timing = timed_loop(fn, None, device, LoopSettings(warmup_iters=2, min_iters=20, min_duration_s=0))
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(20):
        fn(None)
    torch.cuda.synchronize()
    host_ms = (time.perf_counter() - start) / 20 * 1e3
    stats = summarize(timing, batch_size=1)
    assert stats.latency_mean_ms == pytest.approx(host_ms, rel=0.05)
    assert stats.latency_cov_pct < 5


def test_a_gpu_job_reports_device_memory_and_the_card(tmp_path: Path) -> None:
    result = run_in_child(make_spec("smoke=true", "batch_size=8", *QUICK), tmp_path / "job")
    assert result.status is Status.OK, result.reason
    assert result.params["device"] == "cuda:0"
    assert result.tags["gpu_name"] == torch.cuda.get_device_name(0)
    assert result.tags["cuda_version"] and result.tags["cudnn_version"] and "driver_version" in result.tags
    assert result.metrics["peak_mem_allocated_mib"] > 0
    assert result.metrics["peak_mem_reserved_mib"] >= result.metrics["peak_mem_allocated_mib"]


def test_torchscript_densenet201_completes_on_the_gpu(tmp_path: Path) -> None:
    """The NNC stall (minutes in the IR simplifier on the second call) must not happen: fuser=auto."""
    spec = make_spec("backend=torchscript", "batch_size=8", *QUICK, "measure.timeout_s=300")
    result = run_in_child(spec, tmp_path / "job")
    assert result.status is Status.OK, result.reason
    assert result.tags["torchscript_fuser"] == "none"
    assert result.wall_s < 120
