"""MLflow: where runs go, one run per job (children of a sweep's parent run), and what each run holds.

Only the Hydra process (and the report and upload commands) talks to MLflow; the measuring child never
does, so a crash in the child cannot lose or corrupt a run. This module knows result types, not processes.
With no tracking URI configured, the store is SQLite inside the project's `mlruns/` (MLflow 3.13+ refuses
the old file store), with artifacts under `mlruns/artifacts/`.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from src import PROJECT_ROOT
from src.shared.errors import Status
from src.shared.locks import file_lock
from src.shared.results import JOB, JobResult

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "inference-bench"
PARENT_ENV = "BENCH_PARENT_RUN_ID"  # the run that this invocation's job runs hang under
KIND_TAG = "mlflow.experimentKind"  # an experiment's kind in the UI
PARENT_FILE = ".mlflow_parent_run_id"  # the same, in the sweep folder, for launchers in other processes
MAX_TAG_CHARS = 7000
# MLflow's run status for each job status: a measured OOM or an unsupported combination is a finished result.
RUN_STATUS = {
    Status.OK: "FINISHED",
    Status.OOM: "FINISHED",
    Status.UNSUPPORTED: "FINISHED",
    Status.UNAVAILABLE: "FINISHED",
    Status.SKIPPED: "FINISHED",
    Status.TIMEOUT: "FAILED",
    Status.FAILED: "FAILED",
}


def tracking_uri(configured: str | None = None) -> str:
    if configured:
        return configured
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlruns' / 'mlflow.db'}"


def is_server(uri: str) -> bool:
    """A tracking server (http/https), as opposed to a database or folder this process opens itself."""
    return uri.startswith(("http://", "https://"))


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(unquote(urlparse(uri).path)).resolve()


def load_library(uri: str) -> None:
    """Import MLflow's client and, for a SQLite store, its database layer (seconds of imports, most of
    opening a store; nothing is opened or written here)."""
    import mlflow

    if sqlite_path(uri) is not None:
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


def open_client(uri: str):  # -> mlflow.MlflowClient; imported lazily, mlflow is slow to import
    """A client on `uri`. The first use of a fresh SQLite store creates its tables, which breaks when two
    processes do it at once (alembic errors): that first use is serialised with a lock beside the file."""
    from mlflow import MlflowClient

    db = sqlite_path(uri)
    if db is None:
        return MlflowClient(tracking_uri=uri)
    with file_lock(db.with_name(db.name + ".init.lock"), f"MLflow store {db}"):
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # creates or upgrades the tables, under the lock
    return client


def experiment_id(client, name: str | None, parent_run_id: str | None = None) -> str:
    """The parent run's experiment if there is a parent, else the named one (created if missing)."""
    from mlflow.exceptions import MlflowException

    if parent_run_id:
        return client.get_run(parent_run_id).info.experiment_id
    name = name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    db = sqlite_path(client.tracking_uri)
    location = None
    if db is not None:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "experiment"
        location = (db.parent / "artifacts" / slug).as_uri()
    try:  # the UI opens such an experiment on its runs, not on a GenAI overview
        kind = {KIND_TAG: "custom_model_development"}
        return client.create_experiment(name, artifact_location=location, tags=kind)
    except MlflowException:  # created meanwhile by another process
        return client.get_experiment_by_name(name).experiment_id


def log_all(
    client,
    run_id: str,
    params: dict[str, str] | None = None,
    metrics: dict[str, float] | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    """One batch call where MLflow's limits allow (100 params/tags, 1000 entities per call)."""
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    p = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
    m = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()]
    t = [RunTag(k, str(v)[:MAX_TAG_CHARS]) for k, v in (tags or {}).items()]
    for i in range(0, max(len(p), len(t), len(m), 1), 100):
        client.log_batch(run_id, metrics=m[i : i + 100], params=p[i : i + 100], tags=t[i : i + 100])


def start_run(client, exp_id: str, name: str, parent_run_id: str | None, tags: dict[str, str]) -> str:
    all_tags = dict(tags)
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(exp_id, run_name=name, tags=all_tags)
    return run.info.run_id


@dataclass(frozen=True)
class NewRun:
    """What a job's run is created with."""

    experiment: str | None
    parent: str | None
    name: str
    tags: dict[str, str]
    params: dict[str, str]


def create_job_run(client, new: NewRun, exp_id: str | None = None) -> str:
    """Create the job's run (under its parent, in `exp_id`, else the parent's or the named experiment)
    and log its params."""
    exp_id = exp_id or experiment_id(client, new.experiment, new.parent)
    run_id = start_run(client, exp_id, new.name, new.parent, new.tags)
    log_all(client, run_id, params=new.params)
    return run_id


def parent_run_id(sweep_dir: Path | None) -> str | None:
    """The sweep's parent run: from this process's environment, or the sweep folder (other processes)."""
    if os.environ.get(PARENT_ENV):
        return os.environ[PARENT_ENV]
    if sweep_dir is not None and (sweep_dir / PARENT_FILE).is_file():
        return (sweep_dir / PARENT_FILE).read_text().strip() or None
    return None


def finish_job_run(
    client,
    run_id: str,
    result: JobResult,
    artifact_dirs: Iterable[Path],
    steps: list[tuple[str, float, int, int]] = (),
) -> None:
    log_all(client, run_id, params=result.params, metrics=result.run_metrics(), tags=result.run_tags())
    log_steps(client, run_id, steps)
    for directory in artifact_dirs:
        if directory.is_dir() and any(directory.iterdir()):
            client.log_artifacts(run_id, str(directory))
    client.set_terminated(run_id, RUN_STATUS[result.status])


def log_steps(client, run_id: str, steps: Iterable[tuple[str, float, int, int]]) -> None:
    """Metric series (key, value, timestamp ms, step), 1000 per call, so the UI draws them as curves."""
    from mlflow.entities import Metric

    metrics = [Metric(k, v, ts, step) for k, v, ts, step in steps]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])


def children(client, parent_run_id: str) -> list:
    exp_id = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs(
        [exp_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=50000
    )


INTERRUPTED = "interrupted: the sweep was stopped while this job ran"


def close_interrupted(client, parent_run_id: str) -> int:
    """End the parent's job runs still RUNNING as failed (interrupted); how many there were. A parallel
    launcher's workers are killed with a stopped sweep before their jobs can record it themselves."""
    stale = [r for r in children(client, parent_run_id) if r.info.status == "RUNNING"]
    for run in stale:
        log_all(client, run.info.run_id, tags={JOB.status: Status.FAILED.value, JOB.reason: INTERRUPTED})
        client.set_terminated(run.info.run_id, RUN_STATUS[Status.FAILED])
    return len(stale)


def end_orphaned_runs(client, exp_id: str, host: str) -> int:
    """End the runs left RUNNING by a process of this host that no longer exists (`kill -9` of a sweep):
    KILLED, with the reason. Runs of other hosts, and of processes still alive, are left alone."""
    stale = client.search_runs(
        [exp_id], filter_string=f"attributes.status = 'RUNNING' and tags.host = '{host}'", max_results=5000
    )
    ended = 0
    for run in stale:
        pid = run.data.tags.get(JOB.pid, "")
        if not pid.isdigit() or _alive(int(pid)):
            continue
        reason = (
            f"killed: the process that ran it (pid {pid} on {host}) ended without closing it; "
            "closed by a later sweep"
        )
        tags = {JOB.reason: reason}
        if run.data.tags.get(JOB.kind) == "job":
            tags[JOB.status] = Status.FAILED.value
        log_all(client, run.info.run_id, tags=tags)
        client.set_terminated(run.info.run_id, "KILLED")
        ended += 1
    if ended:
        log.warning("ended %d run(s) left RUNNING by processes of this host that no longer exist", ended)
    return ended


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def finished_ok(client, exp_id: str, config_key: str):
    """The newest finished `ok` run of this exact configuration (resumable sweeps), or None."""
    runs = client.search_runs(
        [exp_id],
        filter_string=(
            f"tags.config_key = '{config_key}' and tags.status = 'ok' and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None
