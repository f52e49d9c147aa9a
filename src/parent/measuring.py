"""A job's measurement as the Hydra process runs it around the child: idle power read before it, the
power trace sampled during it (the device is claimed), the child's energy window netted against idle
power, and the run's `stable` verdict."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from src.parent import telemetry
from src.parent.launch import run_in_child
from src.shared import nvml
from src.shared.errors import Status
from src.shared.results import ENERGY, LATENCY, TRACE, EnergyWindow, JobResult, Stability, cpu_probes
from src.shared.spec import JobSpec

META = "meta"  # in the job folder: what the parent keeps beside the child's files


def measure(
    spec: JobSpec,
    gpu: nvml.GpuIdentity | None,
    job_dir: Path,
    heartbeat: Callable[[str, float], None],
    every_s: float,
    start: str,
) -> tuple[JobResult, telemetry.Trace | None]:
    """The child, with idle power (read before it, or reused) and a trace sampled during it (the device is
    claimed)."""
    hz = spec.telemetry.sample_hz
    idle, idle_age = (
        telemetry.idle_power(gpu.nvml_index, spec.telemetry.idle_s, hz, spec.telemetry.idle_once)
        if gpu
        else (None, None)
    )
    sampler = telemetry.Sampler(gpu.nvml_index, hz) if gpu and hz > 0 else None
    with sampler or nullcontext():
        result = run_in_child(spec, job_dir, heartbeat, every_s, start)
    window = EnergyWindow.from_logged(result.metrics, result.tags, spec.batch_size)
    if window is not None:  # the child's energy figures, with the idle power read here: net energy
        result.metrics.update(window.with_idle(idle).metrics())
    elif idle is not None:
        result.metrics[ENERGY.idle_power_w] = idle
    if idle_age is not None:
        result.metrics[ENERGY.idle_power_age_s] = idle_age
    if sampler is None:
        result.tags["trace_status"] = (
            "off (telemetry.sample_hz=0)" if gpu else "no GPU trace (CPU or no NVML)"
        )
        return result, None
    t0, t1 = (window.start_unix, window.end_unix) if window else (None, None)
    own = {os.getpid()} | ({result.pid} if result.pid else set())
    trace_metrics, trace_tags = telemetry.summarize(sampler.trace, t0, t1, own)
    result.metrics.update(trace_metrics)
    result.tags.update(trace_tags)
    (job_dir / META).mkdir(parents=True, exist_ok=True)
    telemetry.write_csv(sampler.trace, job_dir / META / "power_trace.csv", t0, t1)
    return result, sampler.trace


def judge_stability(result: JobResult, spec: JobSpec) -> None:
    """An ok run's `stable` tag, from its windows' spread, its latency CoV, the GPU's busy share and the
    host CPU's speed before and after the timed loop."""
    m = result.metrics
    if result.status is not Status.OK or LATENCY.latency_cov_pct not in m:
        return
    stability = Stability(
        spread_pct=m.get(LATENCY.throughput_spread_pct, 0.0),
        cov_pct=m[LATENCY.latency_cov_pct],
        gpu_busy_pct=m.get(TRACE.gpu_util_mean_pct),
        smoke=spec.smoke,
        cpu_probe_ms=cpu_probes(m),
    )
    result.tags.update(stability.tags())
