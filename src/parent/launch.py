"""One fresh child process per job, watched from the Hydra process: wait with the job's timeout, kill the
child's whole process group when it runs over (the child ends its group itself if the launcher dies first),
and turn what the progress file holds (`src/shared/progress.py`) or, when no status line came, the exit code
and the tail of the child's log, into exactly one `JobResult`.

The child is forked by this process's template (`src/child/template.py`: torch, the job's model libraries
and its backend's `ahead` modules imported once, no GPU touched) or, with `child_start=fresh` or when the
template cannot fork, started as `python -m src.child.worker JOB_DIR LAUNCHER_PID`. Either way it runs the
same code in a process, session and process group of its own; the run's tag `child_start` says which.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from src import PROJECT_ROOT
from src.parent.template_client import (
    Forked,
    TemplateError,
    child_environment,
    job_imports,
)
from src.shared.errors import Status
from src.shared.progress import CHILD_LOG, PROGRESS, SPEC, read_progress
from src.shared.results import JOB, JobResult
from src.shared.spec import JobSpec

KILL_GRACE_S = 5.0
LOG_TAIL_CHARS = 3000


def run_in_child(
    spec: JobSpec,
    job_dir: Path,
    heartbeat: Callable[[str, float], None] | None = None,
    every_s: float = float("inf"),  # the heartbeat's period (`progress_every_s`); none unless given
    start: str = "fresh",
) -> JobResult:
    """Run one job in a child process of its own; never raises for anything the child does.
    `heartbeat(phase, seconds in it)` is called every `every_s` seconds while the child runs. `start`:
    forked by the template, or a fresh interpreter (`START_MODES`)."""
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / SPEC).write_text(spec.to_json(), encoding="utf-8")
    progress = job_dir / PROGRESS
    progress.unlink(missing_ok=True)
    timeout = spec.measure.timeout_s
    oom_kills_before = oom_kill_count()
    started = time.monotonic()
    proc, how = _start(spec, job_dir, start, started + timeout)
    try:
        code = _wait(proc, progress, started + timeout, heartbeat, every_s)
        timed_out = False
        _kill_group(proc)  # anything it left running (worker processes, ...) goes with it
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        code, timed_out = proc.returncode, True
    except BaseException:  # Ctrl-C in the sweep: take the child down with us
        _kill_group(proc)
        raise
    wall = time.monotonic() - started
    result, reported = read_progress(progress)
    result.exit_code, result.wall_s, result.pid = code, wall, proc.pid
    result.tags[JOB.child_start] = how
    if reported:
        if timed_out:  # it reported, then hung on the way out (e.g. in CUDA teardown)
            result.tags["child_exit"] = f"killed {timeout:g} s after start, after reporting"
    elif timed_out:
        result.status = Status.TIMEOUT
        result.reason = f"job ran past its timeout of {timeout:g} s (last phase: {result.phase or 'start'})"
    elif code == -signal.SIGKILL and _rose(oom_kills_before, oom_kill_count()):
        result.status = Status.OOM
        result.reason = (
            f"the kernel's out-of-memory killer ended the child in phase '{result.phase or 'start'}'"
        )
    else:
        result.status = Status.FAILED
        result.reason = f"child process {describe_exit(code)} in phase '{result.phase or 'start'}'"
        tail = log_tail(job_dir / CHILD_LOG)
        if tail:
            result.reason += f"; end of its output:\n{tail}"
    return result


def _start(spec: JobSpec, job_dir: Path, start: str, deadline: float) -> tuple[Child, str]:
    """The job's child, and how it was started (the `child_start` tag)."""
    how = "fresh"
    if start == "template":
        try:
            return Forked.start(
                job_dir, job_imports([(spec.model.name, spec.backend.name)]), deadline
            ), "template"
        except TemplateError as exc:
            how = f"fresh (the template could not fork it: {exc})"
    with (job_dir / CHILD_LOG).open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "src.child.worker", str(job_dir), str(os.getpid())],
            cwd=PROJECT_ROOT,
            env=child_environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a timeout kills everything it started
        )
    return proc, how


Child = subprocess.Popen | Forked


def _wait(
    proc: Child,
    progress: Path,
    deadline: float,
    heartbeat: Callable[[str, float], None] | None,
    every_s: float,
) -> int:
    """The child's exit code; TimeoutExpired past the deadline (monotonic clock)."""
    phase, since, told = "", time.monotonic(), time.monotonic()
    while True:
        step = max(0.0, min(1.0, deadline - time.monotonic()))
        try:
            return proc.wait(timeout=step)
        except subprocess.TimeoutExpired:
            now = time.monotonic()
            if now >= deadline:
                raise
            if heartbeat is None:
                continue
            current = read_progress(progress)[0].phase  # the phase the child entered last
            if current != phase:
                phase, since = current, now
            if now - told >= every_s:
                told = now
                heartbeat(phase, now - since)


def _kill_group(proc: Child) -> None:
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


def oom_kill_count() -> int | None:
    """The kernel's count of out-of-memory kills (all cgroups), or None where it cannot be read."""
    try:
        for line in Path("/proc/vmstat").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _rose(before: int | None, after: int | None) -> bool:
    return before is not None and after is not None and after > before


def describe_exit(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (possibly the kernel's out-of-memory killer)" if -code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {code} without reporting a result"


def log_tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    if not path.exists():
        return ""
    text = path.read_bytes()[-chars:].decode("utf-8", errors="replace")
    return text.strip()
