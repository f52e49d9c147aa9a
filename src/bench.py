"""Hydra entry point: `python -m src.bench [-m] [overrides]`. Thin: config -> spec -> runner -> MLflow."""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from src import PROJECT_ROOT
from src.parent import config as _config
from src.parent import follow, max_batch, offline
from src.parent.runner import JobTracking, run_job, without_child
from src.parent.sweep import exit_code, note_pending, note_statuses, pending_line, refuse
from src.parent.tracking import PARENT_ENV, parent_run_id
from src.shared.errors import ConfigError, Status
from src.shared.results import LATENCY, PARITY, JobResult

log = logging.getLogger(__name__)

# `mlflow run` exports MLFLOW_RUN_ID for its project run. Left in place, the first job's MLflow call would
# adopt that run and end it; instead it becomes the parent of every job of this invocation.
if os.environ.get("MLFLOW_RUN_ID"):
    os.environ[PARENT_ENV] = os.environ.pop("MLFLOW_RUN_ID")


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM (`timeout`, `kill`, SLURM's time limit) ends the sweep like Ctrl-C: the running job's run
    is closed as `failed: interrupted`, the sweep's parent run as KILLED, no child is left behind."""
    raise KeyboardInterrupt(f"signal {signum}")


@hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="config")
def main(cfg: DictConfig) -> dict[str, Any]:
    hc = HydraConfig.get()
    sweep_dir = Path(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None
    if sweep_dir is not None and (_config.beyond_study_rows(cfg) or _config.beyond_max_batch_steps(cfg)):
        _drop_folder(Path(hc.runtime.output_dir))  # not a cell of the study: no job, no run, no folder
        return {"status": "absent"}
    try:  # checked by the callback for the basic sweeper already: the same check, the same answer
        job = _config.to_job(cfg)
    except ConfigError as exc:
        refuse({str(exc): [" ".join(hc.overrides.task) or "(defaults)"]}, jobs=1)
    # a folder of its own, even if another sweep or run was given the same output folder: the child's spec
    # and progress files are never shared
    job_dir = Path(tempfile.mkdtemp(prefix="job-", dir=hc.runtime.output_dir))
    total = job.settings.search.budget_s
    where = follow.position(sweep_dir, hc.job.num if sweep_dir is not None else None, total)
    parent = parent_run_id(sweep_dir)
    start = time.monotonic()
    session = JobTracking.open(job, parent)  # the job's one tracking session
    if sweep_dir is not None and job.settings.max_batch.step is not None:
        placed, why = max_batch.place(session.client, parent, job)
        if placed is None:  # the search of this configuration is over: no job, no run, no folder
            what = job.spec.label.rsplit("-bs", 1)[0]
            log.info(where.line(f"{what}: no step {job.settings.max_batch.step}: {why}"))
            where.note(0.0)
            max_batch.one_job_fewer(session.client, parent)
            _drop_folder(Path(hc.runtime.output_dir), job_dir)
            return {"status": "absent"}
        job = placed
    decided, job = without_child(job, parent, sweep_dir is not None, session, where.rows)
    if decided is not None:
        decided.wall_s = time.monotonic() - start  # the job's whole cost: deciding (`job_wall_s`)
    result, run_id = run_job(job, job_dir, parent, decided, where, session)
    note_statuses([result.status.value])
    if sweep_dir is not None and parent:
        follow.count_done(session.client, parent)
    elif waiting := offline.pending(job_dir):
        note_pending(len(waiting))
        print(pending_line(len(waiting), Path(hc.runtime.output_dir)), file=sys.stderr)
    else:
        follow.single_run_end(session.client, run_id, result.status.value)
    return outcome(result)


def outcome(result: JobResult) -> dict[str, Any]:
    """What the sweeper learns from a job (`return_value`): its status, and its images/s where it is a
    candidate for the row's best (ok, parity not failed): the search's order reads it."""
    img_s = result.metrics.get(LATENCY.throughput_img_s)
    usable = result.status is Status.OK and result.tags.get(PARITY.parity) != "fail"
    return {"status": result.status.value, "img_s": img_s if usable else None}


def _drop_folder(path: Path, job_dir: Path | None = None) -> None:
    """The folder Hydra made for a combination that is not a job, if it holds only Hydra's own files
    (and `job_dir`, this job's empty folder)."""
    import shutil

    if job_dir is not None:
        job_dir.rmdir()
    if path.is_dir() and {p.name for p in path.iterdir()} <= {".hydra", "bench.log"}:
        shutil.rmtree(path, ignore_errors=True)


def run() -> int:
    """`main`, with the exit status a script can trust: 0 when every job ended with a result, 3 when any
    ended failed or timeout, 4 when results wait on disk for `src.upload`, 2 for refused input; on Ctrl-C
    or SIGTERM one line, and 128 + the signal."""
    try:
        main()
    except KeyboardInterrupt as exc:
        signum = signal.SIGTERM if "signal" in str(exc) else signal.SIGINT
        print(
            f"interrupted by {signal.Signals(signum).name}: the running job's run ended failed "
            "(interrupted), the sweep's run KILLED; run the same command again to measure what is missing",
            file=sys.stderr,
        )
        return 128 + signum
    return exit_code()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminated)
    sys.argv = _config.shorthands(sys.argv)
    sys.exit(run())
