"""CUDA GPU only (skipped, with the reason, elsewhere): device choice, event timing, real GPU jobs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from src.child.job import resolve_device
from src.child.measure import LoopSettings, summarize, timed_loop
from src.parent.launch import run_in_child
from src.shared.errors import Status, Unavailable
from tests.conftest import QUICK, make_spec

pytestmark = pytest.mark.gpu
TWO_GPUS = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")


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

    timing = timed_loop(
        fn, None, device, LoopSettings(stop="fixed", warmup_iters=2, min_iters=20, min_duration_s=0)
    )
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


@TWO_GPUS
def test_cuda_graphs_capture_the_model_on_its_own_gpu_when_another_is_current() -> None:
    """torch.cuda.graph captures on the current device's stream. With GPU 0 current and the model on GPU 1
    the graph came out empty (a replay returned the capture's output whatever the input) or the capture failed
    (cudaErrorStreamCaptureInvalidated, DenseNet201 at batch 256 on the two-H200 host)."""
    from src.backends.cudagraphs import CudaGraphs

    torch.cuda.set_device(0)
    gpu1 = torch.device("cuda", 1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3)).to(gpu1)
    backend = CudaGraphs(CudaGraphs.Options(), make_spec("backend=cudagraphs", "gpu.index=1"))
    fn = backend.prepare(model.eval(), torch.randn(2, 3, 32, 32, device=gpu1))
    other = torch.randn(2, 3, 32, 32, device=gpu1)
    with torch.inference_mode():
        torch.testing.assert_close(fn(other.clone()), model(other))
    assert torch.cuda.current_device() == 0  # the backend leaves the current device as it found it


@TWO_GPUS
@pytest.mark.parametrize("backend_name", ["eager", "cudagraphs"])
def test_a_job_on_another_gpu_than_the_first_runs_there(backend_name: str, tmp_path: Path) -> None:
    last = torch.cuda.device_count() - 1
    spec = make_spec(f"gpu.index={last}", "smoke=true", "batch_size=2", *QUICK, f"backend={backend_name}")
    result = run_in_child(spec, tmp_path / "job")
    assert result.status is Status.OK, result.reason
    assert result.params["device"] == f"cuda:{last}" and result.metrics["peak_mem_reserved_mib"] > 0


def test_torchscript_densenet201_completes_on_the_gpu(tmp_path: Path) -> None:
    """The NNC stall (minutes in the IR simplifier on the second call) must not happen: fuser=auto."""
    spec = make_spec("backend=torchscript", "batch_size=8", *QUICK, "measure.timeout_s=300")
    result = run_in_child(spec, tmp_path / "job")
    assert result.status is Status.OK, result.reason
    assert result.tags["torchscript_fuser"] == "none"
    assert result.wall_s < 120


def test_nvml_sees_the_same_card_as_cuda_and_its_energy_counter_advances() -> None:
    from src.child.energy import NvmlMeter
    from src.shared import nvml

    with nvml.session() as nv:
        identity = nvml.identify(nv, 0)
    assert identity is not None and identity.name == torch.cuda.get_device_name(0)
    assert identity.power_limit_w and identity.power_limit_w > 50
    meter = NvmlMeter(0)
    start = meter.read()
    x = torch.randn(8192, 8192, device="cuda")
    t = time.time()
    while time.time() - t < 1.0:
        x @ x
    torch.cuda.synchronize()
    assert meter.joules(start, meter.read()) > 10  # a busy H100/H200-class card draws hundreds of W


def test_the_sampler_traces_at_about_its_rate() -> None:
    from src.parent.telemetry import Sampler, idle_power_w
    from src.shared import nvml

    with nvml.session() as nv:
        index = nvml.identify(nv, 0).nvml_index
    assert 20 < idle_power_w(index, seconds=0.5, hz=10) < 400
    with Sampler(index, hz=10) as sampler:
        time.sleep(2.0)
    trace = sampler.trace
    assert trace.error == "" and trace.power_source in ("instant", "average")
    assert 15 <= len(trace.samples) <= 25
    assert all(s.values["sm_clock_mhz"] > 0 and s.values["temperature_c"] > 0 for s in trace.samples)


def test_a_gpu_job_measures_energy_and_its_trace_agrees(store: str, tmp_path: Path) -> None:
    import mlflow

    from src.parent.config import to_job
    from src.parent.runner import run_job
    from tests.conftest import compose_cfg

    cfg = compose_cfg("precision=fp16", "batch_size=128", "measure.min_duration_s=3", f"tracking.uri={store}")
    _, run_id = run_job(to_job(cfg), tmp_path / "job", parent=None)
    run = mlflow.MlflowClient(store).get_run(run_id)
    m, t = run.data.metrics, run.data.tags
    assert (
        t["status"] == "ok" and t["energy_status"] == "measured" and t["energy_source"] == "nvml_total_energy"
    )
    assert m["energy_j"] > 0 and m["img_per_j"] == pytest.approx(
        m["throughput_window_img_s"] / m["power_mean_w"]
    )
    assert m["power_trace_mean_w"] == pytest.approx(m["power_mean_w"], rel=0.10)
    assert m["power_peak_w"] >= m["power_trace_mean_w"] and m["idle_power_w"] < m["power_mean_w"]
    assert m["trace_samples"] >= 20 and "clock_event_reasons" in t and "other_gpu_processes" in t
    assert t["nameplate_source"] == "nvml enforced power limit" and m["img_per_s_per_nameplate_w"] > 0
    history = mlflow.MlflowClient(store).get_metric_history(run_id, "trace_power_w")
    assert len(history) == m["trace_samples"] and [h.step for h in history] == list(range(len(history)))


def test_idle_power_is_read_once_per_gpu_in_a_process_unless_asked_for_each_job(
    store: str, tmp_path: Path
) -> None:
    import mlflow

    from src.parent.config import to_job
    from src.parent.runner import run_job
    from tests.conftest import compose_cfg

    client = mlflow.MlflowClient(store)
    metrics = []
    for batch, once in [(2, True), (3, True), (4, False)]:  # three jobs: no rerun is skipped as measured
        settings = [f"batch_size={batch}", f"telemetry.idle_once={once}", f"tracking.uri={store}"]
        cfg = compose_cfg("smoke=true", *QUICK, *settings)
        _, run_id = run_job(to_job(cfg), tmp_path / f"job{batch}", parent=None)
        metrics.append(client.get_run(run_id).data.metrics)
    first, second, each = metrics
    assert second["idle_power_w"] == first["idle_power_w"]  # the same reading, older
    assert second["idle_power_age_s"] > first["idle_power_age_s"] >= 0
    assert each["idle_power_age_s"] == 0  # read before the job


def test_a_card_preset_runs_only_on_such_a_card(tmp_path: Path) -> None:
    name = torch.cuda.get_device_name(0)
    mine, other = ("h200", "l4") if "H200" in name else ("l4", "h200") if "L4" in name else (None, "a2")
    if mine:
        result = run_in_child(make_spec(f"gpu={mine}", "smoke=true", *QUICK), tmp_path / "mine")
        assert result.status is Status.OK and result.tags["nameplate_source"].startswith("preset")
    result = run_in_child(make_spec(f"gpu={other}", "smoke=true", *QUICK), tmp_path / "other")
    assert result.status is Status.UNAVAILABLE and "needs a card whose name matches" in result.reason


def test_gpu_any_claims_a_free_gpu_and_records_which(store: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from tests.conftest import run_bench

    out = run_bench(["gpu=any", "smoke=true", "batch_size=2", *QUICK, f"tracking.uri={store}"], timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(store)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.kind = 'job'")
    assert run.data.params["gpu"] == "any" and run.data.params["device"].startswith("cuda:")
    assert run.data.tags["status"] == "ok" and run.data.tags["gpu_name"] == torch.cuda.get_device_name(0)
