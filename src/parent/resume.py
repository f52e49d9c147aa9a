"""Resumable sweeps, in the Hydra process: what makes two jobs the same measurement (`config_key`), and a
job already measured found and linked to instead of measured again."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from src.parent import tracking
from src.parent.device import all_gpus, identify
from src.shared import nvml
from src.shared.envinfo import cpu_model, library_versions
from src.shared.errors import Status
from src.shared.results import JOB, LINK, JobResult
from src.shared.spec import JobSpec

log = logging.getLogger(__name__)


def config_key(spec: JobSpec, gpu: nvml.GpuIdentity | None = None) -> str:
    """What makes two jobs the same measurement: the whole job (model, variant, shape, backend and its
    options, precision, layout, batch size, measurement settings), the card it runs on and the library
    versions. `gpu`: the card the job got (gpu=any), else the one it asks for."""
    gpu = gpu or identify(spec)
    device = {"gpu": gpu.name if gpu else None, "cpu": cpu_model()}
    text = json.dumps(
        {"job": spec.key_dict(), "device": device, "versions": library_versions()}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def candidate_keys(spec: JobSpec) -> list[str]:
    """`gpu=any`: the job's key on each card it could get (the CPU where there is none)."""
    gpus = all_gpus()
    if not gpus:
        return [config_key(spec.with_gpu(spec.gpu.claimed(None)))]
    return [config_key(spec.with_gpu(spec.gpu.claimed(i)), gpu) for i, gpu in enumerate(gpus)]


def finished_run(client: Any, exp_id: str | None, label: str, key: str, force: bool) -> str | None:
    """The id of a finished `ok` run with this config key (None: measure it; always None with force);
    an unreachable tracking server means: measure (the result waits on disk)."""
    if force or exp_id is None:
        return None
    try:
        run = tracking.finished_ok(client, exp_id, key)
    except Exception as exc:
        log.warning("could not look for an identical finished run (%s: %s)", type(exc).__name__, exc)
        return None
    if run is not None:  # resumable sweeps: force=true measures it again
        log.info("%s: skipped, identical to finished run %s (force=true re-runs it)", label, run.info.run_id)
    return run.info.run_id if run else None


def skipped(done: str, key: str) -> JobResult:
    """A job measured already: its run links to the run that holds its figures (`measured_in`)."""
    reason = f"measured already in run {done} (force=true measures it again)"
    tags = {JOB.kind: LINK, JOB.measured_in: done, JOB.config_key: key}
    return JobResult(Status.SKIPPED, reason=reason, tags=tags)
