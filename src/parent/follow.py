"""A sweep a person can follow: each job's place in the sweep (`[k/N]`), the time spent and an estimate of
what is left, and the phase of a long job at least every `progress_every_s` seconds."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SWEEP_FILE = ".bench_sweep.json"  # in the sweep folder: the number of jobs and when the sweep started
JOBS_DIR = ".bench_jobs"  # in the sweep folder: a note per job as it starts and as it ends
PHASES = {
    "": "starting",
    "setup": "starting",
    "build_model": "building the model",
    "parity_reference": "computing the eager fp32 reference",
    "place_model": "placing the model",
    "import_backend": "importing the backend's libraries",
    "compile": "compiling",
    "first_call": "making the first call",
    "measure": "measuring",
    "count_flops": "counting floating-point operations",
    "profile": "profiling where the time goes",
    "export": "exporting",
    "done": "finishing",
}


def duration(seconds: float) -> str:
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


@dataclass(frozen=True)
class Position:
    k: int  # this job's number in the sweep, from 1
    n: int | None  # the sweep's jobs (None: a sweeper whose grid is not known in advance)
    started: float  # the sweep's start, unix time
    sweep_dir: Path | None = None  # where the sweep's jobs note their start and end (JOBS_DIR)
    budget_s: float | None = None  # a search's budget: what is left is at most what the budget leaves
    rows: list[str] | None = None  # the sweep's study rows, one per job (a search's budget shares them)

    def line(self, text: str, now: float | None = None, finished: bool = False) -> str:
        """`[k/N] text (elapsed 3m10s, ~5m20s left)`: what is left, from the time of the jobs done."""
        now = time.time() if now is None else now
        elapsed = now - self.started
        left_s = self._left_s(elapsed, finished)
        left = f", ~{duration(left_s)} left" if left_s is not None else ""
        return f"[{self.k}/{self.n or '?'}] {text} (elapsed {duration(elapsed)}{left})"

    def _left_s(self, elapsed: float, finished: bool) -> float | None:
        """Without the sweep's notes: the mean time of the jobs before this one. With them: the mean
        time of the jobs that were measured (a job skipped as already measured took no time), times the
        jobs not yet ended, shared by the jobs running at once (a parallel launcher's)."""
        if not self.n:
            return None
        if self.sweep_dir is None:
            done = self.k if finished else self.k - 1
            return elapsed / done * (self.n - done) if done and self.n > done else None
        notes = [n for p in sorted((self.sweep_dir / JOBS_DIR).glob("*.json")) if (n := _read_note(p))]
        ended = [n for n in notes if "wall_s" in n]
        measured = [n["wall_s"] for n in ended if n.get("measured")]
        to_go = self.n - len(ended)
        if not measured or to_go <= 0:
            return None
        at_once = max(1, len(notes) - len(ended))
        left = sum(measured) / len(measured) * to_go / at_once
        if self.budget_s:  # a search stops at its budget, whatever its jobs would take
            left = min(left, max(0.0, self.budget_s - sum(n["wall_s"] for n in ended)) / at_once)
        return left

    def note(self, wall_s: float | None = None, measured: bool = False) -> None:
        """The job started (no `wall_s`) or ended, in the sweep's folder, for every job's estimate."""
        if self.sweep_dir is None:
            return
        folder = self.sweep_dir / JOBS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        info = {"started": True} if wall_s is None else {"wall_s": wall_s, "measured": measured}
        part = folder / f".{self.k}.json.part"  # renamed into place: a reader never sees half a note
        part.write_text(json.dumps(info))
        part.replace(folder / f"{self.k}.json")


def _read_note(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # removed meanwhile
        return None


def write_sweep(sweep_dir: Path, jobs: list[int] | None, rows: list[str] | None = None) -> None:
    """`jobs`: the Hydra job numbers that are jobs (None: not known in advance); `rows`: each job's study
    row (a search's budget is shared by them: src/parent/budget.py)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    total = len(jobs) if jobs is not None else None
    info = {"total": total, "jobs": jobs, "started": time.time(), "rows": rows}
    (sweep_dir / SWEEP_FILE).write_text(json.dumps(info))


def position(sweep_dir: Path | None, job_num: int | None, budget_s: float | None = None) -> Position:
    """A single run is [1/1]; a sweep's job reads the sweep's file (absent: its own start, N unknown)."""
    if sweep_dir is None or job_num is None:
        return Position(1, 1, time.time())
    try:
        info = json.loads((sweep_dir / SWEEP_FILE).read_text())
        jobs = info.get("jobs")
        k = jobs.index(job_num) + 1 if jobs and job_num in jobs else job_num + 1
        started = float(info["started"])
        return Position(k, info.get("total"), started, sweep_dir, budget_s, info.get("rows"))
    except (OSError, ValueError, KeyError):
        return Position(job_num + 1, None, time.time())


def heartbeat(where: Position, label: str) -> Callable[[str, float], None]:
    """What the launcher calls while the child runs: the phase and how long it has been in it."""

    def report(phase: str, in_phase_s: float) -> None:
        log.info(where.line(f"{label}: {PHASES.get(phase, phase)} for {duration(in_phase_s)}"))

    return report


def count_done(client: Any, parent: str) -> None:
    """`jobs_done` on the sweep's parent run: its job runs that have ended, whatever launcher ran them."""
    from src.parent import tracking

    try:
        done = sum(r.info.status != "RUNNING" for r in tracking.children(client, parent))
        client.log_metric(parent, "jobs_done", done)
    except Exception as exc:  # the tracking server went away: the sweep goes on
        log.warning("could not count the sweep's finished jobs (%s: %s)", type(exc).__name__, exc)


def single_run_end(client: Any, run_id: str, status: str) -> None:
    """A single run ends as a sweep does: its name and id, its status and where to look at it."""
    from src.parent import answers

    if not run_id:
        return
    try:
        uri = client.tracking_uri
        run = client.get_run(run_id)
        exp_id = run.info.experiment_id
        answers.set_up_views(client, exp_id, [run.data.params.get("model", "")])
        note = run.data.tags.get(answers.NOTE, status)
        print(
            f"run {run.info.run_name} ({run_id}): {note}\n"
            f"  in the MLflow UI: {answers.run_link(uri, exp_id, run_id)}{answers.ui_hint(uri)}\n"
            f"  compared with the experiment's other runs: "
            f"{answers.view_link(uri, exp_id, answers.view_key())}",
            file=sys.stderr,
        )
    except Exception as exc:
        log.warning("could not read run %s back (%s: %s)", run_id, type(exc).__name__, exc)
