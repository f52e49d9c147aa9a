"""Measurement, with fixed rules, in one place.

Rules: inputs live on the device before timing starts; calls run under `torch.inference_mode()` (the
caller's job); warm-up calls run first and are not timed; the device is synchronised at both edges of the
timed loop; each iteration is timed on the device (CUDA events on a GPU, `perf_counter_ns` on the CPU).
Counters that belong to the measurement (energy) are read right after the synchronisations at its edges.

When timing stops (`measure.stop`):
- `ci` (default): warm-up ends once two successive calls (the first call counts) agree within
  `warmup_agree_pct`, after `warmup_iters` calls at most. The timed loop then runs until the mean latency is
  known: the 95% confidence half-width of the mean (Student's t, iterations taken as independent) within
  `ci_pct` of the mean, with at least `min_iters` iterations and `repeats` x `min_duration_s` seconds; it
  stops at `max_duration_s` (after 2 iterations at least) whatever the precision, and says so
  (`stop_reason`). Noisy cells (launch-bound, shared hosts) so get more iterations, steady ones fewer. The
  loop is cut into `repeats` consecutive windows of equal length for the spread.
- `fixed`: `warmup_iters` calls, then `repeats` windows back to back, each until BOTH `min_iters`
  iterations and `min_duration_s` seconds are reached.

The host CPU's speed is read right before and right after the timed loop (`cpu_probe_ms`: a fixed
pure-Python loop in the measuring thread, outside the timed region): a launch-bound cell's figure follows
it, and a virtual machine's core can change speed for seconds at a time.

Throughput = batch size / mean latency over every timed iteration; each window's own throughput gives the
spread, `throughput_spread_pct` = 100 * (max - min) / median. The wall time (sync to sync) is kept as a
cross-check. The last timed call's output is kept for the parity check (no extra call).
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


# Student's t, two-sided 95%, for 1..30 degrees of freedom; beyond, its Cornish-Fisher expansion
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145)
T95 += (2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048)
T95 += (2.045, 2.042)
CHECK_EVERY_S = 0.05  # ci on a GPU: how often finished iterations are read back (without synchronising)
PROBE_ADDS, PROBE_TRIES = 50_000, 5  # the host CPU probe: additions per try, tries (the fastest counts)


def t95(df: int) -> float:
    if df <= len(T95):
        return T95[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def half_width_pct(latencies_ms: list[float] | np.ndarray) -> float:
    """The 95% confidence half-width of the mean latency, in % of the mean (inf below 2 iterations)."""
    lat = np.asarray(latencies_ms, dtype=np.float64)
    if lat.size < 2 or lat.mean() <= 0:
        return float("inf")
    return 100.0 * t95(lat.size - 1) * float(lat.std(ddof=1)) / np.sqrt(lat.size) / float(lat.mean())


@dataclass(frozen=True)
class Timing:
    latencies_ms: list[float]  # one per timed iteration, device time, windows one after another
    window_s: float  # wall time of the timed windows, synchronised at both edges
    edges: tuple[Any, Any] = (None, None)  # what `edge()` read just after each synchronisation
    window_sizes: tuple[int, ...] = ()  # iterations per window (empty: one window)
    warmup_calls: int = 0  # warm-up calls made
    warmup_s: float = 0.0  # their wall time
    stop_reason: str = ""  # why the timed loop ended (see the module's rules)
    cpu_probe_ms: tuple[float, float] = (0.0, 0.0)  # `cpu_probe_ms()` right before and after the timed loop
    output: Any = None  # the last timed call's output

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


def cpu_probe_ms() -> float:
    """The host CPU's speed as the measuring thread sees it: the fastest of PROBE_TRIES runs of a fixed
    pure-Python loop, in ms (lower is faster; the fastest try leaves out a moment's interruption)."""
    best = float("inf")
    for _ in range(PROBE_TRIES):
        start, total = time.perf_counter(), 0
        for i in range(PROBE_ADDS):
            total += i
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def time_single_call_ms(fn: Callable[[Any], Any], x: Any, device: torch.device) -> float:
    """Wall time of one call, synchronised before and after (first-call latency)."""
    synchronize(device)
    start = time.perf_counter()
    fn(x)
    synchronize(device)
    return (time.perf_counter() - start) * 1e3


def warm_up(
    fn: Callable[[Any], Any], x: Any, device: torch.device, settings: LoopSettings, first_ms: float | None
) -> int:
    """The untimed calls before the timed loop; returns how many were made."""
    if settings.stop == "fixed":
        for _ in range(settings.warmup_iters):
            fn(x)
        return settings.warmup_iters
    previous = first_ms
    for made in range(1, settings.warmup_iters + 1):
        now = time_single_call_ms(fn, x, device)
        if previous is not None and abs(now - previous) <= settings.warmup_agree_pct / 100 * min(
            now, previous
        ):
            return made
        previous = now
    return settings.warmup_iters


def timed_loop(
    fn: Callable[[Any], Any],
    x: Any,
    device: torch.device,
    settings: LoopSettings,
    edge: Callable[[], Any] = lambda: None,
    first_ms: float | None = None,
) -> Timing:
    """Warm up, then time by `settings.stop`'s rule. `edge` is read right after the device is synchronised
    before the timed loop and after it (energy counters, wall-clock stamps), the host CPU probe outside
    them. `first_ms`: the first call's time, which the first warm-up call is compared with."""
    begin = time.perf_counter()
    warm = warm_up(fn, x, device, settings, first_ms)
    synchronize(device)
    warm_s = time.perf_counter() - begin
    probe_before = cpu_probe_ms()  # the device is idle: the probe is the host's alone
    first = edge()
    start = time.perf_counter()
    if settings.stop == "fixed":
        latencies: list[float] = []
        sizes = []
        for _ in range(settings.repeats):
            loop, out = (
                _cuda_loop(fn, x, device, settings) if device.type == "cuda" else _host_loop(fn, x, settings)
            )
            latencies += loop
            sizes.append(len(loop))
        reason = "fixed: min_iters and min_duration_s reached in every window"
    else:
        latencies, out, reason = _until_known(fn, x, device, settings)
        sizes = split(len(latencies), settings.repeats)
    synchronize(device)
    window = time.perf_counter() - start
    last = edge()
    probes = (probe_before, cpu_probe_ms())
    return Timing(latencies, window, (first, last), tuple(sizes), warm, warm_s, reason, probes, out)


def stop_rule(s: LoopSettings) -> str:
    """The rule and its figures, as logged with every run (tag `stop_rule`)."""
    if s.stop == "fixed":
        return (
            f"fixed: {s.warmup_iters} warm-up calls; {s.repeats} windows, each >= {s.min_iters} iterations "
            f"and >= {s.min_duration_s:g} s"
        )
    return (
        f"ci: warm-up until 2 calls agree within {s.warmup_agree_pct:g}% (<= {s.warmup_iters} calls); timed "
        f"until the mean's 95% half-width <= {s.ci_pct:g}%, >= {s.min_iters} iterations and "
        f">= {s.repeats * s.min_duration_s:g} s, at most {s.max_duration_s:g} s; {s.repeats} windows"
    )


def split(n: int, parts: int) -> list[int]:
    """`n` iterations cut into `parts` consecutive windows as equal as can be (fewer when n < parts)."""
    parts = max(1, min(parts, n))
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def _done(iterations: int, start: float, settings: LoopSettings) -> bool:
    return iterations >= settings.min_iters and time.perf_counter() - start >= settings.min_duration_s


def _host_loop(fn: Callable[[Any], Any], x: Any, settings: LoopSettings) -> tuple[list[float], Any]:
    latencies: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter_ns()
        out = fn(x)
        latencies.append((time.perf_counter_ns() - t0) / 1e6)
        if _done(len(latencies), start, settings):
            break
    return latencies, out


def _cuda_loop(
    fn: Callable[[Any], Any], x: Any, device: torch.device, settings: LoopSettings
) -> tuple[list[float], Any]:
    import torch

    events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
    stream = torch.cuda.current_stream(device)
    start = time.perf_counter()
    while True:
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record(stream)
        out = fn(x)
        end.record(stream)
        events.append((begin, end))
        if _done(len(events), start, settings):
            break
    torch.cuda.synchronize(device)
    return [b.elapsed_time(e) for b, e in events], out


def _until_known(
    fn: Callable[[Any], Any], x: Any, device: torch.device, settings: LoopSettings
) -> tuple[list[float], Any, str]:
    """The `ci` rule's timed loop: (latencies, last output, why it stopped)."""
    floor_s = settings.repeats * settings.min_duration_s
    cuda = device.type == "cuda"
    if cuda:
        import torch

        stream = torch.cuda.current_stream(device)
    events: list[Any] = []
    known: list[float] = []  # latencies read back so far (all of them on the CPU)
    start = time.perf_counter()
    checked = start
    while True:
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record(stream)
            out = fn(x)
            end.record(stream)
            events.append((begin, end))
        else:
            t0 = time.perf_counter_ns()
            out = fn(x)
            known.append((time.perf_counter_ns() - t0) / 1e6)
        now = time.perf_counter()
        made = len(events) if cuda else len(known)
        if now - start >= settings.max_duration_s and made >= 2:
            reason = (
                f"max_duration_s ({settings.max_duration_s:g} s) reached before the mean was known to ci_pct"
            )
            break
        if made < settings.min_iters or now - start < floor_s:
            continue
        if cuda:
            if now - checked < CHECK_EVERY_S:
                continue
            checked = now
            while len(known) < len(events) and events[len(known)][1].query():  # finished: no waiting
                b, e = events[len(known)]
                known.append(b.elapsed_time(e))
        if len(known) >= settings.min_iters and half_width_pct(known) <= settings.ci_pct:
            reason = (
                f"ci: the mean's 95% half-width within {settings.ci_pct:g}% ({len(known)} iterations read)"
            )
            break
    if cuda:
        torch.cuda.synchronize(device)
        known = [b.elapsed_time(e) for b, e in events]
    return known, out, reason


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
        warmup_calls=timing.warmup_calls,
        warmup_s=timing.warmup_s,
        ci_half_width_pct=half_width_pct(lat) if lat.size > 1 else float("nan"),
        cpu_probe_before_ms=timing.cpu_probe_ms[0],
        cpu_probe_after_ms=timing.cpu_probe_ms[1],
    )
