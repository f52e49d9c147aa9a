"""Hydra callback (named in conf/config.yaml; runs in the Hydra process): refuse bad input before anything
runs, and group a sweep's runs under one parent run.

- `on_run_start` / `on_multirun_start` validate every job of the invocation (`src/parent/sweep.py`) before
  Hydra creates an output folder or MLflow sees anything. Bad input exits with status 2 and one message
  listing each problem and what is allowed.
- `on_multirun_start` then creates the MLflow store and experiment once (SQLite table creation is not safe
  from several processes at once) and the sweep's parent run, unless `mlflow run` already made one.
- `on_multirun_end` concludes the sweep's run (`src/parent/conclude.py`), prints its results read back from
  MLflow, and ends the parent run; where results wait on disk (the server could not be reached) it says
  how many and the `src.upload` command, which concludes and ends the run once they are in. A sweep
  stopped early (Ctrl-C, SIGTERM) ends on the way out: job runs left RUNNING (a parallel launcher's workers
  are killed with it) as failed, interrupted; then its own parent run as KILLED.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from src.parent import answers, budget, conclude, follow, offline, template_client, tracking
from src.parent.sweep import (
    check_surroundings,
    note_pending,
    note_statuses,
    pending_line,
    refuse,
    summary_table,
    sweep_configs,
    validate_or_exit,
)
from src.parent.tracking import PARENT_ENV, PARENT_FILE
from src.report import MAX_P99_TAG
from src.shared.envinfo import host_tags
from src.shared.results import JOB

log = logging.getLogger(__name__)
LOCAL_LAUNCHERS = ("BasicLauncher", "JoblibLauncher")
BASIC_LAUNCHER = "BasicLauncher"  # runs the jobs in this process


def sweep_name() -> str:
    """`sweep-<date>-<time>-<ms>`: two sweeps started in the same second get different names."""
    now = time.time()
    return f"sweep-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}-{int(now * 1000) % 1000:03d}"


class BenchCallback(Callback):
    def __init__(self) -> None:
        self._own_parent: str | None = None
        self._parent: str | None = None  # until the sweep ends normally
        self._client: Any = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        validate_or_exit([([], config)], single=True)
        check_surroundings(config, Path(config.hydra.run.dir))
        if config.child_start == "template":  # the job runs in this process: its imports start now
            template_client.warm_template([(config.model.name, config.backend.name)])
        exp_id = self._open_store(config)
        project = os.environ.get(PARENT_ENV)
        if project and self._client.get_run(project).info.experiment_id != exp_id:
            # `mlflow run` put its project run in another experiment: the job goes to the configured one
            os.environ.pop(PARENT_ENV)
            tracking.log_all(self._client, project, tags={"bench_experiment_id": exp_id})

    def _open_store(self, config: DictConfig) -> str:
        """The store's client and the configured experiment's id; runs that processes of this host left
        RUNNING and that no longer exist (`kill -9`) are ended first."""
        self._client = tracking.open_client(tracking.tracking_uri(config.tracking.uri))
        exp_id = tracking.experiment_id(self._client, config.tracking.experiment)
        tracking.end_orphaned_runs(self._client, exp_id, host_tags()["host"])
        return exp_id

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Resolved once, before any job is composed: each job's config copies this config's resolver
        # cache, so `${now:...}` in the folder's name is this moment for every job, whatever launcher
        # composes it (else each job's folder would be named when the job starts).
        sweep_dir = Path(str(config.hydra.sweep.dir))
        launcher = str(config.hydra.launcher.get("_target_"))
        basic = BASIC_LAUNCHER in launcher
        if basic and config.child_start == "template":  # torch's import overlaps the checks below
            template_client.warm_template()
        composed = sweep_configs(config)
        specs = validate_or_exit(composed) if composed else None  # None: another sweeper's grid
        steps = any(not isinstance(c, Exception) and c.max_batch.step is not None for _, c in composed)
        if steps and not basic:
            refuse(
                {
                    "+experiment=max_batch runs each configuration's steps one after another (each reads "
                    f"the ones before it); allowed: the basic launcher, not {launcher.split('.')[-1]}": []
                },
                jobs=1,
            )
        numbers = list(specs) if specs is not None else None
        check_surroundings(config, sweep_dir)
        if numbers and basic:
            # the jobs run in this process, one after another: its template imports their libraries now
            jobs = [composed[n][1] for n in numbers]
            template_client.warm_template(
                [(cfg.model.name, cfg.backend.name) for cfg in jobs if cfg.child_start == "template"]
            )
        exp_id = self._open_store(config)
        tags = {
            JOB.kind: "sweep",
            "sweep_overrides": " ".join(config.hydra.overrides.task),
            "sweep_dir": str(sweep_dir.resolve()),
            "host": host_tags()["host"],
            JOB.pid: str(os.getpid()),
        }
        if config.report.max_p99_ms is not None:  # the sweep's reports apply its latency budget
            tags[MAX_P99_TAG] = str(config.report.max_p99_ms)
        project = os.environ.get(PARENT_ENV)  # `mlflow run`'s project run, which `mlflow run` ends
        if project and self._client.get_run(project).info.experiment_id == exp_id:
            parent = project  # in the configured experiment: the project run is the sweep's parent
            tracking.log_all(self._client, parent, tags=tags)
        else:  # a sweep run of our own, in the configured experiment (linked from the project run)
            if project:
                tags["mlflow_project_run"] = project
            parent = tracking.start_run(self._client, exp_id, sweep_name(), None, tags)
            self._own_parent = parent
            if project:
                tracking.log_all(self._client, project, tags={"sweep_run_id": parent})
        # jobs that die with this process (the basic launcher's, joblib's workers); a cluster's keep running
        local = any(name in launcher for name in LOCAL_LAUNCHERS)
        self._parent = parent if local else None
        atexit.register(self._stopped)
        os.environ[PARENT_ENV] = parent
        rows = None
        if specs and config.search.budget_s:  # a search: its budget is shared by the study rows
            rows = [budget.row_of(s.model.name, s.batch_size) for s in specs.values()]
        follow.write_sweep(sweep_dir, numbers, rows)
        total = len(numbers) if numbers is not None else None
        (sweep_dir / PARENT_FILE).write_text(parent)
        if total:
            tracking.log_all(self._client, parent, metrics={"jobs_total": total, "jobs_done": 0})
        log.info(
            "MLflow: %s jobs go under parent run %s at %s", total or "the", parent, self._client.tracking_uri
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._parent = None  # every job ended by itself
        parent = os.environ.get(PARENT_ENV)
        if not parent or self._client is None:
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        report_out = None
        if config.report.at_end:
            report_out = Path(config.report.out or sweep_dir / "report")
        try:
            self._summarise(parent, report_out)
            concluded = True
        except Exception as exc:  # the tracking server went away: the jobs' results are kept on disk
            log.warning("could not read the sweep back from MLflow (%s: %s)", type(exc).__name__, exc)
            concluded = False
        waiting = offline.pending(sweep_dir)
        if waiting or not concluded:  # concluded again, and ended, by the upload once those are in
            offline.save_parent(sweep_dir, self._client.tracking_uri, parent, "FINISHED", report_out)
            self._own_parent = None  # ended by the upload, not as KILLED on the way out
            note_pending(len(waiting) or 1)  # at least the sweep's own run waits
            print(pending_line(len(waiting), sweep_dir), file=sys.stderr)

    def _summarise(self, parent: str, report_out: Path | None) -> None:
        client = self._client
        from src import report

        done = conclude.conclude(client, parent, report_out, report.make)
        note_statuses(done.counts, replace=True)  # every job of the sweep, wherever its launcher ran it
        print(summary_table(done.runs, done.linked), file=sys.stderr)
        exp_id, uri = done.exp_id, client.tracking_uri
        lines = [
            f"sweep {done.name} ({parent}): {len(done.runs)} jobs, "
            + ", ".join(f"{n} {status}" for status, n in sorted(done.counts.items())),
            f"  in the MLflow UI: {answers.view_link(uri, exp_id, done.view_keys[0])}{answers.ui_hint(uri)}",
            *(
                f"  {m} only: {answers.view_link(uri, exp_id, k)}"
                for m, k in zip(done.models, done.view_keys[1:], strict=True)
            ),
        ]
        if done.report:
            lines.append(
                f"  report: {done.report / 'report.md'} (also logged to the sweep's run: report/report.html)"
            )
        print("\n".join(lines), file=sys.stderr)
        self._end_parent("FINISHED")

    def _stopped(self) -> None:
        """At exit, for a sweep that never reached on_multirun_end. A SLURM sweep's jobs run on and end
        their runs themselves."""
        if self._client is not None and self._parent is not None:
            try:
                closed = tracking.close_interrupted(self._client, self._parent)
                if closed:
                    log.warning("sweep stopped: %d running job run(s) ended as failed (interrupted)", closed)
            except Exception as exc:  # the tracking server is gone: those runs stay RUNNING there
                log.warning("could not close the stopped sweep's job runs (%s: %s)", type(exc).__name__, exc)
        self._end_parent("KILLED")

    def _end_parent(self, status: str) -> None:
        if self._own_parent and self._client is not None:
            self._client.set_terminated(self._own_parent, status)
            self._own_parent = None
