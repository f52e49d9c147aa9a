"""One job, as the Hydra process sees it: decide what needs no child, claim the device, open the job's
MLflow run, measure in a child, log what came back (or keep it on disk for `src.upload` when the tracking
server cannot be reached). One tracking client per job (`JobTracking`)."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from src import PROJECT_ROOT
from src.parent import answers, budget, early, follow, offline, telemetry, tracking
from src.parent.config import Job, unsupported_combination
from src.parent.device import claim_device, identify
from src.parent.measuring import META, judge_stability, measure
from src.parent.resume import candidate_keys, config_key, finished_run, skipped
from src.shared.envinfo import git_info, host_tags, library_versions
from src.shared.errors import Status
from src.shared.progress import ARTIFACTS, CHILD_LOG, PROGRESS, SPEC, read_progress
from src.shared.results import ENERGY, JOB, LATENCY, LINK, STABLE, JobResult

log = logging.getLogger(__name__)


@dataclass
class JobTracking:
    """The job's one tracking session: the client, and the experiment its run goes to (None where the
    server could not be reached when the job started)."""

    client: Any
    exp_id: str | None

    @classmethod
    def open(cls, job: Job, parent: str | None) -> JobTracking:
        client = tracking.open_client(tracking.tracking_uri(job.settings.tracking.uri))
        try:
            exp_id = tracking.experiment_id(client, job.settings.tracking.experiment, parent)
        except Exception:  # unreachable: measured anyway (`_record` says so), the run created on upload
            exp_id = None
        return cls(client, exp_id)


def run_job(
    job: Job,
    job_dir: Path,
    parent: str | None,
    decided: JobResult | None = None,
    where: follow.Position | None = None,
    session: JobTracking | None = None,
) -> tuple[JobResult, str]:
    """Measure one job in a child process and leave exactly one MLflow run for it, whatever happens.
    `decided`: the job's result without a child (a combination its backend declares it cannot run, an
    unavailable backend, a search's spent budget): recorded as it is, with no device lock. A job with an
    identical finished `ok` run (looked for before waiting for the device and again once it is held) is
    not measured: its run is a link to that one (`skipped`). `where`: the job's place in its sweep."""
    where = where or follow.Position(1, 1, time.time())
    session = session or JobTracking.open(job, parent)
    spec, force = job.spec, job.settings.force
    record = partial(_record, session, job, job_dir, parent)
    keys = [config_key(spec)] if not spec.gpu.is_any else candidate_keys(spec)
    # a search's job past its budget still links to an identical finished run: a resumed search keeps it
    if decided is None or decided.status is Status.SKIPPED:
        for key in keys:  # resumable sweeps: an identical job already finished ok (force=true re-measures)
            if done := finished_run(session.client, session.exp_id, spec.label, key, force):
                produce = partial(lambda r, _: (r, None), skipped(done, key))
                return record(key, produce, where, link=True, measured=False)
    if decided is not None:
        gpu = identify(spec)
        if JOB.gpu_name not in decided.tags:
            cpu = "none (CPU)" if spec.gpu.cpu_fallback else "(not identified)"
            decided.tags[JOB.gpu_name] = gpu.name if gpu else cpu
        return record(config_key(spec, gpu), lambda _: (decided, None), where, measured=False)

    def claim_and_measure(held: ExitStack) -> tuple[JobResult, telemetry.Trace | None]:
        # the device stays claimed until the result is logged: an identical job waiting for it then finds it
        claimed, gpu, waited = held.enter_context(claim_device(spec))
        key = config_key(claimed, gpu)  # with gpu=any, the card the job got, not the host's first
        # asked again now that the device is ours: an identical job may have finished while we waited
        if done := finished_run(session.client, session.exp_id, spec.label, key, force):
            return skipped(done, key), None
        beat = follow.heartbeat(where, spec.label)
        settings = job.settings
        result, trace = measure(claimed, gpu, job_dir, beat, settings.progress_every_s, settings.child_start)
        if job.budget_cut_s is not None and result.status is Status.TIMEOUT:  # its row's share ran out
            total = settings.search.budget_s or 0.0
            result.status = Status.SKIPPED
            result.reason = budget.stopped(result.wall_s, result.phase, job.budget_cut_s, total)
        judge_stability(result, claimed)  # from the child's windows and the trace read here
        result.metrics[JOB.lock_wait_s] = waited
        result.tags[JOB.config_key] = key
        return result, trace

    return record(None if spec.gpu.is_any else keys[0], claim_and_measure, where)


def without_child(
    job: Job,
    parent: str | None,
    sweep: bool,
    session: JobTracking | None = None,
    rows: list[str] | None = None,
) -> tuple[JobResult | None, Job]:
    """The job's result when no measuring child is needed to know it (None: measure it), in this order:
    a combination its backend declares it cannot run, its row's spent share of a search's budget (sweeps
    only: such a job is not tried at all), a backend that `precheck` rules out here. And the job as it
    will run: in a search, its timeout cut to what is left of its row's share (src/parent/budget.py).
    `rows`: the sweep's rows, one per job."""
    if refused := unsupported_combination(job.spec):
        return JobResult(Status.UNSUPPORTED, reason=refused), job
    total = job.settings.search.budget_s
    if sweep and total and parent:
        client = (session or JobTracking.open(job, parent)).client
        allowed = budget.allowance(client, total, job.spec, parent, rows)
        if allowed.refused:
            return JobResult(Status.SKIPPED, reason=allowed.refused), job
        if allowed.left_s is not None and allowed.left_s < job.spec.measure.timeout_s:
            measure = replace(job.spec.measure, timeout_s=allowed.left_s)
            job = replace(job, spec=replace(job.spec, measure=measure), budget_cut_s=allowed.left_s)
    return early.decide(job.spec), job


def _record(
    session: JobTracking,
    job: Job,
    job_dir: Path,
    parent: str | None,
    key: str | None,
    produce: Callable[[ExitStack], tuple[JobResult, telemetry.Trace | None]],
    where: follow.Position,
    link: bool = False,
    measured: bool = True,
) -> tuple[JobResult, str]:
    """Open the job's run, produce its result, and log it (or keep it on disk for `src.upload`).
    `key`: the job's config key, or None when the result will carry it (`gpu=any`). `link`: the run
    links to an identical finished one. `measured`: `produce` starts a measuring child."""
    spec, settings = job.spec, job.settings.tracking
    tags = {
        JOB.status: "running",
        JOB.kind: LINK if link else "job",
        JOB.pid: str(os.getpid()),
        **git_info(PROJECT_ROOT),
        **host_tags(),
        **library_versions(),
    }
    if key is not None:
        tags[JOB.config_key] = key
    new_run = tracking.NewRun(
        settings.experiment, parent, settings.run_name or spec.label, tags, spec.params()
    )
    client = session.client
    run_id: str | None = None
    try:
        if session.exp_id is None:
            raise ConnectionError("the tracking server could not be reached when the job started")
        run_id = tracking.create_job_run(client, new_run, session.exp_id)
    except Exception as exc:  # the tracking server is unreachable: measure anyway, keep the result on disk
        log.warning("%s: cannot reach %s (%s); measuring anyway", spec.label, client.tracking_uri, exc)
    started = time.monotonic()
    where.note()
    if measured:
        log.info(where.line(f"{spec.label}: measuring in a child process (run {run_id or 'pending'})"))
    trace = None
    with ExitStack() as held:  # what `produce` claims (the device) is released once the result is logged
        try:
            meta = job_dir / META
            meta.mkdir(parents=True, exist_ok=True)
            (meta / "config.yaml").write_text(job.config_yaml, encoding="utf-8")
            result, trace = produce(held)
        except Exception as exc:  # the launcher failed (disk full, ...): a failed job, not a failed sweep
            result = JobResult(Status.FAILED, reason=f"could not run the job: {type(exc).__name__}: {exc}")
        except BaseException:  # interrupted (Ctrl-C): the run still ends with a status, then the sweep stops
            result = interrupted(job_dir)
            _finish(session, run_id, result, job_dir, settings.log_engine, new_run=new_run)
            raise
        _finish(session, run_id, result, job_dir, settings.log_engine, trace, new_run)
    throughput = result.metrics.get(LATENCY.throughput_img_s)
    figure = f", {throughput:.1f} img/s" if throughput is not None and result.status is Status.OK else ""
    if result.tags.get(STABLE.stable) == "false":
        figure += f" (unstable: {result.tags.get(STABLE.unstable_reason, '')})"
    why = f" ({result.reason})" if result.reason else ""
    where.note(time.monotonic() - started, measured=measured and result.status is not Status.SKIPPED)
    log.info(where.line(f"{spec.label}: {result.status.value}{figure}{why}", finished=True))
    return result, run_id or ""


def interrupted(job_dir: Path) -> JobResult:
    """A job stopped with its sweep: failed (interrupted), with what its child had reported by then (the
    device it identified, the phase it reached, the seconds it had spent), so the run names its card."""
    result, _ = read_progress(job_dir / PROGRESS)
    result.status, result.reason = Status.FAILED, tracking.INTERRUPTED
    return result


def _finish(
    session: JobTracking,
    run_id: str | None,
    result: JobResult,
    job_dir: Path,
    log_engine: bool,
    trace: telemetry.Trace | None = None,
    new_run: tracking.NewRun | None = None,
) -> None:
    """Log the result to the job's run and describe it, or keep everything for `src.upload`."""
    client = session.client
    meta = job_dir / META
    meta.mkdir(parents=True, exist_ok=True)
    if result.reason:
        (meta / "reason.txt").write_text(result.reason + "\n", encoding="utf-8")
    for name in (CHILD_LOG, SPEC):
        if (job_dir / name).exists():
            shutil.copy(job_dir / name, meta / name)
    engine = job_dir / ARTIFACTS / "engine"
    if not log_engine:
        shutil.rmtree(engine, ignore_errors=True)
    edges = result.metrics.get(ENERGY.window_start_unix), result.metrics.get(ENERGY.window_end_unix)
    steps = telemetry.step_metrics(trace, *edges)
    dirs = [job_dir / ARTIFACTS, meta]
    try:
        if run_id is None:
            raise ConnectionError("the run could not be created when the job started")
        tracking.finish_job_run(client, run_id, result, dirs, steps)
    except Exception as exc:  # the tracking server is unreachable: keep everything for `src.upload`
        path = offline.save(meta, client.tracking_uri, run_id, result, dirs, steps, new_run)
        log.warning(
            "could not log run %s to %s (%s: %s); its result is kept in %s: upload it later with "
            "`python -m src.upload %s`",
            run_id,
            client.tracking_uri,
            type(exc).__name__,
            exc,
            path,
            job_dir.parent,
        )
        return
    shutil.rmtree(engine, ignore_errors=True)  # now in MLflow: do not keep a second copy
    try:  # its speed-up over eager fp32 and its one-line description, from what this process holds
        params = {**(new_run.params if new_run else {}), **result.params}
        answers.annotate(client, run_id, session.exp_id, params, result.run_tags(), result.run_metrics())
    except Exception as exc:
        log.warning("could not annotate run %s (%s: %s)", run_id, type(exc).__name__, exc)
