"""The largest batch that fits, in the Hydra process (`+experiment=max_batch`).

The preset sweeps `max_batch.step`; each step is a job of its own (its own process, its own run). As a step
starts, it reads the runs of the earlier steps of its configuration (same parent run, same params but the
batch size) and takes the next batch of the search (`MaxBatchConfig.next_batch`): doubling until out of
memory or the limit, then bisecting. A step after the search ended is no job (no run, no folder). The
steps of a configuration run one after another, so the preset runs on the basic launcher only.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from src.parent import tracking
from src.parent.config import Job
from src.shared.results import JOB

FITS = ("ok",)  # a step whose batch fit; a `skipped` step fits if the run it links to did
DOES_NOT_FIT = ("oom",)


def earlier_steps(client: Any, parent: str, job: Job) -> tuple[set[int], set[int], str | None]:
    """The batches of this configuration's earlier steps that fit, those that ran out of memory, and the
    reason the search cannot go on (a step that ended otherwise: failed, timeout, unsupported, ...)."""
    own = {k: v for k, v in job.spec.params().items() if k != "batch_size"}
    fits: set[int] = set()
    oom: set[int] = set()
    for run in tracking.children(client, parent):
        params, tags = run.data.params, run.data.tags
        if any(params.get(k) != v for k, v in own.items()) or "batch_size" not in params:
            continue
        batch, status = int(params["batch_size"]), tags.get(JOB.status, "unknown")
        if status in FITS or (status == "skipped" and JOB.measured_in in tags):
            fits.add(batch)
        elif status in DOES_NOT_FIT:
            oom.add(batch)
        else:
            return fits, oom, f"step at batch {batch} ended {status}: the search stops there"
    return fits, oom, None


def place(client: Any, parent: str | None, job: Job) -> tuple[Job | None, str]:
    """The job with its step's batch size, or None and why the search for its configuration is over."""
    search = job.settings.max_batch
    if parent is None:
        return None, "no sweep run to read the earlier steps from"
    try:
        fits, oom, stopped = earlier_steps(client, parent, job)
    except Exception as exc:  # the tracking server went away: the earlier steps cannot be known
        return None, f"the earlier steps could not be read ({type(exc).__name__}: {exc})"
    if stopped:
        return None, stopped
    batch, why = search.next_batch(fits, oom)
    if batch is None:
        return None, why
    return replace(job, spec=replace(job.spec, batch_size=batch)), ""


def one_job_fewer(client: Any, parent: str | None) -> None:
    """The sweep's `jobs_total` less the step that is no job (the steps run one after another)."""
    if parent is None:
        return
    try:
        total = client.get_run(parent).data.metrics.get("jobs_total")
        if total:
            client.log_metric(parent, "jobs_total", total - 1)
    except Exception:  # the tracking server went away: the count is a convenience
        pass
