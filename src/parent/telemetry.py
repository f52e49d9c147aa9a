"""GPU telemetry around a job: idle power (before it, or once per GPU and process), a sampled trace while it
runs, trust signals.

The sampler is a thread in the launching (Hydra) process, not in the measuring child, so it never competes
with the timed loop for the child's interpreter lock. Samples carry wall-clock stamps; the child stamps the
edges of its timed window with the same clock, so the trace is cut to exactly that window afterwards.
"""

from __future__ import annotations

import csv
import logging
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.shared import nvml
from src.shared.results import TraceSummary

log = logging.getLogger(__name__)

TRACE_SERIES = ("power_w", "gpu_util_pct", "sm_clock_mhz", "mem_clock_mhz", "temperature_c", "mem_used_mib")
IGNORED_CLOCK_EVENTS = {"gpu_idle"}  # clocks drop when there is nothing to do: not a throttle


@dataclass
class Sample:
    t_unix: float
    values: dict[str, Any]


@dataclass
class Trace:
    samples: list[Sample] = field(default_factory=list)
    power_source: str = ""
    error: str = ""


class Sampler:
    """Samples one GPU at `hz` in a background thread until stopped."""

    def __init__(self, nvml_index: int, hz: float) -> None:
        self.trace = Trace()
        self._index, self._period = nvml_index, 1.0 / hz
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpu-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            with nvml.session() as nv:
                handle = nv.nvmlDeviceGetHandleByIndex(self._index)
                next_at = time.monotonic()
                while not self._stop.is_set():
                    values = nvml.reading(nv, handle)
                    self.trace.power_source = values.pop("power_source")
                    self.trace.samples.append(Sample(time.time(), values))
                    next_at += self._period
                    self._stop.wait(max(0.0, next_at - time.monotonic()))
        except Exception as exc:  # the trace is an extra: a failure is reported, never fatal
            self.trace.error = f"{type(exc).__name__}: {exc}"


_idle_read: dict[int, tuple[float, float]] = {}  # NVML index -> (watts, monotonic time read), this process


def idle_power(nvml_index: int, seconds: float, hz: float, once: bool) -> tuple[float | None, float | None]:
    """Idle power and its age in seconds. `once`: read before this process's first job on the GPU, when
    none of its jobs has warmed the card yet (read right after a job, a card reads well above its settled
    idle for seconds), and reused; a failed reading is tried again next job."""
    if once and nvml_index in _idle_read:
        watts, at = _idle_read[nvml_index]
        return watts, time.monotonic() - at
    watts = idle_power_w(nvml_index, seconds, hz)
    if once and watts is not None:
        _idle_read[nvml_index] = watts, time.monotonic()
    return watts, (0.0 if watts is not None else None)


def idle_power_w(nvml_index: int, seconds: float, hz: float) -> float | None:
    """Mean board power over `seconds` with nothing of ours running, or None if it cannot be read."""
    if seconds <= 0:
        return None
    try:
        with nvml.session() as nv:
            handle = nv.nvmlDeviceGetHandleByIndex(nvml_index)
            readings = []
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                readings.append(nvml.power_w(nv, handle)[0])
                time.sleep(1.0 / max(hz, 1.0))
        return statistics.fmean(readings) if readings else None
    except Exception:
        return None


def in_window(trace: Trace, t0: float, t1: float) -> list[Sample]:
    return [s for s in trace.samples if t0 <= s.t_unix <= t1]


def summarize(trace: Trace, t0: float | None, t1: float | None, own_pids: set[int]) -> tuple[dict, dict]:
    """Metrics and tags from the samples inside the timed window [t0, t1]."""
    tags: dict[str, str] = {"trace_power_source": trace.power_source or "none"}
    if trace.error:
        tags["trace_error"] = trace.error
    window = in_window(trace, t0, t1) if t0 is not None and t1 is not None else []
    if not window:
        tags["trace_status"] = "no samples inside the timed window"
        return {}, tags
    series = {k: [s.values[k] for s in window] for k in TRACE_SERIES}
    summary = TraceSummary(
        trace_samples=float(len(window)),
        power_peak_w=max(series["power_w"]),
        power_trace_mean_w=statistics.fmean(series["power_w"]),
        gpu_util_mean_pct=statistics.fmean(series["gpu_util_pct"]),
        sm_clock_mean_mhz=statistics.fmean(series["sm_clock_mhz"]),
        sm_clock_min_mhz=min(series["sm_clock_mhz"]),
        mem_clock_mean_mhz=statistics.fmean(series["mem_clock_mhz"]),
        temperature_max_c=max(series["temperature_c"]),
        mem_used_max_mib=max(series["mem_used_mib"]),
    )
    mask = 0
    others: dict[int, float] = {}
    for s in window:
        mask |= s.values["clock_events"]
        others.update({pid: mib for pid, mib in s.values["pids"].items() if pid not in own_pids})
    reasons = [r for r in nvml.clock_event_names(mask) if r not in IGNORED_CLOCK_EVENTS]
    tags["clock_event_reasons"] = ",".join(reasons) or "none"
    tags["other_gpu_processes"] = (
        ",".join(f"{pid}:{mib:.0f}MiB" for pid, mib in sorted(others.items())) or "none"
    )
    if reasons:
        log.warning(
            "clock events during the timed window: %s (the figures may be throttled)", ", ".join(reasons)
        )
    if others:
        log.warning("other processes used the GPU during the timed window: %s", tags["other_gpu_processes"])
    return summary.metrics(), tags


def write_csv(trace: Trace, path: Path, t0: float | None, t1: float | None) -> None:
    """Every sample of the job (not only the window), with a column saying which were inside it."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["t_unix", "in_window", *TRACE_SERIES, "clock_events", "pids"])
        for s in trace.samples:
            inside = t0 is not None and t1 is not None and t0 <= s.t_unix <= t1
            pids = " ".join(map(str, sorted(s.values["pids"])))
            row = [f"{s.t_unix:.3f}", int(inside), *(s.values[k] for k in TRACE_SERIES)]
            writer.writerow([*row, hex(s.values["clock_events"]), pids])


def step_metrics(
    trace: Trace | None, t0: float | None, t1: float | None
) -> list[tuple[str, float, int, int]]:
    """(key, value, timestamp ms, step) for MLflow, the window's samples, so the UI draws the curves."""
    window = in_window(trace, t0, t1) if trace is not None and t0 is not None and t1 is not None else []
    return [
        (f"trace_{key}", float(s.values[key]), int(s.t_unix * 1000), step)
        for step, s in enumerate(window)
        for key in TRACE_SERIES
    ]
