"""Job statuses and the exceptions that map onto them."""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    """What became of a job. Every job ends with exactly one of these."""

    OK = "ok"
    OOM = "oom"  # the batch did not fit in device (or host) memory: a result, as in the study's tables
    TIMEOUT = "timeout"  # the job ran past its per-job timeout and was killed
    FAILED = "failed"  # an exception, or the child process died (signal or non-zero exit)
    UNSUPPORTED = "unsupported"  # this backend cannot run this model/device combination
    UNAVAILABLE = "unavailable"  # a library or device the job needs is not there
    SKIPPED = "skipped"  # an identical job has a finished `ok` run already: this run links to it

    def __str__(self) -> str:
        return self.value


class ConfigError(ValueError):
    """Bad input, refused before any model is built. The message names the allowed values."""


class Unsupported(Exception):
    """The backend cannot handle this model, precision or device (a result, not a bug)."""


class Unavailable(Exception):
    """Something the job needs is missing: a package, a CUDA device, a GPU index."""


# oneDNN's message when it cannot allocate a primitive's memory (it names no cause): an out-of-memory only
# where the job runs under a host memory limit (measure.memory_limit_gib), which makes it fail that way
ONEDNN_NO_PRIMITIVE = "could not create a primitive"


def is_out_of_memory(exc: BaseException, host_limited: bool = False) -> bool:
    """True for CUDA and host allocation failures, however the framework phrased them (`host_limited`:
    the job ran under a host memory limit)."""
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    if name == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError / torch.OutOfMemoryError
        return True
    text = str(exc)
    markers = (
        "CUDA out of memory",
        "out of memory",
        "DefaultCPUAllocator: not enough memory",
        "DefaultCPUAllocator: can't allocate memory",
        "CUBLAS_STATUS_ALLOC_FAILED",
        "CUDNN_STATUS_ALLOC_FAILED",
    )
    return any(m in text for m in markers) or (host_limited and ONEDNN_NO_PRIMITIVE in text)
