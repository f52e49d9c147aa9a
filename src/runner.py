"""One job, as the Hydra process sees it: open its MLflow run, measure in a child, log what came back."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from src import PROJECT_ROOT, tracking
from src.envinfo import git_info, host_tags, library_versions
from src.errors import Status
from src.isolation import ARTIFACTS, CHILD_LOG, JobResult, run_in_child
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


def run_job(cfg: DictConfig, spec: JobSpec, job_dir: Path, parent: str | None) -> tuple[JobResult, str]:
    """Measure one job in a child process and leave exactly one MLflow run for it, whatever happens."""
    settings = cfg.tracking
    client = tracking.open_client(tracking.tracking_uri(settings.uri))
    exp_id = tracking.experiment_id(client, settings.experiment, parent)
    tags = {"status": "running", "kind": "job", **git_info(PROJECT_ROOT), **host_tags(), **library_versions()}
    run_id = tracking.start_run(client, exp_id, settings.run_name or spec.label, parent, tags)
    tracking.log_all(client, run_id, params=spec.params())
    log.info("%s: measuring in a child process (run %s)", spec.label, run_id)
    try:
        meta = job_dir / META
        meta.mkdir(parents=True, exist_ok=True)
        (meta / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True), encoding="utf-8")
        result = run_in_child(spec, job_dir)
    except Exception as exc:  # the launcher itself failed (disk full, ...): a failed job, not a failed sweep
        result = JobResult(Status.FAILED, reason=f"could not run the job: {type(exc).__name__}: {exc}")
    except BaseException:  # interrupted (Ctrl-C): the run still ends with a status, then the sweep stops
        result = JobResult(Status.FAILED, reason="interrupted: the sweep was stopped while this job ran")
        _finish(client, run_id, result, job_dir, settings.log_engine)
        raise
    _finish(client, run_id, result, job_dir, settings.log_engine)
    throughput = result.metrics.get("throughput_img_s")
    figure = f", {throughput:.1f} img/s" if throughput is not None and result.status is Status.OK else ""
    log.info(
        "%s: %s%s%s", spec.label, result.status.value, figure, f" ({result.reason})" if result.reason else ""
    )
    return result, run_id


def _finish(client, run_id: str, result: JobResult, job_dir: Path, log_engine: bool) -> None:
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
    tracking.finish_job_run(client, run_id, result, [job_dir / ARTIFACTS, meta])
    shutil.rmtree(engine, ignore_errors=True)  # now in MLflow: do not keep a second copy
