"""Measurement, with fixed rules, in one place.

Rules: inputs live on the device before timing starts; calls run under `torch.inference_mode()` (the
caller's job); warm-up calls run first and are not timed; the device is synchronised at both edges of the
timed window; each iteration is timed on the device (CUDA events on a GPU, `perf_counter_ns` on the CPU);
the timed part is `repeats` windows back to back, each running until BOTH `min_iters` iterations and
`min_duration_s` seconds are reached. Counters that belong to the measurement (energy) are read right after
the synchronisations at its edges (before the first window, after the last).
Throughput = batch size / mean latency over every timed iteration; each window's own throughput gives the
spread, `throughput_spread_pct` = 100 * (max - min) / median. The wall time (sync to sync) is kept as a
cross-check.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from src.shared.results import LatencyStats
from src.shared.spec import MeasureConfig

if TYPE_CHECKING:
    import torch


LoopSettings = MeasureConfig  # the loop reads the measure section: warmup_iters, min_iters, min_duration_s


@dataclass(frozen=True)
class Timing:
    latencies_ms: list[float]  # one per timed iteration, device time, windows one after another
    window_s: float  # wall time of the timed windows, synchronised at both edges
    edges: tuple[Any, Any] = (None, None)  # what `edge()` read just after each synchronisation
    window_sizes: tuple[int, ...] = ()  # iterations per window (empty: one window)

    def windows(self) -> list[list[float]]:
        sizes, out, start = self.window_sizes or (len(self.latencies_ms),), [], 0
        for n in sizes:
            out.append(self.latencies_ms[start : start + n])
            start += n
        return out


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def time_single_call_ms(fn: Callable[[Any], Any], x: Any, device: torch.device) -> float:
    """Wall time of one call, synchronised before and after (first-call latency)."""
    synchronize(device)
    start = time.perf_counter()
    fn(x)
    synchronize(device)
    return (time.perf_counter() - start) * 1e3


def timed_loop(
    fn: Callable[[Any], Any],
    x: Any,
    device: torch.device,
    settings: LoopSettings,
    edge: Callable[[], Any] = lambda: None,
) -> Timing:
    """Warm up, then time `repeats` windows, each until both minimums are met. `edge` is read right
    after the device is synchronised before the first window and after the last (energy counters, wall-clock
    stamps)."""
    for _ in range(settings.warmup_iters):
        fn(x)
    synchronize(device)
    first = edge()
    start = time.perf_counter()
    latencies: list[float] = []
    sizes = []
    for _ in range(settings.repeats):
        loop = _cuda_loop(fn, x, device, settings) if device.type == "cuda" else _host_loop(fn, x, settings)
        latencies += loop
        sizes.append(len(loop))
    synchronize(device)
    window = time.perf_counter() - start
    return Timing(latencies, window, (first, edge()), tuple(sizes))


def _done(iterations: int, start: float, settings: LoopSettings) -> bool:
    return iterations >= settings.min_iters and time.perf_counter() - start >= settings.min_duration_s


def _host_loop(fn: Callable[[Any], Any], x: Any, settings: LoopSettings) -> list[float]:
    latencies: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter_ns()
        fn(x)
        latencies.append((time.perf_counter_ns() - t0) / 1e6)
        if _done(len(latencies), start, settings):
            break
    return latencies


def _cuda_loop(fn: Callable[[Any], Any], x: Any, device: torch.device, settings: LoopSettings) -> list[float]:
    import torch

    events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
    stream = torch.cuda.current_stream(device)
    start = time.perf_counter()
    while True:
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record(stream)
        fn(x)
        end.record(stream)
        events.append((begin, end))
        if _done(len(events), start, settings):
            break
    torch.cuda.synchronize(device)
    return [b.elapsed_time(e) for b, e in events]


def summarize(timing: Timing, batch_size: int) -> LatencyStats:
    lat = np.asarray(timing.latencies_ms, dtype=np.float64)
    mean = float(lat.mean())
    std = float(lat.std(ddof=1)) if lat.size > 1 else 0.0
    p50, p90, p95, p99 = (float(v) for v in np.percentile(lat, [50, 90, 95, 99]))
    per_window = [batch_size * 1e3 / float(np.mean(w)) for w in timing.windows() if w]
    median = float(np.median(per_window))
    return LatencyStats(
        throughput_img_s=batch_size * 1e3 / mean,
        latency_mean_ms=mean,
        latency_p50_ms=p50,
        latency_p90_ms=p90,
        latency_p95_ms=p95,
        latency_p99_ms=p99,
        latency_std_ms=std,
        latency_cov_pct=100.0 * std / mean if mean > 0 else 0.0,
        iterations=int(lat.size),
        window_s=timing.window_s,
        throughput_window_img_s=batch_size * lat.size / timing.window_s if timing.window_s > 0 else 0.0,
        repeats=len(per_window),
        throughput_spread_pct=100.0 * (max(per_window) - min(per_window)) / median if median > 0 else 0.0,
    )
