"""Energy over the timed window, from a hardware counter read at the window's synchronised edges.

GPU: NVML's total-energy counter (mJ). CPU: RAPL package counters (uJ, wrapping at `max_energy_range_uj`)
where `/sys/class/powercap` is readable. Where neither can be read, there are no energy metrics and the tag
`energy_status` says why: never a zero, never a guess. A counter that did not advance over the window (a
window shorter than its update period) is reported the same way.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from src.shared.results import EnergyWindow, Nameplate

if TYPE_CHECKING:
    from src.shared.spec import GpuConfig

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

    def __init__(self, position: int | None) -> None:
        from src.shared import nvml

        self._nvml = nvml
        self._nv = nvml.init()  # shut down with the process: the meter lives as long as the job
        identity = nvml.identify(self._nv, position)
        if identity is None:
            raise nvml.NvmlUnavailable(f"NVML sees no GPU at CUDA index {position}")
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
    device_type: str, position: int | None, rapl_root: Path = RAPL_ROOT
) -> tuple[EnergyMeter | None, str]:
    """The meter for this job's device, or None and why there is none."""
    try:
        if device_type == "cuda":
            return NvmlMeter(position), ""
        return RaplMeter(rapl_root), ""
    except Exception as exc:
        where = "GPU energy counter" if device_type == "cuda" else "CPU package energy (RAPL)"
        return None, f"unavailable: {where} cannot be read ({type(exc).__name__}: {exc})"


def edge_reader(meter: EnergyMeter | None):  # -> Callable[[], Edge]
    if meter is None:
        return lambda: Edge(time.time())
    return lambda: Edge(time.time(), meter.read())


def energy_window(
    meter: EnergyMeter | None, edges: tuple[Edge, Edge], window_s: float, images: int, why_none: str
) -> EnergyWindow:
    """The window's energy from the counter at its edges; without a counter (or one that did not advance),
    the reason."""
    start, end = edges
    window = EnergyWindow(images, window_s, start.t_unix, end.t_unix, status=why_none)
    if meter is None:
        return window
    joules = meter.joules(start.counter, end.counter)
    if joules <= 0:
        reason = f"unavailable: the {meter.source} counter did not advance over the {window_s:.3f} s window"
        return replace(window, status=reason, source=meter.source)
    return replace(window, joules=joules, status="measured", source=meter.source)


def window_metrics(
    meter: EnergyMeter | None, edges: tuple[Edge, Edge], window_s: float, images: int, why_none: str
) -> tuple[dict[str, float], dict[str, str]]:
    """energy_j, energy_j_per_img, power_mean_w, img_per_j over the window; or none, with the reason."""
    window = energy_window(meter, edges, window_s, images, why_none)
    energy = {k: v for k, v in window.metrics().items() if not k.startswith("window_")}
    return energy, window.tags()


def nameplate(gpu: GpuConfig, meter: EnergyMeter | None, throughput_img_s: float) -> Nameplate:
    """Images/s per nameplate watt, as the study computes it: the preset's rated power, else NVML's
    enforced power limit for the detected card (gpu=auto). Logged beside the measured img_per_j."""
    if gpu.nameplate_w:
        return Nameplate(gpu.nameplate_w, f"preset {gpu.name}", throughput_img_s)
    if isinstance(meter, NvmlMeter) and meter.identity.power_limit_w:
        return Nameplate(meter.identity.power_limit_w, "nvml enforced power limit", throughput_img_s)
    return Nameplate(None, "none: no preset and no NVML power limit (CPU or no NVML)")


def nameplate_efficiency(
    gpu: GpuConfig, meter: EnergyMeter | None, throughput_img_s: float
) -> tuple[dict, dict]:
    plate = nameplate(gpu, meter, throughput_img_s)
    return plate.metrics(), plate.tags()
