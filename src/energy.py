"""Energy over the timed window, from a hardware counter read at the window's synchronised edges.

GPU: NVML's total-energy counter (mJ). CPU: RAPL package counters (uJ, wrapping at `max_energy_range_uj`)
where `/sys/class/powercap` is readable. Where neither can be read, there are no energy metrics and the tag
`energy_status` says why: never a zero, never a guess. A counter that did not advance over the window (a
window shorter than its update period) is reported the same way.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from src.spec import GpuSpec

NVML_COUNTER_WRAP_MJ = 2**64  # an unsigned 64-bit count of millijoules
RAPL_ROOT = Path("/sys/class/powercap")


@dataclass(frozen=True)
class Edge:
    """One edge of the timed window: wall-clock time and the raw counter (None without a meter)."""

    t_unix: float
    counter: Any = None


class EnergyMeter(Protocol):
    source: str

    def read(self) -> Any: ...

    def joules(self, start: Any, end: Any) -> float: ...


def counter_delta(start: int, end: int, wrap: int) -> int:
    """end - start for a counter that wraps to 0 after `wrap - 1`."""
    return end - start if end >= start else end + wrap - start


class NvmlMeter:
    source = "nvml_total_energy"

    def __init__(self, gpu_index: str) -> None:
        from src import nvml

        self._nvml = nvml
        self._nv = nvml.init()  # shut down with the process: the meter lives as long as the job
        identity = nvml.identify(self._nv, gpu_index)
        if identity is None:
            raise nvml.NvmlUnavailable(f"NVML sees no GPU for gpu.index={gpu_index}")
        self.identity = identity
        self._handle = self._nv.nvmlDeviceGetHandleByIndex(identity.nvml_index)
        self.read()  # fails here, with the reason, on GPUs without the counter (before Volta)

    def read(self) -> int:
        return self._nvml.total_energy_mj(self._nv, self._handle)

    def joules(self, start: int, end: int) -> float:
        return counter_delta(start, end, NVML_COUNTER_WRAP_MJ) / 1e3


class RaplMeter:
    """The sum of the CPU package domains (`intel-rapl:N`, which AMD's driver uses too)."""

    def __init__(self, root: Path = RAPL_ROOT) -> None:
        self.domains = sorted(p for p in root.glob("intel-rapl:*") if re.fullmatch(r"intel-rapl:\d+", p.name))
        if not self.domains:
            raise OSError(f"no RAPL package domains under {root}")
        names = [(d / "name").read_text().strip() for d in self.domains]
        self.source = "rapl:" + "+".join(names)
        self._wraps = [int((d / "max_energy_range_uj").read_text()) + 1 for d in self.domains]
        self.read()  # PermissionError here where energy_uj is root-only

    def read(self) -> list[int]:
        return [int((d / "energy_uj").read_text()) for d in self.domains]

    def joules(self, start: list[int], end: list[int]) -> float:
        return sum(counter_delta(a, b, w) for a, b, w in zip(start, end, self._wraps, strict=True)) / 1e6


def open_meter(
    device_type: str, gpu_index: str, rapl_root: Path = RAPL_ROOT
) -> tuple[EnergyMeter | None, str]:
    """The meter for this job's device, or None and why there is none."""
    try:
        if device_type == "cuda":
            return NvmlMeter(gpu_index), ""
        return RaplMeter(rapl_root), ""
    except Exception as exc:
        where = "GPU energy counter" if device_type == "cuda" else "CPU package energy (RAPL)"
        return None, f"unavailable: {where} cannot be read ({type(exc).__name__}: {exc})"


def edge_reader(meter: EnergyMeter | None):  # -> Callable[[], Edge]
    if meter is None:
        return lambda: Edge(time.time())
    return lambda: Edge(time.time(), meter.read())


def window_metrics(
    meter: EnergyMeter | None, edges: tuple[Edge, Edge], window_s: float, images: int, why_none: str
) -> tuple[dict[str, float], dict[str, str]]:
    """energy_j, energy_j_per_img, power_mean_w, img_per_j over the window; or none, with the reason."""
    start, end = edges
    if meter is None:
        return {}, {"energy_status": why_none}
    joules = meter.joules(start.counter, end.counter)
    if joules <= 0:
        reason = f"unavailable: the {meter.source} counter did not advance over the {window_s:.3f} s window"
        return {}, {"energy_status": reason, "energy_source": meter.source}
    metrics = {
        "energy_j": joules,
        "energy_j_per_img": joules / images,
        "power_mean_w": joules / window_s,
        "img_per_j": images / joules,
    }
    return metrics, {"energy_status": "measured", "energy_source": meter.source}


def nameplate_efficiency(
    gpu: GpuSpec, meter: EnergyMeter | None, throughput_img_s: float
) -> tuple[dict, dict]:
    """Images/s per nameplate watt, as the study computes it: the preset's rated power, else NVML's
    enforced power limit for the detected card (gpu=auto). Logged beside the measured img_per_j."""
    if gpu.nameplate_w:
        watts, source = gpu.nameplate_w, f"preset {gpu.name}"
    elif isinstance(meter, NvmlMeter) and meter.identity.power_limit_w:
        watts, source = meter.identity.power_limit_w, "nvml enforced power limit"
    else:
        return {}, {"nameplate_source": "none: no preset and no NVML power limit (CPU or no NVML)"}
    return {"nameplate_w": watts, "img_per_s_per_nameplate_w": throughput_img_s / watts}, {
        "nameplate_source": source
    }
