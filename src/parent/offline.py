"""The offline queue, in the Hydra process: results that could not reach the tracking server are kept on
disk until `python -m src.upload` sends them (`src/upload.py` is that command).

When logging a finished job fails (the server is down or unreachable, after MLflow's own retries:
MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR), the job's folder keeps its artifacts
and `meta/pending.json`: the tracking URI, the run's id, the whole result and its metric series. Uploading
logs them to that run, adds its speed-up and description as a job logged live gets them, ends it with the
job's status, then renames the file `uploaded.json`. A job that could not even create its run (the server
was down when it started) is measured all the same; its record holds what the run needs (experiment,
parent, name, tags, params) and the run is created on upload. A sweep that left results on disk keeps
`parent_pending.json` in its folder: once its jobs are in, the sweep's run is concluded again (its counts,
speed-ups, description and report) and ended.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from src.parent import answers, conclude, tracking
from src.parent.tracking import NewRun
from src.shared.results import JobResult

log = logging.getLogger(__name__)

PENDING = "pending.json"
PARENT_PENDING = "parent_pending.json"  # a sweep's parent run, to be concluded once its jobs are uploaded


def save(
    meta: Path,
    uri: str,
    run_id: str | None,
    result: JobResult,
    dirs: list[Path],
    steps: list,
    new_run: NewRun | None = None,
) -> Path:
    record = {
        "tracking_uri": uri,
        "run_id": run_id,
        "new_run": asdict(new_run) if new_run else None,
        "result": result.to_record(),
        "artifact_dirs": [str(d) for d in dirs],
        "steps": [list(s) for s in steps],
    }
    path = meta / PENDING
    path.write_text(json.dumps(record, indent=1), encoding="utf-8")
    return path


def pending(folder: Path) -> list[Path]:
    """The job results under `folder` that wait to be uploaded."""
    return sorted(folder.rglob(f"meta/{PENDING}")) if folder.is_dir() else []


def upload(path: Path, uri: str | None = None) -> str:
    """Log one pending job to its run, describe it and end the run; returns the run id."""
    record = json.loads(path.read_text(encoding="utf-8"))
    result = JobResult.from_record(record["result"])
    client = tracking.open_client(uri or record["tracking_uri"])
    dirs = [Path(d) for d in record["artifact_dirs"]]
    steps = [tuple(s) for s in record["steps"]]
    run_id = record["run_id"]
    if run_id is None:  # the server was down when the job started: create its run now, once
        run_id = tracking.create_job_run(client, NewRun(**record["new_run"]))
        record["run_id"] = run_id
        path.write_text(json.dumps(record, indent=1), encoding="utf-8")
    tracking.finish_job_run(client, run_id, result, dirs, steps)
    run = client.get_run(run_id)  # its experiment, and its params as created
    params = {**run.data.params, **result.params}
    annotate = answers.annotate
    annotate(client, run_id, run.info.experiment_id, params, result.run_tags(), result.run_metrics())
    path.rename(path.with_name("uploaded.json"))
    return run_id


def save_parent(sweep_dir: Path, uri: str, run_id: str, status: str, report_out: Path | None) -> None:
    """The sweep's run, to be concluded (`report_out`: where its report goes; None: no report) and ended
    with `status` once its jobs are uploaded."""
    out = str(report_out) if report_out else None
    record = {"tracking_uri": uri, "run_id": run_id, "status": status, "report_out": out}
    (sweep_dir / PARENT_PENDING).write_text(json.dumps(record), encoding="utf-8")


def end_parent(path: Path, make_report: conclude.MakeReport, uri: str | None = None) -> str:
    """Conclude the sweep's run over every job now logged (`make_report`: `src.report.make`), and end it."""
    record = json.loads(path.read_text(encoding="utf-8"))
    client = tracking.open_client(uri or record["tracking_uri"])
    out = record.get("report_out")
    conclude.conclude(client, record["run_id"], Path(out) if out else None, make_report)
    client.set_terminated(record["run_id"], record["status"])
    path.rename(path.with_name("parent_uploaded.json"))
    return record["run_id"]
