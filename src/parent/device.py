"""The job's device, in the Hydra process: which card a job gets (NVML) and the file lock that makes it the
only measuring job there until its result is logged."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from src.shared import nvml
from src.shared.locks import any_device_lock, device_lock
from src.shared.spec import JobSpec


@contextmanager
def claim_device(spec: JobSpec) -> Iterator[tuple[JobSpec, nvml.GpuIdentity | None, float]]:
    """The job's device, locked for the job: its own (`auto`, `cpu`, an index), or with `gpu=any` the
    first GPU no other job is measuring on (the job's spec then names that GPU's index)."""
    if spec.gpu.is_any:
        gpus = all_gpus()
        if not gpus:
            spec = spec.with_gpu(spec.gpu.claimed(None))
        elif spec.telemetry.lock:
            with any_device_lock([g.uuid for g in gpus]) as (position, waited):
                yield spec.with_gpu(spec.gpu.claimed(position)), gpus[position], waited
            return
        else:
            spec = spec.with_gpu(spec.gpu.claimed(0))
    gpu = identify(spec)
    key = gpu.uuid if gpu else ("cpu" if spec.gpu.cpu_fallback else f"gpu-{spec.gpu.index}")
    with device_lock(key) if spec.telemetry.lock else nullcontext(0.0) as waited:
        yield spec, gpu, waited


def all_gpus() -> list[nvml.GpuIdentity]:
    try:
        with nvml.session() as nv:
            return [g for i in range(len(nvml.visible_indices(nv))) if (g := nvml.identify(nv, i))]
    except nvml.NvmlUnavailable:
        return []


def identify(spec: JobSpec) -> nvml.GpuIdentity | None:
    """The job's card (None: the CPU, no NVML, or `gpu=any` not yet claimed)."""
    try:
        with nvml.session() as nv:
            return nvml.identify(nv, spec.gpu.position)
    except nvml.NvmlUnavailable:
        return None
