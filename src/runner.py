"""One job, as the Hydra process sees it: open its MLflow run, measure in a child, log what came back."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from src import PROJECT_ROOT, nvml, pending, telemetry, tracking
from src.envinfo import cpu_model, git_info, host_tags, library_versions
from src.errors import Status
from src.isolation import ARTIFACTS, CHILD_LOG, JobResult, run_in_child
from src.locks import any_device_lock, device_lock
from src.spec import JobSpec

log = logging.getLogger(__name__)

PARENT_ENV = "BENCH_PARENT_RUN_ID"  # the run that this invocation's job runs hang under
PARENT_FILE = ".mlflow_parent_run_id"  # the same, in the sweep folder, for launchers in other processes
META = "meta"


def parent_run_id(sweep_dir: Path | None) -> str | None:
    if os.environ.get(PARENT_ENV):
        return os.environ[PARENT_ENV]
    if sweep_dir is not None and (sweep_dir / PARENT_FILE).is_file():
        return (sweep_dir / PARENT_FILE).read_text().strip() or None
    return None


def config_key(spec: JobSpec) -> str:
    """What makes two jobs the same measurement: the whole job (model, variant, shape, backend and its
    options, precision, layout, batch size, measurement settings), the card it runs on and the library
    versions. The per-job timeout is left out: it changes when a job is killed, not what it measures."""
    gpu = _identify(spec.gpu.index)
    job = spec.to_dict()
    job["measure"].pop("timeout_s", None)
    device = {"gpu": gpu.name if gpu else None, "cpu": cpu_model()}
    text = json.dumps({"job": job, "device": device, "versions": library_versions()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def already_measured(cfg: DictConfig, spec: JobSpec, parent: str | None) -> tuple[str, str | None]:
    """The job's config key, and the id of a finished `ok` run with that key (None: measure it)."""
    key = config_key(spec)
    if cfg.get("force"):
        return key, None
    client = tracking.open_client(tracking.tracking_uri(cfg.tracking.uri))
    run = tracking.finished_ok(client, tracking.experiment_id(client, cfg.tracking.experiment, parent), key)
    return key, run.info.run_id if run else None


def run_job(
    cfg: DictConfig,
    spec: JobSpec,
    job_dir: Path,
    parent: str | None,
    refused: str | None = None,
    key: str | None = None,
) -> tuple[JobResult, str]:
    """Measure one job in a child process and leave exactly one MLflow run for it, whatever happens.
    `refused`: why the backend cannot run this combination; the run records it as `unsupported`."""
    settings = cfg.tracking
    uri = tracking.tracking_uri(settings.uri)
    tags = {"status": "running", "kind": "job", **git_info(PROJECT_ROOT), **host_tags(), **library_versions()}
    tags["config_key"] = key or config_key(spec)
    new_run = pending.NewRun(
        settings.experiment, parent, settings.run_name or spec.label, tags, spec.params()
    )
    client = tracking.open_client(uri)
    try:
        run_id: str | None = pending.create(client, new_run)
    except Exception as exc:  # the tracking server is unreachable: measure anyway, keep the result on disk
        log.warning("%s: cannot reach %s (%s); measuring anyway", spec.label, uri, type(exc).__name__)
        run_id = None  # created on upload (src/pending.py)
    log.info("%s: measuring in a child process (run %s)", spec.label, run_id or "pending")
    trace = None
    try:
        meta = job_dir / META
        meta.mkdir(parents=True, exist_ok=True)
        (meta / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True), encoding="utf-8")
        if refused:
            gpu = _identify(spec.gpu.index)
            result = JobResult(Status.UNSUPPORTED, reason=refused)
            cpu = spec.gpu.index in ("cpu", "auto")
            result.tags["gpu_name"] = gpu.name if gpu else "none (CPU)" if cpu else "(not identified)"
        else:
            result, trace = measure(spec, job_dir)
    except Exception as exc:  # the launcher itself failed (disk full, ...): a failed job, not a failed sweep
        result = JobResult(Status.FAILED, reason=f"could not run the job: {type(exc).__name__}: {exc}")
    except BaseException:  # interrupted (Ctrl-C): the run still ends with a status, then the sweep stops
        result = JobResult(Status.FAILED, reason=tracking.INTERRUPTED)
        _finish(client, run_id, result, job_dir, settings.log_engine, new_run=new_run)
        raise
    _finish(client, run_id, result, job_dir, settings.log_engine, trace, new_run)
    throughput = result.metrics.get("throughput_img_s")
    figure = f", {throughput:.1f} img/s" if throughput is not None and result.status is Status.OK else ""
    log.info(
        "%s: %s%s%s", spec.label, result.status.value, figure, f" ({result.reason})" if result.reason else ""
    )
    return result, run_id or ""


def measure(spec: JobSpec, job_dir: Path) -> tuple[JobResult, telemetry.Trace | None]:
    """The child, inside its device's lock, with idle power read before it and a trace sampled during it."""
    hz = spec.telemetry.sample_hz
    with claim_device(spec) as (spec, gpu, waited):
        idle = telemetry.idle_power_w(gpu.nvml_index, spec.telemetry.idle_s, hz) if gpu else None
        sampler = telemetry.Sampler(gpu.nvml_index, hz) if gpu and hz > 0 else None
        with sampler or nullcontext():
            result = run_in_child(spec, job_dir)
    result.metrics["lock_wait_s"] = waited
    m = result.metrics
    if idle is not None:
        m["idle_power_w"] = idle
        if "energy_j" in m:
            m["energy_net_j"] = m["energy_j"] - idle * m["window_s"]
            m["energy_net_j_per_img"] = m["energy_net_j"] / (m["iterations"] * spec.batch_size)
    if sampler is None:
        result.tags["trace_status"] = (
            "off (telemetry.sample_hz=0)" if gpu else "no GPU trace (CPU or no NVML)"
        )
        return result, None
    t0, t1 = m.get("window_start_unix"), m.get("window_end_unix")
    own = {os.getpid()} | ({result.pid} if result.pid else set())
    trace_metrics, trace_tags = telemetry.summarize(sampler.trace, t0, t1, own)
    result.metrics.update(trace_metrics)
    result.tags.update(trace_tags)
    (job_dir / META).mkdir(parents=True, exist_ok=True)
    telemetry.write_csv(sampler.trace, job_dir / META / "power_trace.csv", t0, t1)
    return result, sampler.trace


@contextmanager
def claim_device(spec: JobSpec) -> Iterator[tuple[JobSpec, nvml.GpuIdentity | None, float]]:
    """The job's device, locked for the job: its own (`auto`, `cpu`, an index), or with `gpu=any` the
    first GPU no other job is measuring on (the job's spec then names that GPU's index)."""
    if spec.gpu.index == "any":
        gpus = _all_gpus()
        if not gpus:
            spec = replace(spec, gpu=replace(spec.gpu, index="cpu"))
        elif spec.telemetry.lock:
            with any_device_lock([g.uuid for g in gpus]) as (position, waited):
                yield replace(spec, gpu=replace(spec.gpu, index=str(position))), gpus[position], waited
            return
        else:
            spec = replace(spec, gpu=replace(spec.gpu, index="0"))
    gpu = _identify(spec.gpu.index)
    key = gpu.uuid if gpu else ("cpu" if spec.gpu.index in ("cpu", "auto") else f"gpu-{spec.gpu.index}")
    with device_lock(key) if spec.telemetry.lock else nullcontext(0.0) as waited:
        yield spec, gpu, waited


def _all_gpus() -> list[nvml.GpuIdentity]:
    try:
        with nvml.session() as nv:
            return [g for i in range(len(nvml.visible_indices(nv))) if (g := nvml.identify(nv, str(i)))]
    except nvml.NvmlUnavailable:
        return []


def _identify(gpu_index: str) -> nvml.GpuIdentity | None:
    """The job's card; for `gpu=any` (not yet claimed) the first one, which names the host's cards."""
    gpu_index = "auto" if gpu_index == "any" else gpu_index
    try:
        with nvml.session() as nv:
            return nvml.identify(nv, gpu_index)
    except nvml.NvmlUnavailable:
        return None


def _finish(
    client,
    run_id: str | None,
    result: JobResult,
    job_dir: Path,
    log_engine: bool,
    trace: telemetry.Trace | None = None,
    new_run: pending.NewRun | None = None,
) -> None:
    meta = job_dir / META
    meta.mkdir(parents=True, exist_ok=True)
    if result.reason:
        (meta / "reason.txt").write_text(result.reason + "\n", encoding="utf-8")
    if (job_dir / CHILD_LOG).exists():
        shutil.copy(job_dir / CHILD_LOG, meta / CHILD_LOG)
    if (job_dir / "spec.json").exists():
        shutil.copy(job_dir / "spec.json", meta / "spec.json")
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
        path = pending.save(meta, client.tracking_uri, run_id, result, dirs, steps, new_run)
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
