"""Where the device's time goes: a short profiled window after the timed one (`measure.profile=true`).

`torch.profiler` records `measure.profile_calls` calls of the prepared model. Each kernel (on a CPU: each
operator, by its own time) is put in one kind by its name (`kind_of`): convolution and matrix multiply,
copies and concatenation, normalisation and pointwise (with reductions, pooling and resampling), other.
The idle share is the part of the window's span, from the first kernel's start to the last one's end, in
which no kernel ran. The profiler's own work lengthens the host's gaps between launches, so for a
launch-bound cell the idle share is an upper bound; on a GPU only the device's activity is recorded, which
keeps that work small. The window runs after the timed loop and its energy reading, so it never changes
the measured figures.
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from src.shared.results import KINDS, TimeShares

if TYPE_CHECKING:
    import torch

CONV_MATMUL = r"conv|gemm|matmul|xmma|cutlass|cudnn|\bmm\b|addmm|bmm|linear|triton_tem|winograd|_mm_"
COPY = r"memcpy|memset|copy|(^|[_:])cat(_|$)|concat|transpose|clone|permute"
LAYOUT = r"nchwtonhwc|nhwctonchw|ncdhwtondhwc|ndhwctoncdhw"
NORM_POINTWISE = (
    r"norm|moments|relu|silu|sigmoid|add|mul|elementwise|vectorized|reduce|pool|upsample|interp|index|softmax|"
    r"tanh|clamp|div|sub|exp|fill|max|mean|sum"
)
# Inductor names a Triton kernel after the operations it fuses; these only move or view data inside it
LAYOUT_ONLY = {
    "to",
    "copy",
    "clone",
    "view",
    "arange",
    "unsqueeze",
    "squeeze",
    "permute",
    "expand",
    "as",
    "strided",
    "convert",
    "element",
    "type",
    "unsafe",
    "fused",
    "poi",
    "red",
    "per",
    "triton",
}


def kind_of(name: str) -> str:
    """The kind of a kernel or operator, by its name. An Inductor kernel (`triton_poi_fused_...`) counts as a
    copy when concatenation is among its fused operations or when it does nothing but move data
    (`clone`, `_to_copy`, views); otherwise as normalisation/pointwise work."""
    low = name.lower()
    if re.search(LAYOUT, low):  # cuDNN's own layout transforms: copies, though named after cuDNN
        return "copy_cat"
    if re.search(CONV_MATMUL, low):
        return "conv_matmul"
    if low.startswith("triton_"):
        ops = {t for t in re.split(r"_+", low) if t and not t.isdigit()}
        if "cat" in ops:
            return "copy_cat"
        return "norm_pointwise" if ops - LAYOUT_ONLY else "copy_cat"
    if re.search(COPY, low):
        return "copy_cat"
    if re.search(NORM_POINTWISE, low):
        return "norm_pointwise"
    return "other"


def _span_and_busy(intervals: list[tuple[float, float]]) -> tuple[float, float]:
    """(span from the first start to the last end, time covered by at least one interval), in µs."""
    if not intervals:
        return 0.0, 0.0
    intervals.sort()
    busy, (start, end) = 0.0, intervals[0]
    for s, e in intervals[1:]:
        if s > end:
            busy += end - start
            start, end = s, e
        else:
            end = max(end, e)
    busy += end - start
    return max(e for _, e in intervals) - intervals[0][0], busy


def profile(fn: Callable[[Any], Any], x: Any, device: torch.device, calls: int, out: Path) -> TimeShares:
    """Profile `calls` calls of `fn(x)` (under the caller's inference mode); write the kernels by time to
    `out` (CSV) and return the shares."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity

    cuda = device.type == "cuda"
    # on a GPU only the kernels are wanted: recording every host-side operator too costs seconds per job and
    # lengthens the gaps between launches that the idle share measures
    activities = [ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    if cuda:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(calls):
            fn(x)
        if cuda:
            torch.cuda.synchronize(device)
    wall_ms = (time.perf_counter() - start) * 1e3
    wanted = DeviceType.CUDA if cuda else DeviceType.CPU
    events = [e for e in prof.events() if e.device_type == wanted]
    by_name: dict[str, list[float]] = {}
    intervals = []
    for e in events:
        own_us = e.time_range.elapsed_us() if cuda else e.self_cpu_time_total
        calls_time = by_name.setdefault(e.name, [0.0, 0.0])
        calls_time[0] += 1
        calls_time[1] += own_us
        intervals.append((float(e.time_range.start), float(e.time_range.end)))
    span_us, busy_us = _span_and_busy(intervals)
    busy_ms = dict.fromkeys(KINDS, 0.0)
    for name, (_, us) in by_name.items():
        busy_ms[kind_of(name)] += us / 1e3
    total = sum(busy_ms.values())
    if total > 0 and busy_us > 0:  # the kinds' shares, scaled to the time a kernel ran (overlap counted once)
        busy_ms = {k: v * busy_us / 1e3 / total for k, v in busy_ms.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["kernel", "kind", "calls", "total_ms", "share_pct"])
        for name, (n, us) in sorted(by_name.items(), key=lambda kv: -kv[1][1]):
            share = 100 * us / 1e3 / total if total else 0.0
            writer.writerow([name[:300], kind_of(name), int(n), f"{us / 1e3:.4f}", f"{share:.2f}"])
    window_ms = span_us / 1e3 if span_us > 0 else wall_ms
    return TimeShares(busy_ms, window_ms, len(events))
