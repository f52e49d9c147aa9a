"""One job, as the Hydra process sees it: claim its device, open its MLflow run, measure in a child, log
what came back (or keep it on disk for `src.upload` when the tracking server cannot be reached)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from functools import partial
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from src import PROJECT_ROOT
from src.parent import answers, early, follow, offline, telemetry, tracking
from src.parent.config import unsupported_combination
from src.parent.launch import run_in_child
from src.shared import nvml
from src.shared.envinfo import cpu_model, git_info, host_tags, library_versions
from src.shared.errors import Status
from src.shared.locks import any_device_lock, device_lock
from src.shared.progress import ARTIFACTS, CHILD_LOG, PROGRESS, SPEC, read_progress
from src.shared.results import (
    ENERGY,
    JOB,
    LATENCY,
    LINK,
    TRACE,
    EnergyWindow,
    JobResult,
    Stability,
    cpu_probes,
)
from src.shared.spec import JobSpec

log = logging.getLogger(__name__)

META = "meta"


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


def already_measured(cfg: DictConfig, key: str, parent: str | None) -> str | None:
    """The id of a finished `ok` run with this config key (None: measure it; always None with force)."""
    if cfg.get("force"):
        return None
    client = tracking.open_client(tracking.tracking_uri(cfg.tracking.uri))
    run = tracking.finished_ok(client, tracking.experiment_id(client, cfg.tracking.experiment, parent), key)
    return run.info.run_id if run else None


def finished_run(cfg: DictConfig, spec: JobSpec, key: str, parent: str | None) -> str | None:
    """`already_measured`, logged; an unreachable tracking server means: measure (the result waits)."""
    try:
        done = already_measured(cfg, key, parent)
    except Exception as exc:
        log.warning("could not look for an identical finished run (%s: %s)", type(exc).__name__, exc)
        return None
    if done:  # resumable sweeps: force=true measures it again
        log.info("%s: skipped, identical to finished run %s (force=true re-runs it)", spec.label, done)
    return done


def run_job(
    cfg: DictConfig,
    spec: JobSpec,
    job_dir: Path,
    parent: str | None,
    decided: JobResult | None = None,
    where: follow.Position | None = None,
) -> tuple[JobResult, str]:
    """Measure one job in a child process and leave exactly one MLflow run for it, whatever happens.
    `decided`: the job's result without a child (a combination its backend declares it cannot run, an
    unavailable backend, a search's spent budget): recorded as it is, with no device lock. A job with an
    identical finished `ok` run (looked for before waiting for the device and again once it is held) is
    not measured: its run is a link to that one (`skipped`). `where`: the job's place in its sweep."""
    where = where or follow.Position(1, 1, time.time())
    if decided is not None:
        gpu = identify(spec)
        if JOB.gpu_name not in decided.tags:
            cpu = "none (CPU)" if spec.gpu.cpu_fallback else "(not identified)"
            decided.tags[JOB.gpu_name] = gpu.name if gpu else cpu
        key = config_key(spec, gpu)
        return _record(cfg, spec, job_dir, parent, key, lambda _: (decided, None), where, measured=False)
    keys = [config_key(spec)] if not spec.gpu.is_any else candidate_keys(spec)
    for key in keys:  # resumable sweeps: an identical job already finished ok (force=true re-measures)
        if done := finished_run(cfg, spec, key, parent):
            produce = partial(lambda r, _: (r, None), skipped(done, key))
            return _record(cfg, spec, job_dir, parent, key, produce, where, link=True, measured=False)

    def claim_and_measure(held: ExitStack) -> tuple[JobResult, telemetry.Trace | None]:
        # the device stays claimed until the result is logged: an identical job waiting for it then finds it
        claimed, gpu, waited = held.enter_context(claim_device(spec))
        key = config_key(claimed, gpu)  # with gpu=any, the card the job got, not the host's first
        # asked again now that the device is ours: an identical job may have finished while we waited
        if done := finished_run(cfg, claimed, key, parent):
            return skipped(done, key), None
        beat = follow.heartbeat(where, spec.label)
        every_s = cfg.get("progress_every_s", follow.PHASE_EVERY_S)
        result, trace = measure(claimed, gpu, job_dir, beat, every_s, cfg.child_start)
        judge_stability(result, claimed)  # from the child's windows and the trace read here
        result.metrics[JOB.lock_wait_s] = waited
        result.tags[JOB.config_key] = key
        return result, trace

    key = None if spec.gpu.is_any else keys[0]
    return _record(cfg, spec, job_dir, parent, key, claim_and_measure, where)


def without_child(cfg: DictConfig, spec: JobSpec, parent: str | None, sweep: bool) -> JobResult | None:
    """The job's result when no measuring child is needed to know it (None: measure it), in this order:
    a combination its backend declares it cannot run, a search's spent budget (sweeps only: such a job
    is not tried at all), a backend that `precheck` rules out here."""
    if refused := unsupported_combination(spec):
        return JobResult(Status.UNSUPPORTED, reason=refused)
    if sweep and (spent := over_budget(cfg, spec, parent)):
        return JobResult(Status.SKIPPED, reason=spent)
    return early.decide(spec)


def over_budget(cfg: DictConfig, spec: JobSpec, parent: str | None) -> str | None:
    """Why a search's job is not run: its model's jobs in this sweep used `search.budget_s` already."""
    budget = cfg.search.budget_s
    if not budget or not parent:
        return None
    try:
        client = tracking.open_client(tracking.tracking_uri(cfg.tracking.uri))
        runs = tracking.children(client, parent)
    except Exception:  # the tracking server is away: measure (the budget is a convenience)
        return None
    mine = [r for r in runs if r.data.params.get("model") == spec.model.name]
    spent = sum(r.data.metrics.get(JOB.job_wall_s, 0.0) for r in mine)
    if spent < budget:
        return None
    return (
        f"the search budget of model {spec.model.name} is spent ({spent:.0f} s used by {len(mine)} jobs, "
        f"search.budget_s={budget:g}); raise it to try this configuration"
    )


def skipped(done: str, key: str) -> JobResult:
    """A job measured already: its run links to the run that holds its figures (`measured_in`)."""
    reason = f"measured already in run {done} (force=true measures it again)"
    tags = {JOB.kind: LINK, JOB.measured_in: done, JOB.config_key: key}
    return JobResult(Status.SKIPPED, reason=reason, tags=tags)


def candidate_keys(spec: JobSpec) -> list[str]:
    """`gpu=any`: the job's key on each card it could get (the CPU where there is none)."""
    gpus = all_gpus()
    if not gpus:
        return [config_key(spec.with_gpu(spec.gpu.claimed(None)))]
    return [config_key(spec.with_gpu(spec.gpu.claimed(i)), gpu) for i, gpu in enumerate(gpus)]


def _record(
    cfg: DictConfig,
    spec: JobSpec,
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
    settings = cfg.tracking
    uri = tracking.tracking_uri(settings.uri)
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
    client = tracking.open_client(uri)
    try:
        run_id: str | None = tracking.create_job_run(client, new_run)
    except Exception as exc:  # the tracking server is unreachable: measure anyway, keep the result on disk
        log.warning("%s: cannot reach %s (%s); measuring anyway", spec.label, uri, type(exc).__name__)
        run_id = None  # created on upload (src/parent/offline.py)
    started = time.monotonic()
    where.note()
    if measured:
        log.info(where.line(f"{spec.label}: measuring in a child process (run {run_id or 'pending'})"))
    trace = None
    with ExitStack() as held:  # what `produce` claims (the device) is released once the result is logged
        try:
            meta = job_dir / META
            meta.mkdir(parents=True, exist_ok=True)
            (meta / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True), encoding="utf-8")
            result, trace = produce(held)
        except Exception as exc:  # the launcher failed (disk full, ...): a failed job, not a failed sweep
            result = JobResult(Status.FAILED, reason=f"could not run the job: {type(exc).__name__}: {exc}")
        except BaseException:  # interrupted (Ctrl-C): the run still ends with a status, then the sweep stops
            result = interrupted(job_dir)
            _finish(client, run_id, result, job_dir, settings.log_engine, new_run=new_run)
            raise
        _finish(client, run_id, result, job_dir, settings.log_engine, trace, new_run)
    throughput = result.metrics.get(LATENCY.throughput_img_s)
    figure = f", {throughput:.1f} img/s" if throughput is not None and result.status is Status.OK else ""
    if result.tags.get("stable") == "false":
        figure += f" (unstable: {result.tags.get('unstable_reason', '')})"
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


def measure(
    spec: JobSpec,
    gpu: nvml.GpuIdentity | None,
    job_dir: Path,
    heartbeat: Callable[[str, float], None],
    every_s: float,
    start: str,
) -> tuple[JobResult, telemetry.Trace | None]:
    """The child, with idle power (read before it, or reused) and a trace sampled during it (the device is
    claimed)."""
    hz = spec.telemetry.sample_hz
    idle, idle_age = (
        telemetry.idle_power(gpu.nvml_index, spec.telemetry.idle_s, hz, spec.telemetry.idle_once)
        if gpu
        else (None, None)
    )
    sampler = telemetry.Sampler(gpu.nvml_index, hz) if gpu and hz > 0 else None
    with sampler or nullcontext():
        result = run_in_child(spec, job_dir, heartbeat, every_s, start)
    window = EnergyWindow.from_logged(result.metrics, result.tags, spec.batch_size)
    if window is not None:  # the child's energy figures, with the idle power read here: net energy
        result.metrics.update(window.with_idle(idle).metrics())
    elif idle is not None:
        result.metrics[ENERGY.idle_power_w] = idle
    if idle_age is not None:
        result.metrics[ENERGY.idle_power_age_s] = idle_age
    if sampler is None:
        result.tags["trace_status"] = (
            "off (telemetry.sample_hz=0)" if gpu else "no GPU trace (CPU or no NVML)"
        )
        return result, None
    t0, t1 = (window.start_unix, window.end_unix) if window else (None, None)
    own = {os.getpid()} | ({result.pid} if result.pid else set())
    trace_metrics, trace_tags = telemetry.summarize(sampler.trace, t0, t1, own)
    result.metrics.update(trace_metrics)
    result.tags.update(trace_tags)
    (job_dir / META).mkdir(parents=True, exist_ok=True)
    telemetry.write_csv(sampler.trace, job_dir / META / "power_trace.csv", t0, t1)
    return result, sampler.trace


def judge_stability(result: JobResult, spec: JobSpec) -> None:
    """An ok run's `stable` tag, from its windows' spread, its latency CoV, the GPU's busy share and the
    host CPU's speed before and after the timed loop."""
    m = result.metrics
    if result.status is not Status.OK or LATENCY.latency_cov_pct not in m:
        return
    stability = Stability(
        spread_pct=m.get(LATENCY.throughput_spread_pct, 0.0),
        cov_pct=m[LATENCY.latency_cov_pct],
        gpu_busy_pct=m.get(TRACE.gpu_util_mean_pct),
        smoke=spec.smoke,
        cpu_probe_ms=cpu_probes(m),
    )
    result.tags.update(stability.tags())


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


def _finish(
    client,
    run_id: str | None,
    result: JobResult,
    job_dir: Path,
    log_engine: bool,
    trace: telemetry.Trace | None = None,
    new_run: tracking.NewRun | None = None,
) -> None:
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
    edges = result.metrics.get("window_start_unix"), result.metrics.get("window_end_unix")
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
    try:  # its speed-up over eager fp32 and its one-line description
        answers.annotate(client, run_id, new_run.params if new_run else {})
    except Exception as exc:
        log.warning("could not annotate run %s (%s: %s)", run_id, type(exc).__name__, exc)
