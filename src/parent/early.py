"""What the Hydra process decides without a measuring child: a job whose backend is unavailable (its
package cannot be found, no CUDA device) or unsupported by the backend's own rules (`Backend.precheck`) is
recorded in well under a second, with no process started, no torch imported and no device lock taken.
Anything that needs a running model, or a device the parent cannot be sure of, is left to the child."""

from __future__ import annotations

import os

from src.backends import BACKENDS
from src.models import MODELS
from src.shared import nvml
from src.shared.envinfo import torch_build
from src.shared.errors import Status, Unavailable, Unsupported
from src.shared.registry import load_plugins
from src.shared.results import JOB, JobResult
from src.shared.spec import JobSpec

# Present wherever an NVIDIA driver is loaded, even in a container without NVML (compute capability only)
DRIVER_NODE = "/dev/nvidiactl"


def device_type(spec: JobSpec) -> str | None:
    """ "cuda" or "cpu" as the child would resolve it, or None when the parent cannot tell (a GPU index
    that NVML does not list: the child says why, with its own message)."""
    gpu = spec.gpu
    if gpu.index == "cpu":
        return "cpu"
    count = visible_gpus()
    if count is None:
        return None  # a driver without NVML: only CUDA itself can say
    if count == 0:
        return "cpu" if gpu.cpu_fallback or gpu.is_any else None
    if gpu.position is not None and gpu.position >= count:
        return None
    return "cuda"


def visible_gpus() -> int | None:
    """How many GPUs CUDA can see here (NVML, honouring CUDA_VISIBLE_DEVICES); None when only CUDA itself
    could tell (a driver without NVML)."""
    try:
        with nvml.session() as nv:
            return len(nvml.visible_indices(nv))
    except nvml.NvmlUnavailable:
        return None if os.path.exists(DRIVER_NODE) else 0


def refusal(spec: JobSpec) -> str | None:
    """Why a single run cannot be run at all, as bad input: a GPU index this host does not have, or a
    device its backend declares it cannot run on (`precheck`). Inside a sweep both are results instead
    (`unavailable`, `unsupported`)."""
    position = spec.gpu.position
    count = visible_gpus() if spec.gpu.index.isdigit() else None
    if position is not None and count is not None and position >= count:
        have = f"indices 0-{count - 1}" if count > 1 else "index 0" if count else "none"
        return (
            f"gpu.index={position}: this host has {count} GPU(s) that CUDA can see ({have}); "
            "allowed: gpu=auto, gpu=any, gpu=cpu" + (", or one of those indices" if count else "")
        )
    decided = decide(spec)
    if decided is not None and decided.status is Status.UNSUPPORTED:
        return f"{decided.reason}; allowed: another backend, or a device it can run on"
    return None


def decide(spec: JobSpec) -> JobResult | None:
    """The job's `unavailable` or `unsupported` result when `precheck` settles it here, else None."""
    kind = device_type(spec)
    if kind is None or spec.gpu.match:  # a card preset is checked against torch's name of the card
        return None
    load_plugins(spec.plugins)
    backend = BACKENDS.get(spec.backend.name)
    try:
        backend.precheck(spec, kind)
        return None
    except Unavailable as exc:
        result = JobResult(Status.UNAVAILABLE, reason=str(exc))
    except Unsupported as exc:
        result = JobResult(Status.UNSUPPORTED, reason=str(exc))
    result.phase = "setup"
    result.tags.update(device_tags(spec, kind))
    result.tags["backend_version"] = backend.version()
    result.tags[JOB.task] = MODELS.get(spec.model.name).task
    result.params[JOB.device] = result.tags["device"]
    return result


def device_tags(spec: JobSpec, kind: str) -> dict[str, str]:
    """The device tags the child would log (`envinfo.device_tags`), from NVML and torch's version file.
    cuDNN's version needs torch imported: it is left out here."""
    build = torch_build()
    if kind == "cpu":
        return {"device": "cpu", "torch_version": build["torch_version"], JOB.gpu_name: "none (CPU)"}
    device = "cuda" if spec.gpu.is_any else f"cuda:{spec.gpu.position}"
    tags = {"device": device, **build}
    try:
        with nvml.session() as nv:
            gpu = nvml.identify(nv, spec.gpu.position)
            if gpu is None:  # gpu=any: the card is chosen when a job claims one
                tags[JOB.gpu_name] = "(not identified)"
                return tags
            handle = nv.nvmlDeviceGetHandleByIndex(gpu.nvml_index)
            major, minor = nv.nvmlDeviceGetCudaComputeCapability(handle)
            driver = nv.nvmlSystemGetDriverVersion()
    except nvml.NvmlUnavailable:
        tags[JOB.gpu_name] = "(not identified)"
        return tags
    tags.update(
        {
            JOB.gpu_name: gpu.name,
            "gpu_memory_mib": str(gpu.memory_mib),
            "gpu_compute_capability": f"{major}.{minor}",
            "driver_version": driver.decode() if isinstance(driver, bytes) else str(driver),
        }
    )
    return tags
