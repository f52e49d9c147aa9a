"""NVML (nvidia-ml-py's `pynvml`): which physical GPU a job's CUDA index is, and readings from it.

Imported lazily. Where NVML is missing or a query is not supported, functions return None (or raise
`NvmlUnavailable` with the reason) so the CPU path and drivers without a feature keep working.
CUDA indices map to NVML devices through CUDA_VISIBLE_DEVICES, in PCI bus order (the measuring child sets
CUDA_DEVICE_ORDER=PCI_BUS_ID, which is NVML's order).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

# NVML clock-event ("throttle") reason bits, as nvml.h names them.
CLOCK_EVENT_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


class NvmlUnavailable(Exception):
    pass


def init() -> Any:
    """The initialised pynvml module (NVML counts init/shutdown pairs, so callers may nest)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # no package, no driver, no device
        raise NvmlUnavailable(f"NVML not available ({type(exc).__name__}: {exc})") from exc
    return pynvml


@contextmanager
def session() -> Iterator[Any]:
    nv = init()
    try:
        yield nv
    finally:
        nv.nvmlShutdown()


def visible_indices(nv: Any) -> list[int]:
    """NVML indices of the GPUs CUDA can see, in CUDA's order (CUDA_VISIBLE_DEVICES, PCI bus order)."""
    count = nv.nvmlDeviceGetCount()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return list(range(count))
    uuids = [_text(nv.nvmlDeviceGetUUID(nv.nvmlDeviceGetHandleByIndex(i))) for i in range(count)]
    found: list[int] = []
    for item in (part.strip() for part in listed.split(",")):
        if item.isdigit() and int(item) < count:
            found.append(int(item))
        elif item.startswith("GPU-") and (hits := [i for i, u in enumerate(uuids) if u.startswith(item)]):
            found.append(hits[0])
        else:  # CUDA stops at the first entry it cannot use
            break
    return found


@dataclass(frozen=True)
class GpuIdentity:
    nvml_index: int
    uuid: str
    name: str
    memory_mib: int
    power_limit_w: float | None  # NVML's enforced power limit


def identify(nv: Any, position: int | None) -> GpuIdentity | None:
    """The NVML device at CUDA index `position` (`GpuConfig.position`), or None (the CPU, or no such GPU)."""
    if position is None:
        return None
    visible = visible_indices(nv)
    if position >= len(visible):
        return None
    index = visible[position]
    handle = nv.nvmlDeviceGetHandleByIndex(index)
    try:
        limit = nv.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000
    except nv.NVMLError:
        limit = None
    return GpuIdentity(
        nvml_index=index,
        uuid=_text(nv.nvmlDeviceGetUUID(handle)),
        name=_text(nv.nvmlDeviceGetName(handle)),
        memory_mib=nv.nvmlDeviceGetMemoryInfo(handle).total // 2**20,
        power_limit_w=limit,
    )


def total_energy_mj(nv: Any, handle: Any) -> int:
    """NVML's total-energy counter (mJ since the driver loaded; Volta and newer)."""
    try:
        return int(nv.nvmlDeviceGetTotalEnergyConsumption(handle))
    except nv.NVMLError as exc:
        raise NvmlUnavailable(f"nvmlDeviceGetTotalEnergyConsumption: {exc}") from exc


def power_w(nv: Any, handle: Any) -> tuple[float, str]:
    """Instant board power where the driver has it, else NVML's (about one-second) average."""
    try:
        (field,) = nv.nvmlDeviceGetFieldValues(handle, [nv.NVML_FI_DEV_POWER_INSTANT])
        if field.nvmlReturn == nv.NVML_SUCCESS:
            return field.value.uiVal / 1000, "instant"
    except (nv.NVMLError, AttributeError):
        pass
    return nv.nvmlDeviceGetPowerUsage(handle) / 1000, "average"


def reading(nv: Any, handle: Any) -> dict[str, Any]:
    """One sample of everything the trace records."""
    watts, source = power_w(nv, handle)
    util = nv.nvmlDeviceGetUtilizationRates(handle)
    return {
        "power_w": watts,
        "power_source": source,
        "gpu_util_pct": float(util.gpu),
        "mem_util_pct": float(util.memory),
        "sm_clock_mhz": float(nv.nvmlDeviceGetClockInfo(handle, nv.NVML_CLOCK_SM)),
        "mem_clock_mhz": float(nv.nvmlDeviceGetClockInfo(handle, nv.NVML_CLOCK_MEM)),
        "temperature_c": float(nv.nvmlDeviceGetTemperature(handle, nv.NVML_TEMPERATURE_GPU)),
        "mem_used_mib": nv.nvmlDeviceGetMemoryInfo(handle).used / 2**20,
        "clock_events": clock_events(nv, handle),
        "pids": processes(nv, handle),
    }


def clock_events(nv: Any, handle: Any) -> int:
    """The clock-event ("throttle") reason bits now set; 0 where the driver cannot say."""
    for query in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
        try:
            return int(getattr(nv, query)(handle))
        except (nv.NVMLError, AttributeError):
            continue
    return 0


def processes(nv: Any, handle: Any) -> dict[int, float]:
    """pid -> MiB for every process using the GPU (compute and graphics), where NVML can list them."""
    found: dict[int, float] = {}
    for query in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        try:
            for proc in getattr(nv, query)(handle):
                used = proc.usedGpuMemory
                found[int(proc.pid)] = used / 2**20 if isinstance(used, int) else 0.0
        except (nv.NVMLError, AttributeError):
            continue
    return found


def clock_event_names(mask: int) -> list[str]:
    return [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
