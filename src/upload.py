"""The offline queue: results that could not reach the tracking server, kept on disk (by the Hydra
process) until `python -m src.upload` sends them.

When logging a finished job fails (the server is down or unreachable, after MLflow's own retries:
MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR), the job's folder keeps its artifacts
and `meta/pending.json`: the tracking URI, the run's id, the whole result and its metric series. Uploading
logs them to that run and ends it with the job's status, then renames the file `uploaded.json`. A job that
could not even create its run (the server was down when it started) is measured all the same; its record
holds what the run needs (experiment, parent, name, tags, params) and the run is created on upload.

    python -m src.upload multirun/2026-11-30/12-00-00-052611  # every pending job under these folders
    python -m src.upload outputs --uri http://mlflow.internal:5000   # to another address of the server
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from src.parent import tracking
from src.parent.tracking import NewRun
from src.shared.results import JobResult

PENDING = "pending.json"
PARENT_PENDING = "parent_pending.json"  # a sweep's parent run, to be ended once its jobs are uploaded


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


def upload(path: Path, uri: str | None = None) -> str:
    """Log one pending job to its run and end the run; returns the run id."""
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
    path.rename(path.with_name("uploaded.json"))
    return run_id


def save_parent(sweep_dir: Path, uri: str, run_id: str, status: str) -> None:
    record = {"tracking_uri": uri, "run_id": run_id, "status": status}
    (sweep_dir / PARENT_PENDING).write_text(json.dumps(record), encoding="utf-8")


def end_parent(path: Path, uri: str | None = None) -> str:
    record = json.loads(path.read_text(encoding="utf-8"))
    tracking.open_client(uri or record["tracking_uri"]).set_terminated(record["run_id"], record["status"])
    path.rename(path.with_name("parent_uploaded.json"))
    return record["run_id"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="*", default=["outputs", "multirun"], help="searched recursively")
    ap.add_argument("--uri", default=None, help="tracking URI to use instead of the one each job had")
    a = ap.parse_args(argv)
    found = sorted(p for folder in a.folders for p in Path(folder).rglob(f"meta/{PENDING}"))
    failed = 0
    for path in found:
        try:
            print(f"uploaded {path.parent.parent}: run {upload(path, a.uri)}")
        except Exception as exc:  # still unreachable: keep it pending, try the next
            failed += 1
            print(f"still pending {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
    for path in sorted(p for folder in a.folders for p in Path(folder).rglob(PARENT_PENDING)):
        if failed:  # end a sweep's parent run only once all its jobs are in
            break
        try:
            print(f"ended sweep run {end_parent(path, a.uri)}")
        except Exception as exc:
            failed += 1
            print(f"still pending {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
    print(f"{len(found) - failed} uploaded, {failed} still pending")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
